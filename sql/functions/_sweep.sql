CREATE OR REPLACE FUNCTION {{ schema }}._sweep()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    link text;
    closed integer := 0;
    local_xid xid8;
BEGIN
    -- A transaction-scoped connection whose mapping is gone belongs to a transaction that
    -- rolled back (or to one that committed where no commit hook could be set, or to a
    -- two-phase commit): close it, which also ends any remote transaction left open on it.
    FOR link IN
        SELECT n FROM pg_catalog.unnest({{ dblink }}.dblink_get_connections()) AS n
        WHERE pg_catalog.left(n, 3) = 'tx:'
    LOOP
        IF pg_catalog.current_setting(
               {{ guc_mapped }} || {{ schema }}._key(pg_catalog.substr(link, 4)), true)
           IS DISTINCT FROM '1' THEN
            -- A two-phase connection whose transaction has ended: phase 2 first.
            local_xid := {{ schema }}._prepared_xid(link);
            IF local_xid IS NOT NULL THEN
                CONTINUE WHEN NOT {{ schema }}._finish_prepared(link, local_xid);
            END IF;
            PERFORM {{ dblink }}.dblink_disconnect(link);
            PERFORM {{ schema }}._forget(link);
            closed := closed + 1;
        END IF;
    END LOOP;
    RETURN closed;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._sweep() IS
'pgdblink_safe internal: closes transaction-scoped connections whose transaction has ended';
