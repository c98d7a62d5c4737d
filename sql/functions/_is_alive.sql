CREATE OR REPLACE FUNCTION {{ schema }}._is_alive(conn_name text)
RETURNS boolean
LANGUAGE sql
VOLATILE
{{ function_settings }}
AS $fn$
    SELECT {{ schema }}._probe(conn_name, false) IS NOT NULL;
$fn$;
COMMENT ON FUNCTION {{ schema }}._is_alive(text) IS
'pgdblink_safe internal: proves a listed dblink connection alive with one round trip, '
'within connect_timeout';
