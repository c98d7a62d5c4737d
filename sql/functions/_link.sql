CREATE OR REPLACE FUNCTION {{ schema }}._link(conn_name text)
RETURNS text
LANGUAGE sql
STABLE
{{ function_settings }}
AS $fn$
    SELECT CASE
        WHEN pg_catalog.current_setting({{ guc_mapped }} || {{ schema }}._key(conn_name), true) = '1'
            THEN 'tx:' || conn_name
        ELSE conn_name
    END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._link(text) IS
'pgdblink_safe internal: the dblink name behind a caller''s connection name';
