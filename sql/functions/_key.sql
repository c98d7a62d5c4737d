CREATE OR REPLACE FUNCTION {{ schema }}._key(conn_name text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
    -- SQL_ASCII as the destination keeps the bytes as they are, whatever the database
    -- encoding, so no name fails to convert.
    SELECT pg_catalog.encode(pg_catalog.convert_to(conn_name, 'SQL_ASCII'), 'hex');
$fn$;
COMMENT ON FUNCTION {{ schema }}._key(text) IS
'pgdblink_safe internal: the suffix of the session settings that hold a connection''s state';
