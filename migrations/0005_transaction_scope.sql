-- pgdblink_safe migration 0005: schema dblink_safe, dblink in public
--
-- New session state: <prefix>.x_<key> is '1' while conn_name is mapped to its
-- transaction-scoped connection 'tx:' || conn_name; it is set with is_local, so it ends
-- with the transaction (or the subtransaction that set it, if that rolls back).

CREATE FUNCTION dblink_safe._check_user_name(conn_name text)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    PERFORM dblink_safe._check_name(conn_name);
    IF pg_catalog.left(conn_name, 3) = 'tx:' THEN
        RAISE EXCEPTION 'conn_name "%" begins with "tx:", which is reserved', conn_name
            USING ERRCODE = '22023',
                  DETAIL = 'Transaction-scoped connections live under the dblink name tx:<conn_name>.',
                  HINT = 'Use the name you passed to ensure_dblink_conn, or choose another name.';
    END IF;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._check_user_name(text) IS
'pgdblink_safe internal: _check_name, and the tx: prefix is reserved';

CREATE FUNCTION dblink_safe._link(conn_name text)
RETURNS text
LANGUAGE sql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT CASE
        WHEN pg_catalog.current_setting('dblink_safe.x_' || dblink_safe._key(conn_name), true) = '1'
            THEN 'tx:' || conn_name
        ELSE conn_name
    END;
$fn$;
COMMENT ON FUNCTION dblink_safe._link(text) IS
'pgdblink_safe internal: the dblink name behind a caller''s connection name';

CREATE FUNCTION dblink_safe._forget(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text := dblink_safe._key(link);
BEGIN
    PERFORM pg_catalog.set_config('dblink_safe.t_' || key, '', false);
    PERFORM pg_catalog.set_config('dblink_safe.h_' || key, '', false);
    PERFORM pg_catalog.set_config('dblink_safe.m_' || key, '', false);
    PERFORM dblink_safe._track(link, false);
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._forget(text) IS
'pgdblink_safe internal: drops the bookkeeping of a dblink name';

CREATE FUNCTION dblink_safe._sweep()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    link text;
    closed integer := 0;
BEGIN
    -- A transaction-scoped connection whose mapping is gone belongs to a transaction that
    -- rolled back (or to one that committed where no commit hook could be set): close it,
    -- which also ends any remote transaction left open on it.
    FOR link IN
        SELECT n FROM pg_catalog.unnest(public.dblink_get_connections()) AS n
        WHERE pg_catalog.left(n, 3) = 'tx:'
    LOOP
        IF pg_catalog.current_setting(
               'dblink_safe.x_' || dblink_safe._key(pg_catalog.substr(link, 4)), true)
           IS DISTINCT FROM '1' THEN
            PERFORM public.dblink_disconnect(link);
            PERFORM dblink_safe._forget(link);
            closed := closed + 1;
        END IF;
    END LOOP;
    RETURN closed;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._sweep() IS
'pgdblink_safe internal: closes transaction-scoped connections whose transaction has ended';

CREATE FUNCTION dblink_safe._remote_begin(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    key text := dblink_safe._key(link);
    state text := pg_catalog.current_setting('dblink_safe.h_' || key, true);
BEGIN
    -- The backstop: a remote transaction nobody ends (the local one rolled back and no later
    -- toolkit call came) is ended by the remote server after this long.
    PERFORM public.dblink_exec(link, pg_catalog.format(
        'SET idle_in_transaction_session_timeout = %s', 30000));
    -- Isolation as postgres_fdw chooses it: serializable stays serializable, anything else
    -- becomes repeatable read so that one local statement sees one remote snapshot.
    PERFORM public.dblink_exec(link, pg_catalog.concat(
        'START TRANSACTION ISOLATION LEVEL ',
        CASE pg_catalog.current_setting('transaction_isolation')
            WHEN 'serializable' THEN 'SERIALIZABLE'
            ELSE 'REPEATABLE READ'
        END,
        CASE WHEN pg_catalog.current_setting('transaction_read_only') = 'on'
            THEN ' READ ONLY' ELSE '' END));
    PERFORM pg_catalog.set_config('dblink_safe.h_' || key,
        pg_catalog.concat_ws(' ',
            pg_catalog.split_part(state, ' ', 1), pg_catalog.split_part(state, ' ', 2),
            pg_catalog.split_part(state, ' ', 3), pg_catalog.split_part(state, ' ', 4), '1'),
        false);
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._remote_begin(text) IS
'pgdblink_safe internal: opens the remote transaction of a remote_tx connection';

CREATE FUNCTION dblink_safe._remote_commit(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    conn_name text := pg_catalog.substr(link, 4);
    target text := pg_catalog.current_setting('dblink_safe.t_' || dblink_safe._key(link), true);
    xid text;
    asked boolean := false;
    status text;
    outcome text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    -- The remote transaction id, to resolve a COMMIT whose reply is lost; NULL when the
    -- remote work wrote nothing, and then there is nothing to lose.
    BEGIN
        SELECT r.x INTO xid FROM public.dblink(link,
            'SELECT pg_catalog.pg_current_xact_id_if_assigned()::text') AS r(x text);
        asked := true;
        status := dblink_safe._status(link, 'COMMIT', 30.0);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                err_message = MESSAGE_TEXT,
                                err_detail = PG_EXCEPTION_DETAIL;
    END;
    IF err_state IS NULL AND status = 'COMMIT' THEN
        RETURN;
    END IF;
    IF (link = ANY (public.dblink_get_connections())) IS TRUE THEN
        PERFORM public.dblink_disconnect(link);
    END IF;
    IF err_state IS NULL THEN
        -- COMMIT of a transaction that had failed answers ROLLBACK.
        RAISE EXCEPTION 'the remote transaction of dblink connection "%" had failed and was rolled back', conn_name
            USING ERRCODE = '40000',
                  DETAIL = 'A statement in it failed earlier; the local transaction is rolled back too.',
                  HINT = 'Find the failed remote statement, then run the unit of work again.';
    END IF;
    IF NOT (dblink_safe._is_broken(err_state, err_message) OR err_state = '57014') THEN
        -- The remote refused to commit (a serialization failure, a deferred constraint):
        -- the local transaction must not commit either.
        RAISE EXCEPTION 'the remote transaction of dblink connection "%" did not commit: %', conn_name,
                dblink_safe._scrub(err_message, target)
            USING ERRCODE = err_state,
                  DETAIL = 'The local transaction is rolled back too.';
    END IF;
    IF asked AND xid IS NULL THEN
        -- The remote transaction wrote nothing: there was nothing to commit.
        RETURN;
    END IF;
    IF xid IS NOT NULL THEN
        outcome := dblink_safe._resolve(link, xid, 5,
            10.0);
        IF outcome = 'committed' THEN
            RETURN;
        END IF;
    END IF;
    RAISE EXCEPTION 'the remote transaction of dblink connection "%" was lost at commit', conn_name
        USING ERRCODE = CASE WHEN outcome IS NULL OR outcome = 'aborted' THEN '08006' ELSE '08007' END,
              DETAIL = pg_catalog.format(
                  'Remote transaction %s is %s; the local transaction is rolled back. Original error (SQLSTATE %s): %s',
                  COALESCE(xid, '(no id)'),
                  COALESCE(outcome, 'lost before its COMMIT was sent'),
                  err_state,
                  dblink_safe._scrub(pg_catalog.concat_ws(': ', err_message, NULLIF(err_detail, '')), target)),
              HINT = CASE WHEN outcome IS NULL OR outcome = 'aborted'
                  THEN 'Nothing was committed on either side; run the unit of work again.'
                  ELSE 'Check on the remote server whether that transaction committed before running it again.'
              END;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._remote_commit(text) IS
'pgdblink_safe internal: commits a remote_tx connection''s remote transaction, resolving a '
'lost reply with pg_xact_status, or raises so that the local commit fails';

CREATE FUNCTION dblink_safe._at_commit()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    link text := NEW.link;
BEGIN
    -- Fires at local commit (a deferred constraint trigger), once per connection opened
    -- with scope => 'transaction' in the transaction.
    IF (link = ANY (public.dblink_get_connections())) IS TRUE THEN
        IF NEW.remote_tx AND pg_catalog.split_part(
               pg_catalog.current_setting('dblink_safe.h_' || dblink_safe._key(link), true), ' ', 5) = '1' THEN
            PERFORM dblink_safe._remote_commit(link);
        END IF;
        IF (link = ANY (public.dblink_get_connections())) IS TRUE THEN
            PERFORM public.dblink_disconnect(link);
        END IF;
    END IF;
    PERFORM dblink_safe._forget(link);
    PERFORM pg_catalog.set_config(
        'dblink_safe.x_' || dblink_safe._key(pg_catalog.substr(link, 4)), '', true);
    RETURN NULL;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._at_commit() IS
'pgdblink_safe internal: at local commit, commits remote_tx work and closes a '
'transaction-scoped connection';

CREATE FUNCTION dblink_safe._hook(link text, remote_tx boolean)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    err_state text;
BEGIN
    -- The session's temporary table; rows go when the transaction ends (ON COMMIT DELETE
    -- ROWS), and its deferred trigger fires for each at commit. A read-only transaction, a
    -- hot standby or a role without TEMP cannot create it.
    IF pg_catalog.to_regclass('pg_temp.pgdblink_safe_tx_edcef80d6fba') IS NULL THEN
        BEGIN
            CREATE TEMPORARY TABLE pg_temp.pgdblink_safe_tx_edcef80d6fba (link text NOT NULL, remote_tx boolean NOT NULL)
            ON COMMIT DELETE ROWS;
            CREATE CONSTRAINT TRIGGER pgdblink_safe_at_commit
            AFTER INSERT ON pg_temp.pgdblink_safe_tx_edcef80d6fba
            DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION dblink_safe._at_commit();
        EXCEPTION WHEN read_only_sql_transaction OR insufficient_privilege THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE;
            IF remote_tx THEN
                RAISE EXCEPTION 'remote_tx => true needs a commit hook, which this transaction cannot set up'
                    USING ERRCODE = err_state,
                          DETAIL = 'The hook is a temporary table, created once per session; '
                                   'read-only transactions, hot standbys and roles without the '
                                   'TEMPORARY privilege cannot create it.',
                          HINT = 'Call ensure_dblink_conn with scope => ''transaction'' once in a '
                                 'read-write transaction of this session first, or GRANT TEMPORARY '
                                 'on the database to this role.';
            END IF;
            -- Without a hook the connection is closed by the next toolkit call instead.
            RETURN false;
        END;
    END IF;
    INSERT INTO pg_temp.pgdblink_safe_tx_edcef80d6fba (link, remote_tx) VALUES (link, remote_tx);
    RETURN true;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._hook(text, boolean) IS
'pgdblink_safe internal: arranges for a transaction-scoped connection to be closed at commit';

DROP FUNCTION dblink_safe.ensure_dblink_conn(
    text, text, interval, interval, interval, integer, interval
);

CREATE FUNCTION dblink_safe.ensure_dblink_conn(
    conn_name text,
    target text,
    max_lifetime interval DEFAULT NULL,
    max_idle interval DEFAULT NULL,
    validation_window interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_budget interval DEFAULT NULL,
    scope text DEFAULT 'session',
    remote_tx boolean DEFAULT FALSE
)
RETURNS text
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    link text;
    key text;
    was_mapped boolean;
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
    opened text;
    outcome text;
BEGIN
    PERFORM dblink_safe._check_user_name(conn_name);
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
    IF scope IS NULL OR remote_tx IS NULL THEN
        RAISE EXCEPTION 'scope and remote_tx must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF scope NOT IN ('session', 'transaction') THEN
        RAISE EXCEPTION 'scope must be ''session'' or ''transaction'', not %', pg_catalog.quote_literal(scope)
            USING ERRCODE = '22023';
    END IF;
    IF remote_tx AND scope <> 'transaction' THEN
        RAISE EXCEPTION 'remote_tx => true needs scope => ''transaction'''
            USING ERRCODE = '22023',
                  HINT = 'A remote transaction follows the local one, so its connection must too.';
    END IF;
    IF scope = 'transaction' AND pg_catalog.octet_length(conn_name) > 60 THEN
        RAISE EXCEPTION 'conn_name "%..." is % bytes long; transaction-scoped names are limited to 60 bytes',
                pg_catalog.left(conn_name, 20), pg_catalog.octet_length(conn_name)
            USING ERRCODE = '22023',
                  HINT = 'Its dblink name is tx:<conn_name>, and dblink names are limited to 63 bytes.';
    END IF;
    PERFORM dblink_safe._check_options(
        NULL, validation_window, max_attempts, retry_budget, max_lifetime, max_idle);
    PERFORM dblink_safe._sweep();
    was_mapped := pg_catalog.current_setting('dblink_safe.x_' || dblink_safe._key(conn_name), true)
        IS NOT DISTINCT FROM '1';
    IF scope = 'session' THEN
        IF was_mapped THEN
            RAISE EXCEPTION 'dblink connection "%" is open with scope transaction in this transaction', conn_name
                USING ERRCODE = '22023',
                      HINT = 'Use another name, or close it first with safe_dblink_disconnect.';
        END IF;
        link := conn_name;
    ELSE
        IF NOT was_mapped
           AND ((conn_name = ANY (public.dblink_get_connections())) IS TRUE
                OR COALESCE(pg_catalog.current_setting('dblink_safe.t_' || dblink_safe._key(conn_name), true), '') <> '') THEN
            RAISE EXCEPTION 'dblink connection "%" is open with scope session', conn_name
                USING ERRCODE = '22023',
                      HINT = 'Use another name, or close it first with safe_dblink_disconnect.';
        END IF;
        link := 'tx:' || conn_name;
        IF was_mapped AND (dblink_safe._meta(link) ->> 'remote_tx')::boolean IS DISTINCT FROM remote_tx THEN
            RAISE EXCEPTION 'dblink connection "%" is already open in this transaction with remote_tx => %',
                    conn_name, NOT remote_tx
                USING ERRCODE = '22023';
        END IF;
    END IF;
    key := dblink_safe._key(link);
    remembered := pg_catalog.current_setting('dblink_safe.t_' || key, true);
    IF scope = 'transaction' AND NOT was_mapped THEN
        PERFORM dblink_safe._hook(link, remote_tx);
        PERFORM pg_catalog.set_config('dblink_safe.x_' || dblink_safe._key(conn_name), '1', true);
        PERFORM dblink_safe._note(link, pg_catalog.jsonb_build_object(
            'scope', 'transaction', 'remote_tx', remote_tx));
    END IF;
    PERFORM dblink_safe._note(link, pg_catalog.jsonb_build_object(
        'max_lifetime_s', lifetime_s, 'max_idle_s', idle_s));
    IF (link = ANY (public.dblink_get_connections())) IS NOT TRUE THEN
        PERFORM dblink_safe._reopen(link, target, false, attempts, budget_s);
        outcome := 'connected';
    ELSIF remembered IS NOT DISTINCT FROM target THEN
        -- A listed connection is reused only when it is known to point at this target: one
        -- whose state was rolled back, or that was opened by plain dblink_connect, could
        -- point anywhere.
        opened := dblink_safe._meta(link) ->> 'opened_at';
        PERFORM dblink_safe._prepare(link, window_s, attempts, budget_s);
        outcome := CASE WHEN (dblink_safe._meta(link) ->> 'opened_at') IS DISTINCT FROM opened
            THEN 'reconnected' ELSE 'reused' END;
    ELSIF pg_catalog.split_part(pg_catalog.current_setting('dblink_safe.h_' || key, true), ' ', 5) = '1' THEN
        RAISE EXCEPTION 'dblink connection "%" has an open remote transaction; it cannot move to another target', conn_name
            USING ERRCODE = '25001',
                  HINT = 'Commit or roll back first, or use another name.';
    ELSE
        PERFORM dblink_safe._reopen(link, target, true, attempts, budget_s);
        outcome := 'reconnected';
    END IF;
    IF remote_tx AND NOT was_mapped THEN
        PERFORM dblink_safe._remote_begin(link);
    END IF;
    RETURN outcome;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe.ensure_dblink_conn(
    text,
    text,
    interval,
    interval,
    interval,
    integer,
    interval,
    text,
    boolean
) IS
'pgdblink_safe: opens the named dblink connection to target (a foreign server name or a '
'connection string) if missing, replaces it if dead; scope session or transaction, '
'remote_tx for a remote transaction that follows the local one; returns reused, connected '
'or reconnected';

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
    key text;
    state text;
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
        -- The hot path never runs for transaction-scoped connections: resolve the name.
        PERFORM dblink_safe._check_user_name(conn_name);
        PERFORM dblink_safe._sweep();
        conn_name := dblink_safe._link(conn_name);
    END IF;
    key := dblink_safe._key(conn_name);
    state := pg_catalog.current_setting('dblink_safe.h_' || key, true);
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
       AND pg_catalog.left(conn_name, 3) <> 'tx:'
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
    key text;
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
    PERFORM dblink_safe._check_user_name(conn_name);
    PERFORM dblink_safe._sweep();
    conn_name := dblink_safe._link(conn_name);
    key := dblink_safe._key(conn_name);
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

CREATE OR REPLACE FUNCTION dblink_safe.safe_dblink_disconnect(conn_name text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    link text;
    was_open boolean;
BEGIN
    PERFORM dblink_safe._check_user_name(conn_name);
    PERFORM dblink_safe._sweep();
    link := dblink_safe._link(conn_name);
    was_open := (link = ANY (public.dblink_get_connections())) IS TRUE;
    IF was_open THEN
        -- Also ends a remote transaction open on it (rolled back by the remote server).
        PERFORM public.dblink_disconnect(link);
    END IF;
    PERFORM dblink_safe._forget(link);
    IF link <> conn_name THEN
        PERFORM pg_catalog.set_config('dblink_safe.x_' || dblink_safe._key(conn_name), '', true);
    END IF;
    RETURN was_open;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe.safe_dblink_disconnect(text) IS
'pgdblink_safe: closes a connection and forgets it; true when it was open';

CREATE OR REPLACE FUNCTION dblink_safe.connections()
RETURNS TABLE (
    conn_name text,
    scope text,
    target text,
    is_open boolean,
    opened_at timestamptz,
    last_used_at timestamptz,
    uses bigint,
    reconnects integer,
    remote_transaction boolean,
    last_error_sqlstate text,
    last_error_at timestamptz,
    last_validation_ok boolean,
    last_validated_at timestamptz,
    recycle_at timestamptz,
    missing_safety_options text[]
)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    open_names text[];
    link text;
    info jsonb;
    state text;
    raw_target text;
BEGIN
    -- Connections of transactions that have ended are closed first, not listed.
    PERFORM dblink_safe._sweep();
    open_names := COALESCE(public.dblink_get_connections(), '{}');
    FOR link IN
        SELECT n FROM pg_catalog.unnest(COALESCE(
            NULLIF(pg_catalog.current_setting('dblink_safe.names', true), '')::text[], '{}')) AS n
        ORDER BY CASE WHEN pg_catalog.left(n, 3) = 'tx:' THEN pg_catalog.substr(n, 4) ELSE n END, n
    LOOP
        conn_name := link;
        IF pg_catalog.left(link, 3) = 'tx:' THEN
            conn_name := pg_catalog.substr(link, 4);
            -- Bookkeeping left by a rolled-back sweep: no longer this transaction's.
            CONTINUE WHEN dblink_safe._link(conn_name) <> link;
        END IF;
        info := dblink_safe._meta(link);
        state := NULLIF(pg_catalog.current_setting('dblink_safe.h_' || dblink_safe._key(link), true), '');
        raw_target := NULLIF(pg_catalog.current_setting('dblink_safe.t_' || dblink_safe._key(link), true), '');
        scope := COALESCE(info ->> 'scope', 'session');
        target := dblink_safe._mask_target(raw_target);
        is_open := link = ANY (open_names);
        opened_at := pg_catalog.to_timestamp((info ->> 'opened_at')::double precision);
        last_used_at := pg_catalog.to_timestamp(NULLIF(pg_catalog.split_part(state, ' ', 1), '')::double precision);
        uses := NULLIF(pg_catalog.split_part(state, ' ', 2), '')::bigint;
        reconnects := (info ->> 'reconnects')::integer;
        remote_transaction := pg_catalog.split_part(state, ' ', 5) = '1';
        last_error_sqlstate := info ->> 'last_error';
        last_error_at := pg_catalog.to_timestamp((info ->> 'last_error_at')::double precision);
        last_validation_ok := (info ->> 'validated')::boolean;
        last_validated_at := pg_catalog.to_timestamp((info ->> 'validated_at')::double precision);
        recycle_at := pg_catalog.to_timestamp(NULLIF(NULLIF(pg_catalog.split_part(state, ' ', 3), ''), '0')::double precision);
        -- Options the toolkit adds to connection strings; a foreign server must carry its own.
        -- NULL for connection strings, which get the toolkit's safe options.
        SELECT ARRAY(
                   SELECT o
                   FROM pg_catalog.unnest(ARRAY['connect_timeout', 'keepalives', 'tcp_user_timeout']) AS o
                   WHERE NOT EXISTS (
                       SELECT 1 FROM pg_catalog.unnest(fs.srvoptions) AS opt
                       WHERE pg_catalog.split_part(opt, '=', 1) = o)
                   ORDER BY o)
        INTO missing_safety_options
        FROM pg_catalog.pg_foreign_server fs
        WHERE fs.srvname = raw_target;
        RETURN NEXT;
    END LOOP;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe.connections() IS
'pgdblink_safe: this session''s toolkit connections, passwords masked';

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA dblink_safe FROM PUBLIC;
