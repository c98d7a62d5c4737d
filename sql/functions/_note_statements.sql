CREATE OR REPLACE FUNCTION {{ schema }}._note_statements(link text, sql text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    in_tx boolean;
BEGIN
    -- A string of several statements answers with the last one's tag, so 'BEGIN; INSERT ...'
    -- opens a transaction that the tag does not show. When such a string names a
    -- transaction command, ask the remote: inside a transaction block now() is the block's
    -- start, earlier than the statement's.
    IF sql !~* '\m(begin|start|commit|end|rollback|abort|prepare)\M' THEN
        RETURN;
    END IF;
    BEGIN
        SELECT r.in_tx INTO in_tx FROM {{ dblink }}.dblink(link,
            'SELECT pg_catalog.now() <> pg_catalog.statement_timestamp()') AS r(in_tx boolean);
    EXCEPTION WHEN OTHERS THEN
        -- A failed transaction block refuses every statement: still a transaction.
        in_tx := true;
    END;
    PERFORM {{ schema }}._mark_tx(link, in_tx);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._note_statements(text, text) IS
'pgdblink_safe internal: after a string of several statements that names a transaction '
'command, asks the remote whether a transaction is open';
