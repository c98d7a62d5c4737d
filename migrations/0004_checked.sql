-- pgdblink_safe migration 0004: schema dblink_safe, dblink in public

CREATE OR REPLACE FUNCTION dblink_safe._open(conn_name text, target text, listed boolean)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text := dblink_safe._key(conn_name);
    info jsonb := dblink_safe._meta(conn_name);
    now_s numeric;
    lifetime numeric := COALESCE((info ->> 'max_lifetime_s')::numeric, 0);
    recycle_at numeric := 0.0;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    IF listed THEN
        -- dblink_disconnect also works on a dead connection and frees the name.
        PERFORM public.dblink_disconnect(conn_name);
    END IF;
    BEGIN
        PERFORM public.dblink_connect(conn_name, dblink_safe._conninfo(target));
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
    now_s := EXTRACT(epoch FROM pg_catalog.clock_timestamp());
    IF lifetime > 0 THEN
        -- Up to 10 % earlier, so that sessions opened together do not all reconnect together.
        recycle_at := now_s + lifetime * (1 - 0.1 * pg_catalog.random()::numeric);
    END IF;
    PERFORM pg_catalog.set_config('dblink_safe.t_' || key, target, false);
    -- Zero is written as '0' so that the hot path can test it as text.
    PERFORM pg_catalog.set_config(
        'dblink_safe.h_' || key,
        pg_catalog.concat_ws(' ',
            now_s,
            COALESCE(NULLIF(pg_catalog.split_part(
                pg_catalog.current_setting('dblink_safe.h_' || key, true), ' ', 2), ''), '0'),
            CASE WHEN recycle_at > 0 THEN pg_catalog.round(recycle_at, 6)::text ELSE '0' END,
            CASE WHEN (info ->> 'max_idle_s')::numeric > 0 THEN info ->> 'max_idle_s' ELSE '0' END,
            0),
        false);
    PERFORM dblink_safe._note(conn_name, pg_catalog.jsonb_build_object(
        'opened_at', now_s,
        'reconnects', COALESCE((info ->> 'reconnects')::integer, -1) + 1,
        'scope', COALESCE(info ->> 'scope', 'session')));
    PERFORM dblink_safe._track(conn_name, true);
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._open(text, text, boolean) IS
'pgdblink_safe internal: (re)opens a named dblink connection and resets its bookkeeping';

CREATE OR REPLACE FUNCTION dblink_safe._prepare(
    conn_name text, window_s numeric, max_attempts integer, budget_s numeric
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text;
    target text;
    state text;
    now_s numeric := EXTRACT(epoch FROM pg_catalog.clock_timestamp());
    in_tx boolean;
    alive boolean;
BEGIN
    PERFORM dblink_safe._check_name(conn_name);
    IF window_s IS NULL OR window_s < 0 THEN
        RAISE EXCEPTION 'validation_window must not be negative' USING ERRCODE = '22023';
    END IF;
    key := dblink_safe._key(conn_name);
    target := NULLIF(pg_catalog.current_setting('dblink_safe.t_' || key, true), '');
    state := NULLIF(pg_catalog.current_setting('dblink_safe.h_' || key, true), '');
    in_tx := pg_catalog.split_part(state, ' ', 5) = '1';
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
        -- A remote transaction it had open was lost when it was closed: reported then (the
        -- toolkit closes a broken one only while raising), or closed on purpose.
        PERFORM dblink_safe._reopen(conn_name, target, false, max_attempts, budget_s);
        RETURN;
    END IF;
    IF public.dblink_is_busy(conn_name) = 1 OR public.dblink_is_busy(conn_name) = 1 THEN
        -- A result nobody collected (a cancelled call, an abandoned dblink_send_query): the
        -- connection is replaced rather than drained, which could wait without bound (below).
        NULL;
    ELSIF state IS NOT NULL AND NOT in_tx AND (
           (pg_catalog.split_part(state, ' ', 3) <> '0'
            AND now_s >= pg_catalog.split_part(state, ' ', 3)::numeric)
        OR (pg_catalog.split_part(state, ' ', 4) <> '0'
            AND now_s - pg_catalog.split_part(state, ' ', 1)::numeric
                > pg_catalog.split_part(state, ' ', 4)::numeric)) THEN
        -- Past its lifetime or idle beyond its limit: replaced without asking (below).
        NULL;
    ELSIF public.dblink_error_message(conn_name) <> 'OK'
          OR state IS NULL
          OR now_s - pg_catalog.split_part(state, ' ', 1)::numeric > window_s THEN
        alive := dblink_safe._is_alive(conn_name);
        PERFORM dblink_safe._note(conn_name, pg_catalog.jsonb_build_object(
            'validated', alive, 'validated_at', now_s));
        IF alive THEN
            PERFORM pg_catalog.set_config('dblink_safe.h_' || key,
                pg_catalog.concat_ws(' ', now_s,
                    COALESCE(NULLIF(pg_catalog.split_part(state, ' ', 2), ''), '0'),
                    COALESCE(NULLIF(pg_catalog.split_part(state, ' ', 3), ''), '0'),
                    COALESCE(NULLIF(pg_catalog.split_part(state, ' ', 4), ''), '0'),
                    CASE WHEN in_tx THEN 1 ELSE 0 END),
                false);
            RETURN;
        END IF;
    ELSE
        RETURN;
    END IF;
    -- Dead, busy or due for recycling.
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
    IF in_tx THEN
        PERFORM public.dblink_disconnect(conn_name);
        RAISE EXCEPTION 'dblink connection "%" broke inside an open remote transaction', conn_name
            USING ERRCODE = '08006',
                  DETAIL = 'The remote transaction is lost; reconnecting silently would drop its work.',
                  HINT = 'Roll back and start the unit of work again; the next call reconnects.';
    END IF;
    PERFORM dblink_safe._reopen(conn_name, target, true, max_attempts, budget_s);
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._prepare(text, numeric, integer, numeric) IS
'pgdblink_safe internal: makes a connection usable (the slow path of every call) or raises';

CREATE OR REPLACE FUNCTION dblink_safe._status(conn_name text, sql text, timeout_s numeric)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    status text;
BEGIN
    IF timeout_s IS NULL THEN
        RETURN public.dblink_exec(conn_name, sql);
    END IF;
    PERFORM dblink_safe._wait(conn_name, sql, timeout_s, pg_catalog.clock_timestamp());
    BEGIN
        SELECT r.status INTO status FROM public.dblink_get_result(conn_name) AS r(status text);
    EXCEPTION WHEN OTHERS THEN
        -- Leave the connection ready for the next statement, then report the remote error.
        BEGIN
            PERFORM 1 FROM public.dblink_get_result(conn_name, false) AS r(ignored text);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
        RAISE;
    END;
    -- The empty result that ends an asynchronous query must be read before the next one.
    PERFORM 1 FROM public.dblink_get_result(conn_name) AS r(status text);
    RETURN status;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._status(text, text, numeric) IS
'pgdblink_safe internal: runs a command, synchronously or with a timeout, returning its status';

CREATE FUNCTION dblink_safe._check_options(
    timeout interval,
    validation_window interval,
    max_attempts integer,
    retry_budget interval,
    max_lifetime interval,
    max_idle interval
)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- NULL means the installed default. The upper limits catch a unit mistake (minutes for
    -- seconds, a stray digit) before it turns into a wait nobody meant.
    IF timeout <= interval '0' OR timeout > interval '1 day' THEN
        RAISE EXCEPTION 'timeout must be more than 0 and at most 1 day, not %', timeout
            USING ERRCODE = '22023', HINT = 'Leave it NULL to wait as long as the statement runs.';
    END IF;
    IF validation_window < interval '0' OR validation_window > interval '1 day' THEN
        RAISE EXCEPTION 'validation_window must be from 0 to 1 day, not %', validation_window
            USING ERRCODE = '22023', HINT = '0 proves the connection alive before every statement.';
    END IF;
    IF max_attempts < 1 OR max_attempts > 100 THEN
        RAISE EXCEPTION 'max_attempts must be from 1 to 100, not %', max_attempts
            USING ERRCODE = '22023', HINT = '1 means no retry.';
    END IF;
    IF retry_budget < interval '0' OR retry_budget > interval '1 hour' THEN
        RAISE EXCEPTION 'retry_budget must be from 0 to 1 hour, not %', retry_budget
            USING ERRCODE = '22023';
    END IF;
    IF max_lifetime < interval '0' OR max_lifetime > interval '365 days' THEN
        RAISE EXCEPTION 'max_lifetime must be from 0 (no limit) to 365 days, not %', max_lifetime
            USING ERRCODE = '22023';
    END IF;
    IF max_idle < interval '0' OR max_idle > interval '365 days' THEN
        RAISE EXCEPTION 'max_idle must be from 0 (no limit) to 365 days, not %', max_idle
            USING ERRCODE = '22023';
    END IF;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._check_options(
    interval, interval, integer, interval, interval, interval
) IS
'pgdblink_safe internal: 22023 for an option outside its range, naming the option';

CREATE OR REPLACE FUNCTION dblink_safe.ensure_dblink_conn(
    conn_name text,
    target text,
    max_lifetime interval DEFAULT NULL,
    max_idle interval DEFAULT NULL,
    validation_window interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_budget interval DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text;
    remembered text;
    lifetime_s numeric := COALESCE(
        EXTRACT(epoch FROM max_lifetime), 0.0);
    idle_s numeric := COALESCE(
        EXTRACT(epoch FROM max_idle), 0.0);
    attempts integer := COALESCE(max_attempts, 5);
    budget_s numeric := COALESCE(
        EXTRACT(epoch FROM retry_budget), 10.0);
    window_s numeric := COALESCE(
        EXTRACT(epoch FROM validation_window), 1.0);
    listed boolean;
    opened text;
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
    PERFORM dblink_safe._check_options(
        NULL, validation_window, max_attempts, retry_budget, max_lifetime, max_idle);
    key := dblink_safe._key(conn_name);
    remembered := pg_catalog.current_setting('dblink_safe.t_' || key, true);
    listed := (conn_name = ANY (public.dblink_get_connections())) IS TRUE;
    PERFORM dblink_safe._note(conn_name, pg_catalog.jsonb_build_object(
        'max_lifetime_s', lifetime_s, 'max_idle_s', idle_s));
    IF NOT listed THEN
        PERFORM dblink_safe._reopen(conn_name, target, false, attempts, budget_s);
        RETURN 'connected';
    END IF;
    -- A listed connection is reused only when it is known to point at this target: one whose
    -- state was rolled back, or that was opened by plain dblink_connect, could point anywhere.
    IF remembered IS NOT DISTINCT FROM target THEN
        opened := dblink_safe._meta(conn_name) ->> 'opened_at';
        PERFORM dblink_safe._prepare(conn_name, window_s, attempts, budget_s);
        IF (dblink_safe._meta(conn_name) ->> 'opened_at') IS DISTINCT FROM opened THEN
            RETURN 'reconnected';
        END IF;
        RETURN 'reused';
    END IF;
    PERFORM dblink_safe._reopen(conn_name, target, true, attempts, budget_s);
    RETURN 'reconnected';
END;
$fn$;
COMMENT ON FUNCTION dblink_safe.ensure_dblink_conn(
    text,
    text,
    interval,
    interval,
    interval,
    integer,
    interval
) IS
'pgdblink_safe: opens the named dblink connection to target (a foreign server name or a '
'connection string) if missing, replaces it if dead; returns reused, connected or reconnected';

CREATE OR REPLACE FUNCTION dblink_safe._exec(
    conn_name text,
    sql text,
    idempotent boolean,
    timeout interval,
    resolve boolean,
    validation_window interval,
    max_attempts integer,
    retry_budget interval,
    failure jsonb
)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text := dblink_safe._key(conn_name);
    state text := pg_catalog.current_setting('dblink_safe.h_' || key, true);
    window_s numeric := CASE WHEN validation_window IS NULL
        THEN 1.0
        ELSE EXTRACT(epoch FROM validation_window) END;
    started timestamptz := pg_catalog.clock_timestamp();
    timeout_s numeric := EXTRACT(epoch FROM timeout);
    attempts integer := COALESCE(max_attempts, 5);
    budget_s numeric := CASE WHEN retry_budget IS NULL
        THEN 10.0
        ELSE EXTRACT(epoch FROM retry_budget) END;
    attempt integer := 1;
    status text;
    xid text;
    outcome text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    IF sql IS NULL THEN
        RAISE EXCEPTION 'sql must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass the statement to run on the remote server.';
    END IF;
    IF pg_catalog.btrim(sql, E' \t\n\r;') = '' THEN
        RAISE EXCEPTION 'sql must hold a statement, not only blanks'
            USING ERRCODE = '22023', HINT = 'Pass the statement to run on the remote server.';
    END IF;
    IF idempotent IS NULL OR resolve IS NULL THEN
        RAISE EXCEPTION 'idempotent and resolve must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM dblink_safe._check_options(
        timeout, validation_window, max_attempts, retry_budget, NULL, NULL);
    IF failure IS NULL THEN
        PERFORM dblink_safe._prepare(conn_name, window_s, attempts, budget_s);
        state := pg_catalog.current_setting('dblink_safe.h_' || key, true);
        IF resolve AND pg_catalog.split_part(state, ' ', 5) = '1' THEN
            RAISE EXCEPTION 'resolve => true needs dblink connection "%" outside a remote transaction', conn_name
                USING ERRCODE = '25001',
                      HINT = 'The toolkit commits the statement itself; commit or roll back the open remote transaction first.';
        END IF;
    END IF;
    LOOP
        IF failure IS NOT NULL THEN
            -- The hot path's first attempt broke after sending: carry on from there.
            err_state := failure ->> 'state';
            err_message := failure ->> 'message';
            err_detail := failure ->> 'detail';
            failure := NULL;
        ELSE
            BEGIN
                IF resolve THEN
                    SELECT r.x INTO xid FROM public.dblink(conn_name,
                        'BEGIN; SELECT pg_catalog.pg_current_xact_id()::text') AS r(x text);
                    status := dblink_safe._status(conn_name, sql, timeout_s);
                    -- Only the COMMIT's outcome can be unknown: a failure before it leaves
                    -- nothing committed, and pg_xact_status tells what became of the COMMIT.
                    PERFORM dblink_safe._status(conn_name, 'COMMIT', timeout_s);
                ELSIF timeout_s IS NULL THEN
                    status := public.dblink_exec(conn_name, sql);
                ELSE
                    status := dblink_safe._status(conn_name, sql, timeout_s);
                END IF;
                EXIT;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                        err_message = MESSAGE_TEXT,
                                        err_detail = PG_EXCEPTION_DETAIL;
                IF NOT dblink_safe._is_broken(err_state, err_message) THEN
                    IF resolve AND xid IS NOT NULL
                       AND (conn_name = ANY (public.dblink_get_connections())) IS TRUE THEN
                        -- A remote error inside the toolkit's own transaction: end it.
                        PERFORM public.dblink_exec(conn_name, 'ROLLBACK', false);
                    END IF;
                    RAISE;
                END IF;
            END;
        END IF;
        -- The connection broke after the statement was sent.
        PERFORM dblink_safe._forget_broken(conn_name, pg_catalog.split_part(state, ' ', 5) = '1',
            err_state, err_message, err_detail);
        IF resolve AND status IS NOT NULL THEN
            outcome := dblink_safe._resolve(conn_name, xid, attempts, budget_s);
            EXIT WHEN outcome = 'committed';
            IF outcome <> 'aborted' THEN
                PERFORM dblink_safe._lost(conn_name, err_state, err_message, err_detail,
                    pg_catalog.format(' (remote transaction %s is %s)', xid, outcome));
            END IF;
        END IF;
        -- Repeatable: idempotent, or (resolving) known not to have committed.
        PERFORM dblink_safe._next_attempt(conn_name, err_state, err_message, err_detail,
            idempotent OR resolve, attempt, attempts, started, budget_s, window_s);
        attempt := attempt + 1;
        xid := NULL;
        status := NULL;
        state := pg_catalog.current_setting('dblink_safe.h_' || key, true);
    END LOOP;
    IF outcome IS NOT NULL THEN
        state := pg_catalog.current_setting('dblink_safe.h_' || key, true);
    END IF;
    PERFORM pg_catalog.set_config('dblink_safe.h_' || key,
        pg_catalog.concat_ws(' ',
            EXTRACT(epoch FROM pg_catalog.clock_timestamp()),
            pg_catalog.split_part(state, ' ', 2)::bigint + 1,
            pg_catalog.split_part(state, ' ', 3),
            pg_catalog.split_part(state, ' ', 4),
            CASE
                WHEN status IN ('BEGIN', 'START TRANSACTION', 'SAVEPOINT') THEN '1'
                WHEN status IN ('COMMIT', 'ROLLBACK', 'PREPARE TRANSACTION') THEN '0'
                ELSE pg_catalog.split_part(state, ' ', 5)
            END),
        false);
    RETURN status;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._exec(
    text,
    text,
    boolean,
    interval,
    boolean,
    interval,
    integer,
    interval,
    jsonb
) IS
'pgdblink_safe internal: safe_dblink_exec''s full path: validation, reconnects, safe retries';

CREATE OR REPLACE FUNCTION dblink_safe.safe_dblink_exec(
    conn_name text,
    sql text,
    idempotent boolean DEFAULT FALSE,
    timeout interval DEFAULT NULL,
    resolve boolean DEFAULT FALSE,
    validation_window interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_budget interval DEFAULT NULL
)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    -- The setting's full name, computed inline: a call of _key would cost more than the rest
    -- of the checks together.
    key text := 'dblink_safe.h_' || pg_catalog.encode(pg_catalog.convert_to(conn_name, 'SQL_ASCII'), 'hex');
    state text := pg_catalog.current_setting(key, true);
    -- NULL until the statement is sent (no initializer: one expression fewer to evaluate).
    sent boolean;
    status text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    -- The hot path: a connection used within the validation window, not due for recycling,
    -- called without options that need the full path. Every expression here is evaluated
    -- as a plain expression (no query, no nested plpgsql call), in floating point.
    IF state <> ''
       AND sql IS NOT NULL AND idempotent IS NOT NULL AND timeout IS NULL
       AND resolve IS FALSE AND validation_window IS NULL
       AND max_attempts IS NULL AND retry_budget IS NULL
       AND pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())
           - pg_catalog.split_part(state, ' ', 1)::double precision
           <= 1.0
       AND (pg_catalog.split_part(state, ' ', 3) = '0'
            OR pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())
               < pg_catalog.split_part(state, ' ', 3)::double precision)
       AND (pg_catalog.split_part(state, ' ', 4) = '0'
            OR pg_catalog.date_part('epoch', pg_catalog.clock_timestamp())
               - pg_catalog.split_part(state, ' ', 1)::double precision
               <= pg_catalog.split_part(state, ' ', 4)::double precision)
    THEN
        BEGIN
            -- dblink_is_busy raises 08003 for a name dblink does not list, which takes the
            -- full path below. Its two reads of pending input are how libpq learns that the
            -- server closed the connection: the first takes the server's goodbye message,
            -- the second meets the closed socket and sets the error message.
            IF public.dblink_is_busy(conn_name) = 0
               AND public.dblink_is_busy(conn_name) = 0
               AND public.dblink_error_message(conn_name) = 'OK' THEN
                sent := true;
                status := public.dblink_exec(conn_name, sql);
                -- Written inside the block to save a statement; an assignment, not PERFORM,
                -- takes plpgsql's fast path for simple expressions.
                state := pg_catalog.set_config(key,
                    pg_catalog.concat_ws(' ',
                        pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()),
                        pg_catalog.split_part(state, ' ', 2)::bigint + 1,
                        pg_catalog.split_part(state, ' ', 3),
                        pg_catalog.split_part(state, ' ', 4),
                        CASE
                            WHEN status IN ('BEGIN', 'START TRANSACTION', 'SAVEPOINT') THEN '1'
                            WHEN status IN ('COMMIT', 'ROLLBACK', 'PREPARE TRANSACTION') THEN '0'
                            ELSE pg_catalog.split_part(state, ' ', 5)
                        END),
                    false);
                RETURN status;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            -- Before sending nothing has happened: the full path starts over. After sending,
            -- a remote error is the caller's; a lost connection goes to the full path, which
            -- knows whether the statement may run again.
            IF sent THEN
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                        err_message = MESSAGE_TEXT,
                                        err_detail = PG_EXCEPTION_DETAIL;
                IF NOT dblink_safe._is_broken(err_state, err_message) THEN
                    RAISE;
                END IF;
                RETURN dblink_safe._exec(conn_name, sql, idempotent, timeout, resolve,
                    validation_window, max_attempts, retry_budget,
                    pg_catalog.jsonb_build_object(
                        'state', err_state, 'message', err_message, 'detail', err_detail));
            END IF;
        END;
    END IF;
    RETURN dblink_safe._exec(conn_name, sql, idempotent, timeout, resolve,
        validation_window, max_attempts, retry_budget, NULL);
END;
$fn$;
COMMENT ON FUNCTION dblink_safe.safe_dblink_exec(
    text,
    text,
    boolean,
    interval,
    boolean,
    interval,
    integer,
    interval
) IS
'pgdblink_safe: dblink_exec on a connection proved usable first; retries only what cannot be '
'applied twice, raises 08007 when the outcome is unknown';

CREATE OR REPLACE FUNCTION dblink_safe.safe_dblink_query(
    conn_name text,
    sql text,
    row_type anyelement,
    idempotent boolean DEFAULT FALSE,
    timeout interval DEFAULT NULL,
    validation_window interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_budget interval DEFAULT NULL
)
RETURNS SETOF anyelement
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text := dblink_safe._key(conn_name);
    type_oid oid := pg_catalog.pg_typeof(row_type)::oid;
    columns text;
    window_s numeric := COALESCE(
        EXTRACT(epoch FROM validation_window), 1.0);
    attempts integer := COALESCE(max_attempts, 5);
    budget_s numeric := COALESCE(
        EXTRACT(epoch FROM retry_budget), 10.0);
    timeout_s numeric := EXTRACT(epoch FROM timeout);
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 1;
    state text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    IF sql IS NULL THEN
        RAISE EXCEPTION 'sql must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF pg_catalog.btrim(sql, E' \t\n\r;') = '' THEN
        RAISE EXCEPTION 'sql must hold a statement, not only blanks'
            USING ERRCODE = '22023', HINT = 'Pass the statement to run on the remote server.';
    END IF;
    IF idempotent IS NULL THEN
        RAISE EXCEPTION 'idempotent must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM dblink_safe._check_options(
        timeout, validation_window, max_attempts, retry_budget, NULL, NULL);
    -- The column definition list dblink needs, from the row type the caller passed.
    SELECT pg_catalog.string_agg(
               pg_catalog.format('%I %s', a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)),
               ', ' ORDER BY a.attnum)
    INTO columns
    FROM pg_catalog.pg_type t
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid
    WHERE t.oid = type_oid AND a.attnum > 0 AND NOT a.attisdropped;
    IF columns IS NULL THEN
        columns := 'value ' || pg_catalog.format_type(type_oid, NULL);
    END IF;
    PERFORM dblink_safe._prepare(conn_name, window_s, attempts, budget_s);
    state := pg_catalog.current_setting('dblink_safe.h_' || key, true);
    LOOP
        BEGIN
            IF timeout_s IS NULL THEN
                RETURN QUERY EXECUTE pg_catalog.format(
                    'SELECT * FROM %s.dblink($1, $2) AS r(%s)', 'public', columns)
                    USING conn_name, sql;
            ELSE
                PERFORM dblink_safe._wait(conn_name, sql, timeout_s, pg_catalog.clock_timestamp());
                RETURN QUERY EXECUTE pg_catalog.format(
                    'SELECT * FROM %s.dblink_get_result($1) AS r(%s)', 'public', columns)
                    USING conn_name;
                PERFORM 1 FROM public.dblink_get_result(conn_name) AS r(ignored text);
            END IF;
            EXIT;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                    err_message = MESSAGE_TEXT,
                                    err_detail = PG_EXCEPTION_DETAIL;
            IF NOT dblink_safe._is_broken(err_state, err_message) THEN
                RAISE;
            END IF;
        END;
        PERFORM dblink_safe._forget_broken(conn_name, pg_catalog.split_part(state, ' ', 5) = '1',
            err_state, err_message, err_detail);
        PERFORM dblink_safe._next_attempt(conn_name, err_state, err_message, err_detail,
            idempotent, attempt, attempts, started, budget_s, window_s);
        attempt := attempt + 1;
        state := pg_catalog.current_setting('dblink_safe.h_' || key, true);
    END LOOP;
    PERFORM pg_catalog.set_config('dblink_safe.h_' || key,
        pg_catalog.concat_ws(' ',
            EXTRACT(epoch FROM pg_catalog.clock_timestamp()),
            pg_catalog.split_part(state, ' ', 2)::bigint + 1,
            pg_catalog.split_part(state, ' ', 3),
            pg_catalog.split_part(state, ' ', 4),
            pg_catalog.split_part(state, ' ', 5)),
        false);
END;
$fn$;
COMMENT ON FUNCTION dblink_safe.safe_dblink_query(
    text,
    text,
    anyelement,
    boolean,
    interval,
    interval,
    integer,
    interval
) IS
'pgdblink_safe: rows of a remote query typed by row_type (e.g. NULL::my_row), no column list '
'needed; same healing and retry rules as safe_dblink_exec, idempotent defaults to false';

CREATE OR REPLACE FUNCTION dblink_safe._forget_broken(
    conn_name text, in_tx boolean, err_state text, err_message text, err_detail text
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    -- dblink reports a result that carries no error message as 08006 (a statement that was
    -- only a comment, say). A connection libpq still finds healthy was not lost.
    IF (conn_name = ANY (public.dblink_get_connections())) IS TRUE
       AND public.dblink_error_message(conn_name) = 'OK' THEN
        RAISE EXCEPTION 'the statement on dblink connection "%" produced neither a result nor an error', conn_name
            USING ERRCODE = '22023',
                  DETAIL = pg_catalog.format('dblink reported SQLSTATE %s: %s', err_state, err_message),
                  HINT = 'Pass sql that holds a statement, not only comments or blanks.';
    END IF;
    -- Closed here so that the next call reconnects whatever this one raises.
    IF (conn_name = ANY (public.dblink_get_connections())) IS TRUE THEN
        PERFORM public.dblink_disconnect(conn_name);
    END IF;
    PERFORM dblink_safe._note(conn_name, pg_catalog.jsonb_build_object(
        'last_error', err_state,
        'last_error_at', EXTRACT(epoch FROM pg_catalog.clock_timestamp())));
    IF in_tx THEN
        PERFORM dblink_safe._lost(conn_name, err_state, err_message, err_detail,
            ' (inside an open remote transaction, which is lost)');
    END IF;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._forget_broken(text, boolean, text, text, text) IS
'pgdblink_safe internal: closes a connection lost after sending; raises 08007 inside a '
'remote transaction';

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA dblink_safe FROM PUBLIC;
