-- pgdblink_safe migration 0008: schema dblink_safe, dblink in public

CREATE OR REPLACE FUNCTION dblink_safe._remote_begin(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text := dblink_safe._key(link);
    state text := pg_catalog.current_setting('dblink_safe.h_' || key, true);
BEGIN
    -- Isolation as postgres_fdw chooses it: serializable stays serializable, anything else
    -- becomes repeatable read so that one local statement sees one remote snapshot. The
    -- backstop (a remote transaction nobody ends is ended by the remote server after this
    -- long) is local to the transaction, so that a pooled server connection keeps nothing.
    PERFORM public.dblink_exec(link, pg_catalog.concat(
        'START TRANSACTION ISOLATION LEVEL ',
        CASE pg_catalog.current_setting('transaction_isolation')
            WHEN 'serializable' THEN 'SERIALIZABLE'
            ELSE 'REPEATABLE READ'
        END,
        CASE WHEN pg_catalog.current_setting('transaction_read_only') = 'on'
            THEN ' READ ONLY' ELSE '' END,
        '; SET LOCAL idle_in_transaction_session_timeout = ',
        30000));
    PERFORM pg_catalog.set_config('dblink_safe.h_' || key,
        pg_catalog.concat_ws(' ',
            pg_catalog.split_part(state, ' ', 1), pg_catalog.split_part(state, ' ', 2),
            pg_catalog.split_part(state, ' ', 3), pg_catalog.split_part(state, ' ', 4), '1'),
        false);
END;
$fn$;
