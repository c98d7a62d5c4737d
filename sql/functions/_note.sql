CREATE OR REPLACE FUNCTION {{ schema }}._note(conn_name text, changes jsonb)
RETURNS void
LANGUAGE sql
VOLATILE
{{ function_settings }}
AS $fn$
    SELECT pg_catalog.set_config(
        {{ guc_meta }} || {{ schema }}._key(conn_name),
        ({{ schema }}._meta(conn_name) OPERATOR(pg_catalog.||) changes)::text,
        false);
$fn$;
COMMENT ON FUNCTION {{ schema }}._note(text, jsonb) IS
'pgdblink_safe internal: merges changes into the bookkeeping of one connection';
