CREATE OR REPLACE FUNCTION {{ schema }}._gid(link text, local_xid xid8)
RETURNS text
LANGUAGE sql
STABLE
{{ function_settings }}
AS $fn$
    -- The GID of a connection's remote transaction prepared by local transaction local_xid:
    -- 'pgdblink_safe:<system identifier>:<database oid>:<local xid>:<server start, in
    -- microseconds>:<8 hex digits of the link's hash>', under 110 bytes. The first three
    -- fields say which local database decides it (_gid_prefix), the next two which
    -- transaction there: an id handed out again after a crash comes with another start.
    SELECT pg_catalog.concat({{ schema }}._gid_prefix(), local_xid::text, ':',
        (EXTRACT(epoch FROM pg_catalog.pg_postmaster_start_time()) * 1000000)::bigint, ':',
        pg_catalog.left(pg_catalog.md5(link), 8));
$fn$;
COMMENT ON FUNCTION {{ schema }}._gid(text, xid8) IS
'pgdblink_safe internal: the GID a two-phase connection''s remote transaction is prepared under';
