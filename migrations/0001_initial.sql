-- pgdblink_safe migration 0001: schema dblink_safe, dblink in public
CREATE SCHEMA dblink_safe;
REVOKE ALL ON SCHEMA dblink_safe FROM PUBLIC;
COMMENT ON SCHEMA dblink_safe IS 'pgdblink_safe: safe dblink wrappers for PL/pgSQL';

CREATE TABLE dblink_safe.installed_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    settings jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    applied_by name NOT NULL DEFAULT CURRENT_USER
);
REVOKE ALL ON TABLE dblink_safe.installed_migrations FROM PUBLIC;
COMMENT ON TABLE dblink_safe.installed_migrations IS
'pgdblink_safe: one row per applied migration, written in the migration''s own transaction';

-- Per-connection state lives in session settings named after md5(conn_name):
--   <prefix>.t_<md5> the target given to ensure_dblink_conn, needed to reconnect;
--   <prefix>.u_<md5> epoch seconds of the last successful use.
-- Session settings cost about a microsecond to read, need no table, and work in read-only
-- transactions and on standbys. Like the dblink connection list they are per session; unlike
-- it they roll back with the transaction, so every function copes with a listed connection
-- whose state is missing.

CREATE FUNCTION dblink_safe._mask_target(target text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT pg_catalog.regexp_replace(
        pg_catalog.regexp_replace(
            pg_catalog.regexp_replace(
                target,
                -- key=value form: password = value, value quoted or bare
                $re$(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)$re$, '\1********', 'gi'),
            -- URI form: scheme://user:password@host
            $re$^([a-z]+://[^:/@?]*:)[^@/?]*@$re$, '\1********@', 'i'),
        -- URI query form: ?password=...&
        $re$([?&]password=)[^&]*$re$, '\1********', 'g');
$fn$;
COMMENT ON FUNCTION dblink_safe._mask_target(text) IS
'pgdblink_safe internal: a connection target with any password replaced by ********';

CREATE FUNCTION dblink_safe._scrub(message text, target text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    secret text;
    piece text;
BEGIN
    IF message IS NULL OR target IS NULL THEN
        RETURN message;
    END IF;
    -- libpq quotes fragments of a malformed connection string in its errors; any fragment of
    -- the password could be among them.
    FOR secret IN
        SELECT m[1]
        FROM pg_catalog.regexp_matches(
            target,
            $re$(?:password\s*=\s*'((?:[^'\\]|\\.)*)'?|password\s*=\s*(\S+)|^[a-z]+://[^:/@?]*:([^@/?]*)@|[?&]password=([^&]*))$re$,
            'gi') AS r(m0),
            LATERAL (SELECT ARRAY[COALESCE(m0[1], m0[2], m0[3], m0[4])]) AS x(m)
    LOOP
        CONTINUE WHEN secret IS NULL OR secret = '';
        message := pg_catalog.replace(message, secret, '********');
        FOREACH piece IN ARRAY pg_catalog.regexp_split_to_array(secret, $re$[\s'\\]+$re$) LOOP
            IF pg_catalog.length(piece) >= 2 THEN
                message := pg_catalog.replace(message, piece, '********');
            END IF;
        END LOOP;
    END LOOP;
    RETURN message;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._scrub(text, text) IS
'pgdblink_safe internal: an error text with every fragment of the target''s password masked';

CREATE FUNCTION dblink_safe._check_name(conn_name text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF conn_name IS NULL THEN
        RAISE EXCEPTION 'conn_name must not be NULL'
            USING ERRCODE = '22004',
                  HINT = 'Name the dblink connection, e.g. ''orders_remote''.';
    END IF;
    IF pg_catalog.btrim(conn_name) = '' THEN
        RAISE EXCEPTION 'conn_name must not be empty or blank'
            USING ERRCODE = '22023',
                  HINT = 'Name the dblink connection, e.g. ''orders_remote''.';
    END IF;
    -- dblink truncates longer names with only a NOTICE, which would let two names that share
    -- their first 63 bytes silently become one connection.
    IF pg_catalog.octet_length(conn_name) > 63 THEN
        RAISE EXCEPTION 'conn_name "%..." is % bytes long; dblink connection names are limited to 63 bytes',
                pg_catalog.left(conn_name, 20), pg_catalog.octet_length(conn_name)
            USING ERRCODE = '22023',
                  HINT = 'Use a shorter connection name.';
    END IF;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._check_name(text) IS
'pgdblink_safe internal: rejects a NULL, blank or over-long connection name';

CREATE FUNCTION dblink_safe._is_broken(sqlstate text, message text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
    -- Class 08 and the server's shutdown and idle-timeout codes mean the connection is gone;
    -- dblink's row-returning function reports a failed send as XX000 with this message only.
    SELECT pg_catalog.left(sqlstate, 2) = '08'
        OR sqlstate IN ('57P01', '57P02', '57P03', '57P05', '25P03')
        OR (sqlstate = 'XX000' AND message LIKE 'could not send query%');
$fn$;
COMMENT ON FUNCTION dblink_safe._is_broken(text, text) IS
'pgdblink_safe internal: true when an error means the dblink connection is broken';

CREATE FUNCTION dblink_safe._is_alive(conn_name text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    err_state text;
    err_message text;
BEGIN
    -- A one-row query is the cheapest statement dblink accepts on every version that
    -- reaches the remote and leaves nothing behind.
    PERFORM 1 FROM public.dblink(conn_name, 'SELECT 1') AS probe(one integer);
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    -- Any other error (a remote transaction in failed state, say) came from a live remote.
    RETURN NOT dblink_safe._is_broken(err_state, err_message);
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._is_alive(text) IS
'pgdblink_safe internal: proves a listed dblink connection alive with one round trip';

CREATE FUNCTION dblink_safe._open(conn_name text, target text, listed boolean)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text := pg_catalog.md5(conn_name);
    conninfo text := target;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    IF listed THEN
        -- dblink_disconnect also works on a dead connection and frees the name.
        PERFORM public.dblink_disconnect(conn_name);
    END IF;
    -- dblink takes a target that names a foreign server as that server; anything else is a
    -- connection string, which gets the safe defaults first so the caller's own values win.
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server WHERE srvname = target) THEN
        IF target ~* '^postgres(ql)?://' THEN
            conninfo := CASE
                WHEN pg_catalog.strpos(target, '?') > 0
                    THEN pg_catalog.regexp_replace(target, '\?', '?' || pg_catalog.replace('connect_timeout=10 keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3 tcp_user_timeout=60000', ' ', '&') || '&')
                ELSE target || '?' || pg_catalog.replace('connect_timeout=10 keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3 tcp_user_timeout=60000', ' ', '&')
            END;
        ELSE
            conninfo := 'connect_timeout=10 keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3 tcp_user_timeout=60000' || ' ' || target;
        END IF;
    END IF;
    BEGIN
        PERFORM public.dblink_connect(conn_name, conninfo);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                err_message = MESSAGE_TEXT,
                                err_detail = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION 'could not open dblink connection "%"', conn_name
            USING ERRCODE = err_state,
                  DETAIL = dblink_safe._scrub(
                      pg_catalog.concat_ws(': ', err_message, NULLIF(err_detail, '')), target),
                  HINT = pg_catalog.format(
                      'Tried dblink_connect to %s. Check that the server is reachable and '
                      'accepts these credentials; a foreign server with a user mapping keeps '
                      'passwords out of your code.',
                      dblink_safe._mask_target(target));
    END;
    PERFORM pg_catalog.set_config('dblink_safe.t_' || key, target, false);
    PERFORM pg_catalog.set_config('dblink_safe.u_' || key,
        EXTRACT(epoch FROM pg_catalog.clock_timestamp())::text, false);
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._open(text, text, boolean) IS
'pgdblink_safe internal: (re)opens a named dblink connection and remembers its target';

CREATE FUNCTION dblink_safe._usable(conn_name text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    last_used text;
BEGIN
    -- Reading pending input lets libpq notice a connection the server already closed
    -- (terminated backend, restart, idle timeout) without a round trip: the first read takes
    -- the server's goodbye message, the second meets the closed socket.
    IF public.dblink_is_busy(conn_name) = 1 OR public.dblink_is_busy(conn_name) = 1 THEN
        RAISE EXCEPTION 'dblink connection "%" is busy with another query', conn_name
            USING ERRCODE = '55000',
                  HINT = 'Collect its result with dblink_get_result or stop it with '
                         'dblink_cancel_query before running another statement on it.';
    END IF;
    IF public.dblink_error_message(conn_name) <> 'OK' THEN
        RETURN dblink_safe._is_alive(conn_name);
    END IF;
    last_used := pg_catalog.current_setting(
        'dblink_safe.u_' || pg_catalog.md5(conn_name), true);
    IF last_used IS NULL OR last_used = ''
       OR EXTRACT(epoch FROM pg_catalog.clock_timestamp()) - last_used::numeric
          > 1.0
    THEN
        RETURN dblink_safe._is_alive(conn_name);
    END IF;
    RETURN true;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._usable(text) IS
'pgdblink_safe internal: false when a listed dblink connection is known to be dead';

CREATE FUNCTION dblink_safe.ensure_dblink_conn(conn_name text, target text)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text;
    remembered text;
BEGIN
    PERFORM dblink_safe._check_name(conn_name);
    IF target IS NULL THEN
        RAISE EXCEPTION 'target must not be NULL'
            USING ERRCODE = '22004',
                  HINT = 'Pass a foreign server name or a libpq connection string.';
    END IF;
    IF pg_catalog.btrim(target) = '' THEN
        RAISE EXCEPTION 'target must not be empty or blank'
            USING ERRCODE = '22023',
                  HINT = 'Pass a foreign server name or a libpq connection string.';
    END IF;
    key := pg_catalog.md5(conn_name);
    IF (conn_name = ANY (public.dblink_get_connections())) IS NOT TRUE THEN
        PERFORM dblink_safe._open(conn_name, target, false);
        RETURN 'connected';
    END IF;
    remembered := pg_catalog.current_setting('dblink_safe.t_' || key, true);
    -- A listed connection is reused only when it is known to point at this target: one whose
    -- state was rolled back, or that was opened by plain dblink_connect, could point anywhere.
    IF remembered IS NOT DISTINCT FROM target AND dblink_safe._usable(conn_name) THEN
        PERFORM pg_catalog.set_config('dblink_safe.u_' || key,
            EXTRACT(epoch FROM pg_catalog.clock_timestamp())::text, false);
        RETURN 'reused';
    END IF;
    PERFORM dblink_safe._open(conn_name, target, true);
    RETURN 'reconnected';
END;
$fn$;
COMMENT ON FUNCTION dblink_safe.ensure_dblink_conn(text, text) IS
'pgdblink_safe: opens the named dblink connection to target (a foreign server name or a '
'connection string) if missing, replaces it if dead; returns reused, connected or reconnected';

CREATE FUNCTION dblink_safe.safe_dblink_exec(conn_name text, sql text)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text;
    target text;
    status text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    PERFORM dblink_safe._check_name(conn_name);
    IF sql IS NULL THEN
        RAISE EXCEPTION 'sql must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass the statement to run on the remote server.';
    END IF;
    key := pg_catalog.md5(conn_name);
    target := NULLIF(pg_catalog.current_setting('dblink_safe.t_' || key, true), '');
    -- dblink_exec would read an unknown name as a foreign server or connection string and
    -- either fail with a parse error or run the statement somewhere else.
    IF (conn_name = ANY (public.dblink_get_connections())) IS NOT TRUE THEN
        IF target IS NULL THEN
            RAISE EXCEPTION 'dblink connection "%" does not exist', conn_name
                USING ERRCODE = '08003',
                      HINT = pg_catalog.format(
                          'Open it first with SELECT %s.ensure_dblink_conn(%L, <foreign server or connection string>).',
                          'dblink_safe', conn_name);
        END IF;
        PERFORM dblink_safe._open(conn_name, target, false);
    ELSIF NOT dblink_safe._usable(conn_name) THEN
        IF target IS NULL THEN
            PERFORM public.dblink_disconnect(conn_name);
            RAISE EXCEPTION 'dblink connection "%" is broken and was closed; its target is unknown', conn_name
                USING ERRCODE = '08003',
                      DETAIL = 'It was not opened by ensure_dblink_conn in this session, or that '
                               'call was rolled back, so it cannot be reopened.',
                      HINT = pg_catalog.format(
                          'Open it with SELECT %s.ensure_dblink_conn(%L, <target>) before use.',
                          'dblink_safe', conn_name);
        END IF;
        PERFORM dblink_safe._open(conn_name, target, true);
    END IF;
    BEGIN
        status := public.dblink_exec(conn_name, sql);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                err_message = MESSAGE_TEXT,
                                err_detail = PG_EXCEPTION_DETAIL;
        IF NOT dblink_safe._is_broken(err_state, err_message) THEN
            RAISE;
        END IF;
        -- The statement was sent and the connection broke before the reply: it may or may
        -- not have been applied, so it is not retried. Closing the dead handle lets the next
        -- call reconnect.
        PERFORM public.dblink_disconnect(conn_name);
        RAISE EXCEPTION 'dblink connection "%" was lost while running a statement; it may or may not have been applied', conn_name
            USING ERRCODE = '08007',
                  DETAIL = pg_catalog.format('Original error (SQLSTATE %s): %s', err_state,
                      dblink_safe._scrub(pg_catalog.concat_ws(': ', err_message, NULLIF(err_detail, '')), target)),
                  HINT = 'Check on the remote server whether the statement took effect before '
                         'running it again; the next call reconnects.';
    END;
    PERFORM pg_catalog.set_config('dblink_safe.u_' || key,
        EXTRACT(epoch FROM pg_catalog.clock_timestamp())::text, false);
    RETURN status;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe.safe_dblink_exec(text, text) IS
'pgdblink_safe: dblink_exec on a connection that is proved usable first and reopened '
'from its remembered target when it died before the statement was sent';

-- Nothing here is for PUBLIC: grant EXECUTE (and USAGE on the schema) to the roles that use it.
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA dblink_safe FROM PUBLIC;
