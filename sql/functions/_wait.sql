CREATE OR REPLACE FUNCTION {{ schema }}._wait(
    conn_name text, sql text, timeout_s numeric, started timestamptz
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
BEGIN
    IF {{ dblink }}.dblink_send_query(conn_name, sql) <> 1 THEN
        RAISE EXCEPTION 'could not send query: %', {{ dblink }}.dblink_error_message(conn_name)
            USING ERRCODE = '08006';
    END IF;
    PERFORM {{ schema }}._await(conn_name, timeout_s, started);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._wait(text, text, numeric, timestamptz) IS
'pgdblink_safe internal: sends a statement and waits for its result until the timeout';
