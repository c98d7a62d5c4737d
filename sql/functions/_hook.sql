CREATE OR REPLACE FUNCTION {{ schema }}._hook(link text, remote_tx boolean)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    err_state text;
BEGIN
    -- The session's temporary table; rows go when the transaction ends (ON COMMIT DELETE
    -- ROWS), and its deferred trigger fires for each at commit. A read-only transaction, a
    -- hot standby or a role without TEMP cannot create it.
    IF pg_catalog.to_regclass({{ tx_table_literal }}) IS NULL THEN
        BEGIN
            CREATE TEMPORARY TABLE {{ tx_table }} (link text NOT NULL, remote_tx boolean NOT NULL)
            ON COMMIT DELETE ROWS;
            CREATE CONSTRAINT TRIGGER pgdblink_safe_at_commit
            AFTER INSERT ON {{ tx_table }}
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION {{ schema }}._at_commit();
        EXCEPTION WHEN read_only_sql_transaction OR insufficient_privilege THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE;
            IF remote_tx THEN
                RAISE EXCEPTION 'remote_tx => true needs a commit hook, which this transaction cannot set up'
                    USING ERRCODE = err_state,
                          DETAIL = 'The hook is a temporary table, created once per session; '
                                   'read-only transactions, hot standbys and roles without the '
                                   'TEMPORARY privilege cannot create it.',
                          HINT = 'Call ensure_dblink_conn with scope => ''transaction'' once in a '
                                 'read-write transaction of this session first, or GRANT TEMPORARY '
                                 'on the database to this role.';
            END IF;
            -- Without a hook the connection is closed by the next toolkit call instead.
            RETURN false;
        END;
    ELSIF NOT EXISTS (
        SELECT 1 FROM pg_catalog.pg_trigger AS t
        WHERE t.tgrelid = pg_catalog.to_regclass({{ tx_table_literal }})
          AND t.tgfoid = ({{ schema_literal }} || '._at_commit()')::pg_catalog.regprocedure) THEN
        -- The table outlived the toolkit that made it (DROP SCHEMA ... CASCADE took the
        -- trigger with the function, and the toolkit was installed again): without the
        -- trigger nothing would commit remote_tx work at commit.
        CREATE CONSTRAINT TRIGGER pgdblink_safe_at_commit
        AFTER INSERT ON {{ tx_table }}
        DEFERRABLE INITIALLY DEFERRED
        FOR EACH ROW EXECUTE FUNCTION {{ schema }}._at_commit();
    END IF;
    INSERT INTO {{ tx_table }} (link, remote_tx) VALUES (link, remote_tx);
    RETURN true;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._hook(text, boolean) IS
'pgdblink_safe internal: arranges for a transaction-scoped connection to be closed at commit';
