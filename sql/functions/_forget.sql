CREATE OR REPLACE FUNCTION {{ schema }}._forget(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    key text := {{ schema }}._key(link);
BEGIN
    PERFORM pg_catalog.set_config({{ guc_target }} || key, '', false);
    PERFORM pg_catalog.set_config({{ guc_hot }} || key, '', false);
    PERFORM pg_catalog.set_config({{ guc_meta }} || key, '', false);
    PERFORM {{ schema }}._track(link, false);
    PERFORM {{ schema }}._mark_tx(link, false);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._forget(text) IS
'pgdblink_safe internal: drops the bookkeeping of a dblink name';
