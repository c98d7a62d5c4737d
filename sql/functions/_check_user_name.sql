CREATE OR REPLACE FUNCTION {{ schema }}._check_user_name(conn_name text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
BEGIN
    PERFORM {{ schema }}._check_name(conn_name);
    IF pg_catalog.left(conn_name, 3) = 'tx:' THEN
        RAISE EXCEPTION 'conn_name "%" begins with "tx:", which is reserved', conn_name
            USING ERRCODE = '22023',
                  DETAIL = 'Transaction-scoped connections live under the dblink name tx:<conn_name>.',
                  HINT = 'Use the name you passed to ensure_dblink_conn, or choose another name.';
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._check_user_name(text) IS
'pgdblink_safe internal: _check_name, and the tx: prefix is reserved';
