CREATE OR REPLACE FUNCTION {{ schema }}._status(conn_name text, sql text, timeout_s numeric)
RETURNS text
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    status text;
BEGIN
    IF timeout_s IS NULL THEN
        RETURN {{ dblink }}.dblink_exec(conn_name, sql);
    END IF;
    PERFORM {{ schema }}._wait(conn_name, sql, timeout_s, pg_catalog.clock_timestamp());
    BEGIN
        SELECT r.status INTO status FROM {{ dblink }}.dblink_get_result(conn_name) AS r(status text);
    EXCEPTION WHEN OTHERS THEN
        -- Leave the connection ready for the next statement, then report the remote error.
        BEGIN
            PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name, false) AS r(ignored text);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
        RAISE;
    END;
    -- The empty result that ends an asynchronous query must be read before the next one.
    PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name) AS r(status text);
    RETURN status;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._status(text, text, numeric) IS
'pgdblink_safe internal: runs a command, synchronously or with a timeout, returning its status';
