CREATE OR REPLACE FUNCTION {{ schema }}._forget_broken(
    conn_name text, err_state text, err_message text, err_detail text
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    in_tx boolean := {{ schema }}._in_tx(conn_name);
BEGIN
    -- dblink reports a result that carries no error message as 08006 (a statement that was
    -- only a comment, say). A connection libpq still finds healthy was not lost.
    IF (conn_name = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE
       AND {{ dblink }}.dblink_error_message(conn_name) = 'OK' THEN
        RAISE EXCEPTION 'the statement on dblink connection "%" produced neither a result nor an error', conn_name
            USING ERRCODE = '22023',
                  DETAIL = pg_catalog.format('dblink reported SQLSTATE %s: %s', err_state, err_message),
                  HINT = 'Pass sql that holds a statement, not only comments or blanks.';
    END IF;
    -- Closed here so that the next call reconnects whatever this one raises; the remote
    -- transaction that was open on it, if any, is gone with it.
    IF (conn_name = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE THEN
        PERFORM {{ dblink }}.dblink_disconnect(conn_name);
    END IF;
    PERFORM {{ schema }}._mark_tx(conn_name, false);
    PERFORM {{ schema }}._note(conn_name, pg_catalog.jsonb_build_object(
        'last_error', err_state,
        'last_error_at', EXTRACT(epoch FROM pg_catalog.clock_timestamp())));
    IF in_tx THEN
        PERFORM {{ schema }}._lost(conn_name, err_state, err_message, err_detail,
            ' (inside an open remote transaction, which is lost)');
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._forget_broken(text, text, text, text) IS
'pgdblink_safe internal: closes a connection lost after sending; raises 08007 inside a '
'remote transaction';
