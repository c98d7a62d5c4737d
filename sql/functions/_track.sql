CREATE OR REPLACE FUNCTION {{ schema }}._track(conn_name text, tracked boolean)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    current text[] := COALESCE(
        NULLIF(pg_catalog.current_setting({{ guc_names }}, true), '')::text[], '{}');
BEGIN
    IF tracked AND NOT conn_name = ANY (current) THEN
        current := current || conn_name;
    ELSIF NOT tracked THEN
        current := pg_catalog.array_remove(current, conn_name);
    END IF;
    PERFORM pg_catalog.set_config({{ guc_names }}, current::text, false);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._track(text, boolean) IS
'pgdblink_safe internal: adds a name to, or removes it from, the session''s tracked names';
