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
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
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
                SELECT r.status INTO outcome
                FROM {{ dblink }}.dblink(conn_name,
                    pg_catalog.format('SELECT pg_catalog.pg_xact_status(%L::xid8)', xid)) AS r(status text);
                EXIT WHEN outcome IS DISTINCT FROM 'in progress'
                       OR pg_catalog.clock_timestamp() - started
                          >= pg_catalog.make_interval(secs => {{ resolve_wait_s }});
                PERFORM pg_catalog.pg_sleep(0.01);
            END LOOP;
            RETURN COALESCE(outcome, 'unknown');
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
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
'pgdblink_safe internal: committed, aborted, in progress or unknown for a remote transaction id';
