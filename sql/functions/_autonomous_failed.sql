CREATE OR REPLACE FUNCTION {{ schema }}._autonomous_failed(
    link text, err_state text, err_message text, err_detail text
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
BEGIN
    -- Closed already (a timeout, a failed send, a connection to the wrong place): the error
    -- says what happened.
    IF (link = ANY ({{ dblink }}.dblink_get_connections())) IS NOT TRUE THEN
        RETURN;
    END IF;
    -- Lost after sending: whether the remote transaction committed is unknown, as with
    -- safe_dblink_exec.
    IF {{ schema }}._lost_connection(link, err_state, err_message, false) THEN
        PERFORM {{ schema }}._forget_broken(link, err_state, err_message, err_detail);
        PERFORM {{ schema }}._lost(link, err_state, err_message, err_detail, '');
    END IF;
    -- A cancel of the caller (or its statement_timeout) while the statement still runs:
    -- the remote statement is cancelled too, and its transaction does not commit.
    IF {{ dblink }}.dblink_is_busy(link) = 1 THEN
        PERFORM {{ dblink }}.dblink_cancel_query(link);
    END IF;
    PERFORM {{ schema }}._autonomous_drain(link);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._autonomous_failed(text, text, text, text) IS
'pgdblink_safe internal: after an autonomous statement failed: 08007 when its connection '
'was lost, otherwise cancels what still runs and leaves the connection ready';
