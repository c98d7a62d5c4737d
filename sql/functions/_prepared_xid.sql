CREATE OR REPLACE FUNCTION {{ schema }}._prepared_xid(link text)
RETURNS xid8
LANGUAGE sql
STABLE
{{ function_settings }}
AS $fn$
    -- The local transaction whose PREPARE left link's remote transaction waiting for phase 2,
    -- or NULL. Kept in a session advisory lock, which a local rollback cannot undo: a
    -- rolled-back transaction's prepared work must be rolled back too. The lock holds the
    -- low 32 bits; the epoch is the current one, or the one before when those bits are ahead
    -- of the next transaction id (a wraparound since).
    SELECT CASE
        WHEN (n.next & ~4294967295::bigint) + l.objid::bigint <= n.next
            THEN ((n.next & ~4294967295::bigint) + l.objid::bigint)::text::xid8
        ELSE ((n.next & ~4294967295::bigint) - 4294967296 + l.objid::bigint)::text::xid8
    END
    FROM pg_catalog.pg_locks AS l,
        LATERAL (SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::text::bigint
                 AS next) AS n
    WHERE l.locktype = 'advisory'
      AND l.pid = pg_catalog.pg_backend_pid()
      AND l.objsubid = 2
      AND l.mode = 'ExclusiveLock'
      AND l.classid = {{ schema }}._prepared_key(link)::oid
    LIMIT 1;
$fn$;
COMMENT ON FUNCTION {{ schema }}._prepared_xid(text) IS
'pgdblink_safe internal: the local transaction that prepared a connection''s remote '
'transaction, while phase 2 is still to come';
