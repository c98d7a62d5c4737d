CREATE OR REPLACE FUNCTION {{ schema }}._mark_prepared(link text, local_xid xid8, prepared boolean)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    low integer := (local_xid::text::bigint & 4294967295)::bit(32)::integer;
BEGIN
    IF prepared THEN
        PERFORM pg_catalog.pg_advisory_lock({{ schema }}._prepared_key(link), low);
    ELSE
        PERFORM pg_catalog.pg_advisory_unlock({{ schema }}._prepared_key(link), low);
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._mark_prepared(text, xid8, boolean) IS
'pgdblink_safe internal: records that a connection''s remote transaction was prepared by '
'local_xid, or that its phase 2 is done';
