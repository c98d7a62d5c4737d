CREATE OR REPLACE FUNCTION {{ schema }}._remote_begin(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
BEGIN
    -- Isolation as postgres_fdw chooses it: serializable stays serializable, anything else
    -- becomes repeatable read so that one local statement sees one remote snapshot. The
    -- backstop (a remote transaction nobody ends is ended by the remote server after this
    -- long) is local to the transaction, so that a pooled server connection keeps nothing.
    PERFORM {{ dblink }}.dblink_exec(link, pg_catalog.concat(
        'START TRANSACTION ISOLATION LEVEL ',
        CASE pg_catalog.current_setting('transaction_isolation')
            WHEN 'serializable' THEN 'SERIALIZABLE'
            ELSE 'REPEATABLE READ'
        END,
        CASE WHEN pg_catalog.current_setting('transaction_read_only') = 'on'
            THEN ' READ ONLY' ELSE '' END,
        '; SET LOCAL idle_in_transaction_session_timeout = ',
        {{ remote_tx_idle_timeout_ms }}));
    PERFORM {{ schema }}._mark_tx(link, true);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._remote_begin(text) IS
'pgdblink_safe internal: opens the remote transaction of a remote_tx connection';
