CREATE OR REPLACE FUNCTION {{ schema }}._autonomous_end(link text, sql text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
BEGIN
    -- sql that holds BEGIN or START TRANSACTION can leave a transaction open when it fails or
    -- is refused: it is rolled back, so that the next call's statement is not run inside it,
    -- never to commit. Anything else ended with its query string.
    IF sql ~* '\m(begin|start)\M'
       AND (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE
       AND {{ dblink }}.dblink_is_busy(link) = 0 THEN
        BEGIN
            PERFORM {{ dblink }}.dblink_exec(link, 'ROLLBACK', false);
        EXCEPTION WHEN OTHERS THEN
            -- A connection that cannot take it is proved alive, or replaced, by the next call.
            NULL;
        END;
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._autonomous_end(text, text) IS
'pgdblink_safe internal: rolls back a transaction that a failed or refused autonomous '
'statement may have left open';
