CREATE OR REPLACE FUNCTION {{ schema }}._resolve(
    conn_name text, xid text, max_attempts integer, budget_s numeric
)
RETURNS text
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    target text := NULLIF(pg_catalog.current_setting({{ guc_target }} || {{ schema }}._key(conn_name), true), '');
    -- xid is '<transaction id>@<instance>', as the remote gave them together.
    txid text := pg_catalog.split_part(xid, '@', 1);
    instance text := pg_catalog.split_part(xid, '@', 2);
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
    now_instance text;
    outcome text;
    err_state text;
    err_message text;
BEGIN
    LOOP
        attempt := attempt + 1;
        BEGIN
            -- A new connection asks the remote what became of the transaction whose COMMIT
            -- reply was lost. While it is still in progress the old backend has not
            -- finished: wait.
            PERFORM {{ schema }}._reopen(conn_name, target,
                (conn_name = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE, max_attempts,
                GREATEST(budget_s - EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started)::numeric, 0));
            LOOP
                SELECT r.instance, r.status INTO now_instance, outcome
                FROM {{ dblink }}.dblink(conn_name, pg_catalog.format(
                    'SELECT %s, pg_catalog.pg_xact_status(%L::pg_catalog.xid8)',
                    {{ schema }}._instance_sql(), txid)) AS r(instance text, status text);
                IF now_instance IS DISTINCT FROM instance THEN
                    -- Another run of the server may have handed the same id to someone
                    -- else, but only if it crashed since (or is another cluster, or a
                    -- promoted standby): a clean shutdown writes every record first, so after
                    -- a clean restart alone (same statistics reset time) 'committed' is ours.
                    -- Any answer but 'committed' means ours did not commit: a commit is
                    -- durable before its reply is sent.
                    RETURN CASE
                        WHEN outcome IS NULL
                             OR pg_catalog.split_part(now_instance, '/', 1) <> pg_catalog.split_part(instance, '/', 1)
                            THEN 'unknown: dblink connection now reaches another cluster'
                        WHEN outcome <> 'committed' THEN 'aborted'
                        WHEN pg_catalog.split_part(now_instance, '/', 3) = pg_catalog.split_part(instance, '/', 3)
                             AND pg_catalog.split_part(instance, '/', 3) <> '-'
                            THEN 'committed'
                        ELSE 'unknown: the remote server recovered from a crash or failed over since, and may have handed the id out again'
                    END;
                END IF;
                EXIT WHEN outcome IS DISTINCT FROM 'in progress'
                       OR pg_catalog.clock_timestamp() - started
                          >= pg_catalog.make_interval(secs => {{ resolve_wait_s }});
                PERFORM pg_catalog.pg_sleep(0.01);
            END LOOP;
            RETURN CASE WHEN outcome IN ('committed', 'aborted', 'in progress') THEN outcome
                        ELSE 'unknown' END;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
            -- pg_xact_status calls an id the server has not handed out "in the future": a
            -- server that restarted without it (so it never committed), or another server.
            IF err_state = '22023' THEN
                RETURN 'aborted';
            END IF;
            -- Unreachable, or lost again while asking: ask again. Anything else (a remote
            -- without pg_xact_status, say) is the caller's to see.
            IF NOT {{ schema }}._is_broken(err_state, err_message) THEN
                RAISE;
            END IF;
        END;
        EXIT WHEN attempt >= max_attempts
               OR EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started) >= budget_s;
        PERFORM {{ schema }}._pause(attempt, max_attempts, started, budget_s);
    END LOOP;
    RETURN 'unknown';
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._resolve(text, text, integer, numeric) IS
'pgdblink_safe internal: committed, aborted, in progress or unknown for a remote transaction '
'id, trusting committed only from a server that has not crashed since it gave the id';
