CREATE OR REPLACE FUNCTION {{ schema }}._gid_prefix()
RETURNS text
LANGUAGE sql
STABLE
{{ function_settings }}
AS $fn$
    SELECT pg_catalog.concat('pgdblink_safe:', s.system_identifier, ':', d.oid, ':')
    FROM pg_catalog.pg_control_system() AS s, pg_catalog.pg_database AS d
    WHERE d.datname = pg_catalog.current_database();
$fn$;
COMMENT ON FUNCTION {{ schema }}._gid_prefix() IS
'pgdblink_safe internal: the start of every GID this database''s transactions prepare';
