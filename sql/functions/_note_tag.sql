CREATE OR REPLACE FUNCTION {{ schema }}._note_tag(link text, sql text, status text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
BEGIN
    -- Called only for the command tags that open or end a transaction. ROLLBACK TO
    -- SAVEPOINT answers ROLLBACK, and COMMIT AND CHAIN answers COMMIT, yet both leave a
    -- transaction open.
    IF status IN ('BEGIN', 'START TRANSACTION') THEN
        PERFORM {{ schema }}._mark_tx(link, true);
    ELSIF status = 'ROLLBACK' AND sql ~* '\mrollback(\s+(work|transaction))?\s+to\M' THEN
        PERFORM {{ schema }}._mark_tx(link, true);
    ELSIF status IN ('COMMIT', 'ROLLBACK') AND sql ~* '\mand\s+chain\M'
          AND sql !~* '\mand\s+no\s+chain\M' THEN
        PERFORM {{ schema }}._mark_tx(link, true);
    ELSE
        PERFORM {{ schema }}._mark_tx(link, false);
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._note_tag(text, text, text) IS
'pgdblink_safe internal: follows the remote transaction through the command tags of the '
'statements that open or end one';
