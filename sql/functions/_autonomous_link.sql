CREATE OR REPLACE FUNCTION {{ schema }}._autonomous_link()
RETURNS text
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    -- One connection per session and role. A role name can take the whole 63 bytes of a
    -- dblink name: a longer link uses the name's hash, under a prefix no role name can share.
    link text := 'autonomous:' || CURRENT_USER;
    key text;
    state text;
    socket_dir text;
    target text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    IF pg_catalog.octet_length(link) > 63 THEN
        link := 'autonomous#' || pg_catalog.md5(CURRENT_USER::text);
    END IF;
    -- Used within the validation window, not due for recycling, idle and healthy: as
    -- safe_dblink_exec's hot path, the connection is used as it is. Whatever it leads to is
    -- checked again by the statement's own query string (_autonomous_send).
    key := {{ guc_hot }} || pg_catalog.encode(pg_catalog.convert_to(link, 'SQL_ASCII'), 'hex');
    state := pg_catalog.current_setting(key, true);
    IF state <> ''
       AND pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())
           - pg_catalog.split_part(state, ' ', 1)::double precision
           <= {{ validation_window_s }}
       AND (pg_catalog.split_part(state, ' ', 3) = '0'
            OR pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())
               < pg_catalog.split_part(state, ' ', 3)::double precision)
       AND (pg_catalog.split_part(state, ' ', 4) = '0'
            OR pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())
               - pg_catalog.split_part(state, ' ', 1)::double precision
               <= pg_catalog.split_part(state, ' ', 4)::double precision)
       AND (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE
       AND {{ dblink }}.dblink_is_busy(link) = 0
       AND {{ dblink }}.dblink_is_busy(link) = 0
       AND {{ dblink }}.dblink_error_message(link) = 'OK' THEN
        RETURN link;
    END IF;
    IF {{ autonomous_server }} <> '' THEN
        PERFORM {{ schema }}.ensure_dblink_conn(link, {{ autonomous_server }});
        RETURN link;
    END IF;
    BEGIN
        -- The server's own first socket directory (or the loopback interface where it has
        -- none) and port, quoted as libpq wants them. Reading the socket directory needs
        -- pg_read_all_settings, as connecting without a password needs a superuser.
        socket_dir := pg_catalog.btrim(pg_catalog.split_part(
            pg_catalog.current_setting('unix_socket_directories'), ',', 1));
        target := pg_catalog.format('host=''%s'' port=''%s'' dbname=''%s'' user=''%s''',
            pg_catalog.replace(pg_catalog.replace(COALESCE(NULLIF(socket_dir, ''), 'localhost'),
                '\', '\\'), '''', '\'''),
            pg_catalog.current_setting('port'),
            pg_catalog.replace(pg_catalog.replace(pg_catalog.current_database()::text,
                '\', '\\'), '''', '\'''),
            pg_catalog.replace(pg_catalog.replace(CURRENT_USER::text,
                '\', '\\'), '''', '\'''));
        PERFORM {{ schema }}.ensure_dblink_conn(link, target);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                err_message = MESSAGE_TEXT,
                                err_detail = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION 'could not open the autonomous connection of role % to this server''s own socket', CURRENT_USER
            USING ERRCODE = err_state,
                  DETAIL = pg_catalog.concat_ws(': ', err_message, NULLIF(err_detail, '')),
                  HINT = 'Without the autonomous_server setting, only roles that may connect without a '
                         'password (superusers) can use it: install with --autonomous-server naming a '
                         'foreign server for this database, and give this role a user mapping on it '
                         'with its password.';
    END;
    RETURN link;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._autonomous_link() IS
'pgdblink_safe internal: the autonomous connection of the current role, opened or healed; '
'returns its dblink name';
