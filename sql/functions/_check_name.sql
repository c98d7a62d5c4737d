CREATE OR REPLACE FUNCTION {{ schema }}._check_name(conn_name text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
BEGIN
    IF conn_name IS NULL THEN
        RAISE EXCEPTION 'conn_name must not be NULL'
            USING ERRCODE = '22004',
                  HINT = 'Name the dblink connection, e.g. ''orders_remote''.';
    END IF;
    IF pg_catalog.btrim(conn_name) = '' THEN
        RAISE EXCEPTION 'conn_name must not be empty or blank'
            USING ERRCODE = '22023',
                  HINT = 'Name the dblink connection, e.g. ''orders_remote''.';
    END IF;
    -- dblink truncates longer names with only a NOTICE, which would let two names that share
    -- their first 63 bytes silently become one connection.
    IF pg_catalog.octet_length(conn_name) > 63 THEN
        RAISE EXCEPTION 'conn_name "%..." is % bytes long; dblink connection names are limited to 63 bytes',
                pg_catalog.left(conn_name, 20), pg_catalog.octet_length(conn_name)
            USING ERRCODE = '22023',
                  HINT = 'Use a shorter connection name.';
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._check_name(text) IS
'pgdblink_safe internal: rejects a NULL, blank or over-long connection name';
