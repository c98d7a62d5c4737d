CREATE OR REPLACE FUNCTION {{ schema }}._instance_sql()
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
    -- What identifies a run of the remote server, as an expression it evaluates:
    -- '<system identifier>/<start time>/<statistics reset time>'. Another cluster behind the
    -- same name has another system identifier; a restart or a promoted standby another start
    -- time; crash recovery, which does not restart the postmaster, resets the shared
    -- statistics, and with them their reset time (a clean restart keeps it).
    SELECT '(SELECT c.system_identifier FROM pg_catalog.pg_control_system() AS c)::text || ''/'' || '
           'pg_catalog.date_part(''epoch'', pg_catalog.pg_postmaster_start_time())::text || ''/'' || '
           'COALESCE(pg_catalog.date_part(''epoch'', (SELECT s.stats_reset '
           'FROM pg_catalog.pg_stat_bgwriter AS s))::text, ''-'')';
$fn$;
COMMENT ON FUNCTION {{ schema }}._instance_sql() IS
'pgdblink_safe internal: the remote expression naming the server instance that hands out a '
'transaction id';
