CREATE OR REPLACE FUNCTION {{ schema }}._two_phase_prepare()
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    links text[];
    gids text[] := '{}'::text[];
    -- Per connection: NULL not sent, 'sent', 'prepared', or the SQLSTATE it failed with.
    outcome text[] := '{}'::text[];
    local_xid xid8;
    started timestamptz;
    tag text;
    row_xmin text;
    n integer;
    failed integer;
    fail_message text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    -- Phase 1, at local pre-commit: every two-phase connection of this transaction whose
    -- remote transaction is not yet prepared, all at once.
    SELECT pg_catalog.array_agg(t.link ORDER BY t.link) INTO links
    FROM {{ tx_table }} AS t
    WHERE t.remote_tx
      AND ({{ schema }}._meta(t.link) ->> 'two_phase')::boolean
      AND ({{ schema }}._meta(t.link) ->> 'prepared') IS NULL;
    n := COALESCE(pg_catalog.cardinality(links), 0);
    IF n = 0 THEN
        RETURN;
    END IF;
    local_xid := pg_catalog.pg_current_xact_id();
    -- A commit that is acknowledged must survive a crash: its remotes are committed in
    -- phase 2 on the strength of it. synchronous_commit = off would leave a window where
    -- the local commit is lost and the remotes are committed.
    PERFORM pg_catalog.set_config('synchronous_commit', 'on', true);
    -- The commit record of each remote transaction, before its PREPARE: visible once this
    -- transaction commits, and then only.
    FOR i IN 1 .. n LOOP
        gids := gids || {{ schema }}._gid(links[i], local_xid);
        INSERT INTO {{ schema }}.prepared_xacts (gid, target, conn_name, participant, local_xid)
        VALUES (gids[i], pg_catalog.current_setting({{ guc_target }} || {{ schema }}._key(links[i])),
                pg_catalog.substr(links[i], 4),
                COALESCE({{ schema }}._meta(links[i]) ->> 'participant', ''), local_xid)
        RETURNING xmin::text INTO row_xmin;
        -- Written by a subtransaction (SET CONSTRAINTS ALL IMMEDIATE after a SAVEPOINT or
        -- in an exception block), the record could be rolled back while the transaction
        -- commits: the session would then commit the remote work and the resolver roll it
        -- back. Nothing is prepared; at the real commit the hook runs again.
        IF row_xmin <> (local_xid::text::bigint & 4294967295)::text THEN
            RAISE EXCEPTION 'dblink connection "%" cannot be prepared inside a subtransaction',
                    pg_catalog.substr(links[i], 4)
                USING ERRCODE = '0A000',
                      DETAIL = 'SET CONSTRAINTS ALL IMMEDIATE ran after a SAVEPOINT or inside an '
                               'exception block. Nothing was prepared.',
                      HINT = 'Let the commit prepare it, or run SET CONSTRAINTS ALL IMMEDIATE '
                             'outside savepoints and exception blocks.';
        END IF;
    END LOOP;
    started := pg_catalog.clock_timestamp();
    FOR i IN 1 .. n LOOP
        outcome := outcome || NULL::text;
        BEGIN
            IF (links[i] = ANY ({{ dblink }}.dblink_get_connections())) IS NOT TRUE
               OR NOT {{ schema }}._in_tx(links[i]) THEN
                -- Closed, or its remote transaction ended: its work is gone.
                outcome[i] := '08003';
                CONTINUE;
            END IF;
            PERFORM {{ dblink }}.dblink_send_query(links[i],
                'PREPARE TRANSACTION ' || pg_catalog.quote_literal(gids[i]));
            outcome[i] := 'sent';
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            -- A connection that went away (a shutdown or terminate code included) is lost.
            outcome[i] := CASE WHEN {{ schema }}._is_broken(err_state, err_message)
                THEN '08006' ELSE err_state END;
            fail_message := COALESCE(fail_message, {{ schema }}._scrub(err_message,
                pg_catalog.current_setting({{ guc_target }} || {{ schema }}._key(links[i]), true)));
        END;
    END LOOP;
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN outcome[i] IS DISTINCT FROM 'sent';
        BEGIN
            PERFORM {{ schema }}._await(links[i], {{ remote_commit_timeout_s }}, started);
            BEGIN
                SELECT r.status INTO tag
                FROM {{ dblink }}.dblink_get_result(links[i]) AS r(status text);
            EXCEPTION WHEN OTHERS THEN
                -- The end of the query comes after the error: collected, or the next use
                -- of the connection would find it busy.
                BEGIN
                    PERFORM 1 FROM {{ dblink }}.dblink_get_result(links[i], false) AS r(x text);
                EXCEPTION WHEN OTHERS THEN
                    NULL;
                END;
                RAISE;
            END;
            PERFORM 1 FROM {{ dblink }}.dblink_get_result(links[i], false) AS r(x text);
            -- A PREPARE in a remote transaction that had failed answers ROLLBACK, without an
            -- error.
            outcome[i] := CASE WHEN tag = 'PREPARE TRANSACTION' THEN 'prepared' ELSE '40000' END;
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                    err_message = MESSAGE_TEXT,
                                    err_detail = PG_EXCEPTION_DETAIL;
            outcome[i] := CASE WHEN {{ schema }}._is_broken(err_state, err_message)
                THEN '08006' ELSE err_state END;
            IF fail_message IS NULL THEN
                fail_message := {{ schema }}._scrub(
                    pg_catalog.concat_ws(': ', err_message, NULLIF(err_detail, '')),
                    pg_catalog.current_setting({{ guc_target }} || {{ schema }}._key(links[i]), true));
            END IF;
        END;
        IF outcome[i] = 'prepared' THEN
            -- Held whatever the local transaction does next, so that its session finishes
            -- phase 2 either way.
            PERFORM {{ schema }}._mark_prepared(links[i], local_xid, true);
        END IF;
        -- Prepared or failed, no remote transaction is open on it any more.
        PERFORM {{ schema }}._mark_tx(links[i], false);
        PERFORM {{ schema }}._note(links[i], pg_catalog.jsonb_build_object('prepared', gids[i]));
    END LOOP;
    failed := (SELECT min(o.i)::integer FROM pg_catalog.unnest(outcome) WITH ORDINALITY AS o(s, i)
               WHERE o.s IS DISTINCT FROM 'prepared');
    IF failed IS NULL THEN
        RETURN;
    END IF;
    -- The local transaction cannot commit now: what was prepared is rolled back at once
    -- (what fails here is left to the session's next call or the resolver, which find no
    -- commit record for it).
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN outcome[i] IS DISTINCT FROM 'prepared';
        BEGIN
            PERFORM {{ schema }}._status(links[i],
                'ROLLBACK PREPARED ' || pg_catalog.quote_literal(gids[i]),
                {{ remote_commit_timeout_s }});
            PERFORM {{ schema }}._mark_prepared(links[i], local_xid, false);
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            NULL;
        END;
    END LOOP;
    err_state := outcome[failed];
    IF err_state = '40000' THEN
        RAISE EXCEPTION 'the remote transaction of dblink connection "%" had failed and could not be prepared',
                pg_catalog.substr(links[failed], 4)
            USING ERRCODE = '40000',
                  DETAIL = pg_catalog.format('PREPARE TRANSACTION answered %s. Nothing was '
                                             'committed on any server.', COALESCE(tag, '(nothing)')),
                  HINT = 'Find the failed remote statement, then run the unit of work again.';
    ELSIF pg_catalog.left(err_state, 2) = '08' OR err_state = '57014' THEN
        RAISE EXCEPTION 'dblink connection "%" was lost while preparing its remote transaction',
                pg_catalog.substr(links[failed], 4)
            USING ERRCODE = CASE WHEN err_state = '57014' THEN '57014' ELSE '08006' END,
                  DETAIL = pg_catalog.format('The local transaction is rolled back. If the remote '
                                             'prepared %s before the connection was lost, '
                                             'resolve_prepared rolls it back. %s', gids[failed],
                                             COALESCE(fail_message, '')),
                  HINT = 'Nothing was committed on any server; run the unit of work again.';
    END IF;
    RAISE EXCEPTION 'the remote transaction of dblink connection "%" could not be prepared: %',
            pg_catalog.substr(links[failed], 4), fail_message
        USING ERRCODE = err_state,
              DETAIL = 'The local transaction is rolled back; nothing was committed on any server.';
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._two_phase_prepare() IS
'pgdblink_safe internal: phase 1 of two-phase commit: records and prepares the remote '
'transaction of every two-phase connection of the transaction, or fails the local commit';
