CREATE OR REPLACE FUNCTION {{ schema }}._meta(conn_name text)
RETURNS jsonb
LANGUAGE sql
STABLE
{{ function_settings }}
AS $fn$
    SELECT COALESCE(
        NULLIF(pg_catalog.current_setting({{ guc_meta }} || {{ schema }}._key(conn_name), true), '')::jsonb,
        '{}'::jsonb);
$fn$;
COMMENT ON FUNCTION {{ schema }}._meta(text) IS
'pgdblink_safe internal: the bookkeeping of one connection';
