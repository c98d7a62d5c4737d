CREATE OR REPLACE FUNCTION {{ schema }}._lost_connection(
    link text, err_state text, err_message text, committing boolean
)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    listed boolean := (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE;
BEGIN
    -- A COMMIT cut off by the call's own timeout (which closed the connection) or by a local
    -- cancel (the COMMIT still running: the connection is closed here) may commit all the
    -- same: lost, for the caller to resolve. Any other cancel is not about the connection.
    IF err_state = '57014' THEN
        IF NOT committing THEN
            RETURN false;
        END IF;
        IF listed AND {{ dblink }}.dblink_is_busy(link) = 1 THEN
            PERFORM {{ dblink }}.dblink_disconnect(link);
            RETURN true;
        END IF;
        RETURN NOT listed;
    END IF;
    -- An error that can mean a broken connection, from a connection that no longer answers:
    -- a remote RAISE of 08006 lost nothing. dblink also reports an empty result as 08006,
    -- with the connection's own message still 'OK'; _forget_broken tells that apart.
    RETURN {{ schema }}._is_broken(err_state, err_message)
       AND NOT (listed AND {{ dblink }}.dblink_error_message(link) <> 'OK'
                AND {{ schema }}._is_alive(link));
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._lost_connection(text, text, text, boolean) IS
'pgdblink_safe internal: true when an error after sending means the connection is lost (and '
'its statement''s outcome unknown), false when it is the remote''s own error';
