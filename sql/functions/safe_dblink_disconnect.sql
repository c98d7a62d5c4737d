CREATE OR REPLACE FUNCTION {{ schema }}.safe_dblink_disconnect(conn_name text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    link text;
    was_open boolean;
BEGIN
    PERFORM {{ schema }}._check_user_name(conn_name);
    PERFORM {{ schema }}._sweep();
    link := {{ schema }}._link(conn_name);
    IF link <> conn_name THEN
        -- Closing it would leave its prepared remote transaction to the resolver.
        PERFORM {{ schema }}._refuse_prepared(link);
    END IF;
    was_open := (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE;
    IF was_open THEN
        -- Also ends a remote transaction open on it (rolled back by the remote server).
        PERFORM {{ dblink }}.dblink_disconnect(link);
    END IF;
    PERFORM {{ schema }}._forget(link);
    IF link <> conn_name THEN
        PERFORM pg_catalog.set_config({{ guc_mapped }} || {{ schema }}._key(conn_name), '', true);
    END IF;
    RETURN was_open;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}.safe_dblink_disconnect(text) IS
'pgdblink_safe: closes a connection and forgets it; true when it was open';
