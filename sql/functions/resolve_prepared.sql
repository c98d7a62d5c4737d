CREATE OR REPLACE FUNCTION {{ schema }}.resolve_prepared(
    min_age interval DEFAULT '5 seconds',
    dry_run boolean DEFAULT FALSE
)
RETURNS TABLE (
    target text, gid text, local_xid xid8, decision text, sqlstate text, message text
)
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    prefix text := {{ schema }}._gid_prefix();
    t text;
    link text;
    listed text[];
    aged boolean[];
    logged text[];
    still text[];
    here text;
    elsewhere boolean;
    status text;
    to_commit boolean;
    fail_state text;
    fail_message text;
    started timestamptz;
    finished integer := 0;
    in_doubt integer := 0;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    IF min_age IS NULL OR dry_run IS NULL THEN
        RAISE EXCEPTION 'min_age and dry_run must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF min_age < interval '0' THEN
        RAISE EXCEPTION 'min_age must not be negative' USING ERRCODE = '22023';
    END IF;
    -- Each decision reads the local transaction's status, then its commit record, in two
    -- statements: under READ COMMITTED the second sees every commit the first saw. A
    -- transaction snapshot could show a committed transaction without its record.
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'resolve_prepared must run at READ COMMITTED, not %',
                pg_catalog.upper(pg_catalog.current_setting('transaction_isolation'))
            USING ERRCODE = '25000',
                  HINT = 'Call it in a transaction of its own, or outside a transaction block.';
    END IF;
    -- A role under the log's row security sees only its own commit records, and would take
    -- every other role's committed transaction for one that rolled back.
    IF pg_catalog.row_security_active(({{ schema_literal }} || '.prepared_xacts')::pg_catalog.regclass) THEN
        RAISE EXCEPTION 'resolve_prepared must run as the owner of %.prepared_xacts or a superuser', {{ schema_literal }}
            USING ERRCODE = '42501',
                  DETAIL = 'Row security hides other roles'' commit records from this role.',
                  HINT = 'Run it as the role that installed the toolkit, e.g. pgdblink-safe resolve '
                         'with that role''s connection.';
    END IF;
    IF NOT pg_catalog.pg_try_advisory_xact_lock(
            pg_catalog.hashtextextended({{ guc_hot }} || 'resolver', 0)) THEN
        RAISE EXCEPTION 'another resolve_prepared is running in this database'
            USING ERRCODE = '55P03',
                  HINT = 'One resolver at a time: wait for it to finish.';
    END IF;
    FOR t IN
        SELECT x.target FROM {{ schema }}.two_phase_targets AS x
        UNION
        SELECT p.target FROM {{ schema }}.prepared_xacts AS p
        ORDER BY 1
    LOOP
        link := 'resolver:' || pg_catalog.left(pg_catalog.md5(t), 16);
        -- Citus' order: the remote's GIDs, then for each the local status and commit
        -- record, then the remote's GIDs again. A GID prepared after the first reading is
        -- left for the next run; a commit record is removed only when its GID was gone in a
        -- reading taken after the record was seen.
        BEGIN
            PERFORM {{ schema }}.ensure_dblink_conn(link, t, max_attempts => 1);
            started := pg_catalog.clock_timestamp();
            PERFORM {{ dblink }}.dblink_send_query(link, pg_catalog.format(
                'SELECT gid, pg_catalog.now() - prepared >= %L::interval '
                'FROM pg_catalog.pg_prepared_xacts '
                'WHERE database = pg_catalog.current_database() '
                'AND pg_catalog.starts_with(gid, %L) ORDER BY prepared',
                min_age, prefix));
            PERFORM {{ schema }}._await(link, {{ remote_commit_timeout_s }}, started);
            SELECT COALESCE(pg_catalog.array_agg(r.g), '{}'), COALESCE(pg_catalog.array_agg(r.o), '{}')
            INTO listed, aged
            FROM {{ dblink }}.dblink_get_result(link) AS r(g text, o boolean);
            PERFORM 1 FROM {{ dblink }}.dblink_get_result(link, false) AS r(x text);
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT,
                                    err_detail = PG_EXCEPTION_DETAIL;
            BEGIN
                PERFORM {{ schema }}.safe_dblink_disconnect(link);
            EXCEPTION WHEN OTHERS THEN
                NULL;
            END;
            in_doubt := in_doubt + 1;
            -- The cause (refused, timed out, authentication) is in the detail's first line.
            RETURN QUERY SELECT {{ schema }}._mask_target(t), NULL::text, NULL::xid8,
                'unreachable'::text, err_state,
                {{ schema }}._scrub(pg_catalog.concat_ws(': ', err_message,
                    NULLIF(pg_catalog.split_part(COALESCE(err_detail, ''), E'\n', 1), '')), t);
            CONTINUE;
        END;
        FOR i IN 1 .. pg_catalog.cardinality(listed) LOOP
            gid := listed[i];
            target := {{ schema }}._mask_target(t);
            sqlstate := NULL;
            message := NULL;
            BEGIN
                local_xid := pg_catalog.split_part(gid, ':', 4)::xid8;
            EXCEPTION WHEN OTHERS THEN
                local_xid := NULL;
            END;
            IF local_xid IS NULL OR NOT aged[i] THEN
                decision := CASE WHEN local_xid IS NULL THEN 'unknown' ELSE 'too young' END;
                in_doubt := in_doubt + 1;
                RETURN NEXT;
                CONTINUE;
            END IF;
            IF pg_catalog.split_part(listed[i], ':', 5)
               <> (EXTRACT(epoch FROM pg_catalog.pg_postmaster_start_time()) * 1000000)::bigint::text THEN
                -- Prepared before this server last started: its transaction has ended, and
                -- the id may since belong to another one.
                status := 'ended';
            ELSE
                BEGIN
                    status := pg_catalog.pg_xact_status(local_xid);
                EXCEPTION WHEN OTHERS THEN
                    status := 'ended';
                END;
            END IF;
            IF status = 'in progress' THEN
                decision := 'in progress';
                in_doubt := in_doubt + 1;
                RETURN NEXT;
                CONTINUE;
            END IF;
            -- Committed only with its commit record: after a crash the same id may belong to
            -- another transaction, but never with this GID, which names the server start.
            to_commit := EXISTS (
                SELECT 1 FROM {{ schema }}.prepared_xacts AS p
                WHERE p.gid = listed[i] AND p.local_xid = resolve_prepared.local_xid);
            IF dry_run THEN
                decision := CASE WHEN to_commit THEN 'would commit' ELSE 'would roll back' END;
                in_doubt := in_doubt + 1;
                RETURN NEXT;
                CONTINUE;
            END IF;
            fail_state := NULL;
            BEGIN
                PERFORM {{ schema }}._status(link,
                    CASE WHEN to_commit THEN 'COMMIT PREPARED ' ELSE 'ROLLBACK PREPARED ' END
                        || pg_catalog.quote_literal(listed[i]),
                    {{ remote_commit_timeout_s }});
            EXCEPTION WHEN OTHERS OR query_canceled THEN
                GET STACKED DIAGNOSTICS fail_state = RETURNED_SQLSTATE, fail_message = MESSAGE_TEXT;
            END;
            IF fail_state IS NULL THEN
                decision := CASE WHEN to_commit THEN 'committed' ELSE 'rolled back' END;
                finished := finished + 1;
            ELSIF fail_state = '42704' THEN
                -- Finished meanwhile by the session that prepared it.
                decision := 'already finished';
            ELSE
                decision := 'failed';
                sqlstate := fail_state;
                message := {{ schema }}._scrub(fail_message, t);
                in_doubt := in_doubt + 1;
            END IF;
            RETURN NEXT;
        END LOOP;
        -- Commit records seen now, then the remote's GIDs again: a record whose GID is gone
        -- in that later reading belongs to a finished transaction.
        SELECT COALESCE(pg_catalog.array_agg(p.gid), '{}') INTO logged
        FROM {{ schema }}.prepared_xacts AS p WHERE p.target = t;
        BEGIN
            started := pg_catalog.clock_timestamp();
            PERFORM {{ dblink }}.dblink_send_query(link, pg_catalog.format(
                'SELECT pg_catalog.concat((SELECT c.system_identifier '
                'FROM pg_catalog.pg_control_system() AS c), ''/'', pg_catalog.current_database()), '
                'ARRAY(SELECT gid FROM pg_catalog.pg_prepared_xacts '
                'WHERE database = pg_catalog.current_database() '
                'AND pg_catalog.starts_with(gid, %L))', prefix));
            PERFORM {{ schema }}._await(link, {{ remote_commit_timeout_s }}, started);
            SELECT r.p, r.g INTO here, still
            FROM {{ dblink }}.dblink_get_result(link) AS r(p text, g text[]);
            PERFORM 1 FROM {{ dblink }}.dblink_get_result(link, false) AS r(x text);
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            still := NULL;
        END;
        IF still IS NOT NULL THEN
            -- Only where the record's transaction was prepared: a target that leads to
            -- another server or database now says nothing about its GIDs.
            FOR gid, local_xid, elsewhere IN
                SELECT p.gid, p.local_xid, p.participant <> here
                FROM {{ schema }}.prepared_xacts AS p
                WHERE p.gid = ANY (logged) AND NOT p.gid = ANY (still)
                ORDER BY p.gid
            LOOP
                target := {{ schema }}._mask_target(t);
                sqlstate := NULL;
                message := NULL;
                IF elsewhere THEN
                    decision := 'elsewhere';
                    sqlstate := '55000';
                    message := pg_catalog.format('prepared on %s; the target now leads to %s',
                        (SELECT p.participant FROM {{ schema }}.prepared_xacts AS p
                         WHERE p.gid = resolve_prepared.gid), here);
                    in_doubt := in_doubt + 1;
                ELSIF dry_run THEN
                    decision := 'would forget';
                ELSE
                    DELETE FROM {{ schema }}.prepared_xacts AS p WHERE p.gid = resolve_prepared.gid;
                    decision := 'forgotten';
                END IF;
                RETURN NEXT;
            END LOOP;
        END IF;
        PERFORM {{ schema }}.safe_dblink_disconnect(link);
    END LOOP;
    IF NOT dry_run THEN
        INSERT INTO {{ schema }}.resolver_runs (ran_at, ran_by, finished, in_doubt)
        VALUES (pg_catalog.now(), CURRENT_USER, finished, in_doubt)
        ON CONFLICT (only_row) DO UPDATE
        SET ran_at = excluded.ran_at, ran_by = excluded.ran_by,
            finished = excluded.finished, in_doubt = excluded.in_doubt;
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}.resolve_prepared(interval, boolean) IS
'pgdblink_safe: finishes two-phase transactions whose session did not: COMMIT PREPARED where '
'the local transaction committed with its record, ROLLBACK PREPARED otherwise';
