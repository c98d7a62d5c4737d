CREATE OR REPLACE FUNCTION {{ schema }}._prepared_key(link text)
RETURNS integer
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
    -- The first key of the session advisory lock (key, low 32 bits of the local xid) held
    -- while a connection's prepared remote transaction waits for phase 2.
    SELECT pg_catalog.hashtext({{ guc_hot }} || 'prepared:' || link);
$fn$;
COMMENT ON FUNCTION {{ schema }}._prepared_key(text) IS
'pgdblink_safe internal: the first key of the lock held while a connection has a prepared '
'remote transaction';
