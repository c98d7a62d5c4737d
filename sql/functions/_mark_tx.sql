CREATE OR REPLACE FUNCTION {{ schema }}._mark_tx(link text, open boolean)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
BEGIN
    -- Held once at most: session advisory locks stack, and the unlock must leave none.
    IF open AND NOT {{ schema }}._in_tx(link) THEN
        PERFORM pg_catalog.pg_advisory_lock({{ schema }}._tx_key(link));
    ELSIF NOT open AND {{ schema }}._in_tx(link) THEN
        PERFORM pg_catalog.pg_advisory_unlock({{ schema }}._tx_key(link));
    END IF;
    -- A hint that costs one setting to read, where the lock costs a scan of pg_locks. A local
    -- rollback can undo it, never the lock: only 'true' is to be trusted, and confirmed.
    PERFORM {{ schema }}._note(link, pg_catalog.jsonb_build_object('tx_open', open));
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._mark_tx(text, boolean) IS
'pgdblink_safe internal: records that a connection''s remote transaction opened or ended, '
'where no local rollback can undo it';
