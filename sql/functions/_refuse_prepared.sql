CREATE OR REPLACE FUNCTION {{ schema }}._refuse_prepared(link text)
RETURNS void
LANGUAGE plpgsql
STABLE
{{ function_settings }}
AS $fn$
DECLARE
    meta jsonb := {{ schema }}._meta(link);
    gid text := meta ->> 'prepared';
    local_xid xid8;
BEGIN
    -- After PREPARE TRANSACTION the connection has no remote transaction: a statement sent
    -- on it would autocommit on its own, outside the unit of work, and survive a local
    -- rollback. Set by _two_phase_prepare, which SET CONSTRAINTS ALL IMMEDIATE can run in
    -- the middle of a transaction. The note goes with a rolled-back savepoint; the lock
    -- that _two_phase_prepare takes stays.
    IF gid IS NULL AND (meta ->> 'two_phase')::boolean THEN
        local_xid := {{ schema }}._prepared_xid(link);
        IF local_xid IS NOT NULL THEN
            gid := {{ schema }}._gid(link, local_xid);
        END IF;
    END IF;
    IF gid IS NOT NULL THEN
        RAISE EXCEPTION 'dblink connection "%" was prepared for two-phase commit; it cannot be used again in this transaction',
                pg_catalog.substr(link, 4)
            USING ERRCODE = '25000',
                  DETAIL = pg_catalog.format('Its remote transaction is prepared as %s and waits '
                                             'for this transaction to end.', gid),
                  HINT = 'SET CONSTRAINTS ALL IMMEDIATE prepares it early; '
                         'do the remote work before that, or use another connection name.';
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._refuse_prepared(text) IS
'pgdblink_safe internal: refuses a transaction-scoped connection whose remote transaction is '
'already prepared (25000)';
