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
    proven boolean;
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
                SELECT r.instance, r.status, r.proven INTO now_instance, outcome, proven
                FROM {{ dblink }}.dblink(conn_name, pg_catalog.format($q$
                    SELECT %s, pg_catalog.pg_xact_status(t.x),
                        CASE WHEN pg_catalog.current_setting('track_commit_timestamp') = 'on'
                                  AND pg_catalog.pg_xact_status(t.x) = 'committed'
                            THEN pg_catalog.pg_xact_commit_timestamp(
                                     (t.x::text::bigint %% 4294967296)::text::xid)
                                 < GREATEST(pg_catalog.pg_postmaster_start_time(),
                                            (SELECT s.stats_reset FROM pg_catalog.pg_stat_bgwriter AS s))
                        END
                    FROM (SELECT %L::pg_catalog.xid8 AS x) AS t$q$,
                    {{ schema }}._instance_sql(), txid)) AS r(instance text, status text, proven boolean);
                IF now_instance IS DISTINCT FROM instance THEN
                    -- Another run of the server (a restart, crash recovery, a promoted
                    -- standby) may have handed the same id to someone else: 'committed' is
                    -- ours only if it committed before that run began. Any other answer means
                    -- ours did not commit: a commit is durable before its reply is sent.
                    RETURN CASE
                        WHEN outcome = 'committed' AND proven THEN 'committed'
                        WHEN outcome = 'committed'
                            THEN 'unknown: the remote server restarted or failed over since, and may have reused the id'
                        WHEN outcome IS NULL THEN 'unknown'
                        ELSE 'aborted'
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
'id, trusting committed only from the server instance that gave the id';
