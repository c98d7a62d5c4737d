CREATE OR REPLACE FUNCTION {{ schema }}._in_tx(link text)
RETURNS boolean
LANGUAGE sql
STABLE
{{ function_settings }}
AS $fn$
    -- A session advisory lock, because a local ROLLBACK undoes session settings but neither
    -- the dblink connection nor the remote transaction open on it. pg_locks splits a bigint
    -- key into classid (high half) and objid (low half).
    SELECT EXISTS (
        SELECT 1
        FROM pg_catalog.pg_locks AS l,
            LATERAL (SELECT {{ schema }}._tx_key(link) AS k) AS key
        WHERE l.locktype = 'advisory'
          AND l.pid = pg_catalog.pg_backend_pid()
          AND l.objsubid = 1
          AND l.classid = ((key.k >> 32) & 4294967295)::oid
          AND l.objid = (key.k & 4294967295)::oid);
$fn$;
COMMENT ON FUNCTION {{ schema }}._in_tx(text) IS
'pgdblink_safe internal: true while the connection has a remote transaction open, whatever '
'the local transactions did since';
