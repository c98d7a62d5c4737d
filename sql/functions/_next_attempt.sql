CREATE OR REPLACE FUNCTION {{ schema }}._next_attempt(
    conn_name text,
    err_state text,
    err_message text,
    err_detail text,
    safe_to_repeat boolean,
    attempt integer,
    max_attempts integer,
    started timestamptz,
    budget_s numeric,
    window_s numeric
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
BEGIN
    IF NOT safe_to_repeat THEN
        PERFORM {{ schema }}._lost(conn_name, err_state, err_message, err_detail, '');
    END IF;
    IF attempt >= max_attempts
       OR EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started) >= budget_s THEN
        PERFORM {{ schema }}._lost(conn_name, err_state, err_message, err_detail,
            pg_catalog.format(' (gave up after %s attempt(s))', attempt));
    END IF;
    PERFORM {{ schema }}._pause(attempt, max_attempts, started, budget_s);
    PERFORM {{ schema }}._prepare(conn_name, window_s, max_attempts, budget_s);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._next_attempt(
    text,
    text,
    text,
    text,
    boolean,
    integer,
    integer,
    timestamptz,
    numeric,
    numeric
) IS
'pgdblink_safe internal: after a connection was lost, raises 08007 unless the statement may '
'run again within the attempts and time left; otherwise waits and reconnects';
