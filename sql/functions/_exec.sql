CREATE OR REPLACE FUNCTION {{ schema }}._exec(
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
{{ function_settings }}
AS $fn$
DECLARE
    key text;
    state text;
    window_s numeric := CASE WHEN validation_window IS NULL
        THEN {{ validation_window_s }}
        ELSE EXTRACT(epoch FROM validation_window) END;
    started timestamptz := pg_catalog.clock_timestamp();
    timeout_s numeric := EXTRACT(epoch FROM timeout);
    attempts integer := COALESCE(max_attempts, {{ max_attempts }});
    budget_s numeric := CASE WHEN retry_budget IS NULL
        THEN {{ retry_budget_s }}
        ELSE EXTRACT(epoch FROM retry_budget) END;
    attempt integer := 1;
    -- Set by the hot path, which has checked the arguments and found the connection usable.
    ready boolean := failure IS NOT NULL;
    -- The statement alone, without ; between statements: resolved in two round trips.
    single boolean := pg_catalog.strpos(pg_catalog.rtrim(sql, E' \t\n\r;'), ';') = 0;
    results text[];
    info jsonb;
    sent_at timestamptz;
    status text;
    xid text;
    fresh boolean;
    began boolean := false;
    committing boolean := false;
    listed boolean;
    lost boolean;
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
    IF NOT ready THEN
        PERFORM {{ schema }}._check_options(
            timeout, validation_window, max_attempts, retry_budget, NULL, NULL);
        -- The hot path never runs for transaction-scoped connections: resolve the name.
        PERFORM {{ schema }}._check_user_name(conn_name);
        PERFORM {{ schema }}._sweep();
        conn_name := {{ schema }}._link(conn_name);
    END IF;
    IF resolve AND {{ schema }}._ends_transaction(sql) THEN
        RAISE EXCEPTION 'resolve => true cannot take a statement that ends its own transaction'
            USING ERRCODE = '0A000',
                  DETAIL = 'It holds COMMIT, END, ROLLBACK, ABORT or PREPARE TRANSACTION: after a lost '
                           'connection, what it committed could not be told from the toolkit''s '
                           'own transaction.',
                  HINT = 'Leave the transaction to resolve => true, or pass idempotent => true for a '
                         'statement that is safe to repeat.';
    END IF;
    -- _key(conn_name), inline.
    key := pg_catalog.encode(pg_catalog.convert_to(conn_name, 'SQL_ASCII'), 'hex');
    IF NOT ready THEN
        PERFORM {{ schema }}._prepare(conn_name, window_s, attempts, budget_s);
    ELSIF failure = '{}'::jsonb THEN
        -- From the hot path, nothing sent yet.
        failure := NULL;
    END IF;
    state := pg_catalog.current_setting({{ guc_hot }} || key, true);
    IF resolve THEN
        info := NULLIF(pg_catalog.current_setting({{ guc_meta }} || key, true), '')::jsonb;
    END IF;
    IF (info ->> 'tx_open') = 'true' AND {{ schema }}._in_tx(conn_name) THEN
        RAISE EXCEPTION 'resolve => true needs dblink connection "%" outside a remote transaction', conn_name
            USING ERRCODE = '25001',
                  DETAIL = 'Nothing was sent.',
                  HINT = 'The toolkit commits the statement itself; commit or roll back the open remote transaction first.';
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
                IF resolve AND single THEN
                    -- One round trip opens the transaction, takes its id, and runs the
                    -- statement; a second one commits. now() equals statement_timestamp() only
                    -- when this BEGIN opened the transaction: otherwise the guard fails, and
                    -- the statement is skipped. The id is kept with the server run that gave
                    -- it (after a crash or a failover the same id can be handed to another
                    -- transaction), which _probe noted when it reached the server: a
                    -- connection sees one run, or (through a pooler) a later one, which
                    -- _resolve only ever takes for a crash.
                    began := true;
                    sent_at := pg_catalog.clock_timestamp();
                    -- Read again on every attempt: a reconnect has forgotten the run.
                    info := NULLIF(pg_catalog.current_setting({{ guc_meta }} || key, true), '')::jsonb;
                    IF {{ dblink }}.dblink_send_query(conn_name,
                           'BEGIN; SELECT pg_catalog.pg_current_xact_id()::text, '
                           'CASE WHEN pg_catalog.now() = pg_catalog.statement_timestamp() THEN true '
                           'ELSE (''pgdblink_safe: a remote transaction was already open '' '
                           '|| pg_catalog.now())::boolean END, '
                           -- The server run, the first time on this connection.
                           || CASE WHEN info ->> 'instance' IS NULL THEN {{ schema }}._instance_sql()
                                   ELSE 'NULL::text' END
                           || '; ' || sql) <> 1 THEN
                        RAISE EXCEPTION 'could not send query: %', {{ dblink }}.dblink_error_message(conn_name)
                            USING ERRCODE = '08006';
                    END IF;
                    IF timeout_s IS NULL THEN
                        -- The four results in one statement: BEGIN's, the id, the statement's,
                        -- and the empty one that ends the query, read in that order.
                        SELECT (SELECT r.status FROM {{ dblink }}.dblink_get_result(conn_name) AS r(status text)),
                               (SELECT r.x || '@' || COALESCE(r.instance, info ->> 'instance', '')
                                FROM {{ dblink }}.dblink_get_result(conn_name) AS r(x text, fresh boolean, instance text)),
                               ARRAY(SELECT r.status FROM {{ dblink }}.dblink_get_result(conn_name) AS r(status text)),
                               (SELECT r.status FROM {{ dblink }}.dblink_get_result(conn_name) AS r(status text))
                        INTO status, xid, results, outcome;
                    ELSE
                        PERFORM {{ schema }}._await(conn_name, timeout_s, sent_at);
                        PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name) AS r(status text);
                        SELECT r.x || '@' || COALESCE(r.instance, info ->> 'instance', '') INTO xid
                        FROM {{ dblink }}.dblink_get_result(conn_name) AS r(x text, fresh boolean, instance text);
                        PERFORM {{ schema }}._await(conn_name, timeout_s, sent_at);
                        results := ARRAY(SELECT r.status FROM {{ dblink }}.dblink_get_result(conn_name) AS r(status text));
                        PERFORM {{ schema }}._await(conn_name, timeout_s, sent_at);
                        PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name) AS r(status text);
                    END IF;
                    IF info ->> 'instance' IS NULL THEN
                        PERFORM {{ schema }}._note(conn_name,
                            pg_catalog.jsonb_build_object('instance', pg_catalog.split_part(xid, '@', 2)));
                    END IF;
                    -- A command gives one row, its tag; anything else is rows, which
                    -- dblink_exec would refuse too.
                    IF pg_catalog.cardinality(results) IS DISTINCT FROM 1
                       OR results[1] !~ '^[A-Z]+( [A-Z]+)*( [0-9]+)*$' THEN
                        status := NULL;
                        RAISE EXCEPTION 'statement returning results not allowed'
                            USING ERRCODE = '2F003',
                                  DETAIL = 'It was rolled back: nothing of it committed.',
                                  HINT = 'Run statements that return rows (SELECT, ... RETURNING) with safe_dblink_query.';
                    END IF;
                    status := results[1];
                    outcome := NULL;
                    -- Only the COMMIT's outcome can be unknown: a failure before it leaves
                    -- nothing committed, and the resolution tells what became of the COMMIT.
                    committing := true;
                    IF timeout_s IS NULL THEN
                        PERFORM {{ dblink }}.dblink_exec(conn_name, 'COMMIT');
                    ELSE
                        PERFORM {{ schema }}._status(conn_name, 'COMMIT', timeout_s);
                    END IF;
                ELSIF resolve THEN
                    -- Several statements: each result is the statement's own, so the
                    -- transaction is opened first, then the statements run, then COMMIT.
                    began := true;
                    SELECT r.x, r.fresh INTO xid, fresh FROM {{ dblink }}.dblink(conn_name,
                        pg_catalog.format('BEGIN; SELECT pg_catalog.pg_current_xact_id()::text || ''@'' || %s, '
                                          'pg_catalog.now() = pg_catalog.statement_timestamp()',
                                          {{ schema }}._instance_sql())) AS r(x text, fresh boolean);
                    IF NOT fresh THEN
                        began := false;
                        PERFORM {{ schema }}._mark_tx(conn_name, true);
                        RAISE EXCEPTION 'resolve => true needs dblink connection "%" outside a remote transaction', conn_name
                            USING ERRCODE = '25001',
                                  HINT = 'The toolkit commits the statement itself; commit or roll back the open remote transaction first.';
                    END IF;
                    status := {{ schema }}._status(conn_name, sql, timeout_s);
                    committing := true;
                    PERFORM {{ schema }}._status(conn_name, 'COMMIT', timeout_s);
                ELSIF timeout_s IS NULL THEN
                    status := {{ dblink }}.dblink_exec(conn_name, sql);
                ELSE
                    status := {{ schema }}._status(conn_name, sql, timeout_s);
                END IF;
                EXIT;
            EXCEPTION WHEN OTHERS OR query_canceled THEN
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                        err_message = MESSAGE_TEXT,
                                        err_detail = PG_EXCEPTION_DETAIL;
                -- A cancel or a timeout stops the call, except at COMMIT, which may commit
                -- all the same: its outcome is resolved below.
                IF err_state = '57014' AND NOT committing THEN
                    RAISE;
                END IF;
                lost := {{ schema }}._lost_connection(conn_name, err_state, err_message, committing);
                IF NOT lost THEN
                    listed := (conn_name = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE;
                    IF began AND listed THEN
                        -- A remote error inside the toolkit's own transaction: collect what is
                        -- left of the query and end the transaction, so that the connection
                        -- stays usable. The server has answered with the error: the end of the
                        -- query follows at once, though it may not have arrived yet (dblink_exec
                        -- of the ROLLBACK would find the connection busy and send nothing).
                        PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name, false) AS r(ignored text);
                        PERFORM {{ dblink }}.dblink_exec(conn_name, 'ROLLBACK', false);
                        IF err_state = '22P02'
                           AND pg_catalog.strpos(err_message, 'pgdblink_safe: a remote transaction was already open') > 0 THEN
                            PERFORM {{ schema }}._mark_tx(conn_name, false);
                            RAISE EXCEPTION 'resolve => true needs dblink connection "%" outside a remote transaction', conn_name
                                USING ERRCODE = '25001',
                                      DETAIL = 'A remote transaction was open on it; the statement did not run, and '
                                               'that transaction, failed by the check, was rolled back.',
                                      HINT = 'The toolkit commits the statement itself; commit or roll back the '
                                             'open remote transaction first.';
                        END IF;
                        IF err_state = '42804'
                           AND err_message LIKE 'remote query result rowtype does not match%' THEN
                            RAISE EXCEPTION 'statement returning results not allowed'
                                USING ERRCODE = '2F003',
                                      DETAIL = 'It was rolled back: nothing of it committed.',
                                      HINT = 'Run statements that return rows (SELECT, ... RETURNING) with safe_dblink_query.';
                        END IF;
                    ELSIF err_state = '2F003' AND status IS NULL THEN
                        PERFORM {{ schema }}._rows_refused(conn_name, err_message);
                    END IF;
                    RAISE;
                END IF;
            END;
        END IF;
        -- The connection broke after the statement was sent.
        PERFORM {{ schema }}._forget_broken(conn_name, err_state, err_message, err_detail);
        -- Resolving, a COMMIT never sent leaves nothing committed: run it again.
        IF resolve AND committing THEN
            outcome := {{ schema }}._resolve(conn_name, xid, attempts, budget_s);
            EXIT WHEN outcome = 'committed';
            IF outcome <> 'aborted' THEN
                PERFORM {{ schema }}._lost(conn_name, err_state, err_message, err_detail,
                    pg_catalog.format(' (remote transaction %s is %s)',
                        pg_catalog.split_part(xid, '@', 1), outcome));
            END IF;
        END IF;
        -- Repeatable: idempotent, or (resolving) known not to have committed.
        PERFORM {{ schema }}._next_attempt(conn_name, err_state, err_message, err_detail,
            idempotent OR resolve, attempt, attempts, started, budget_s, window_s);
        attempt := attempt + 1;
        xid := NULL;
        status := NULL;
        began := false;
        committing := false;
        state := pg_catalog.current_setting({{ guc_hot }} || key, true);
    END LOOP;
    IF outcome IS NOT NULL THEN
        state := pg_catalog.current_setting({{ guc_hot }} || key, true);
    END IF;
    PERFORM pg_catalog.set_config({{ guc_hot }} || key,
        pg_catalog.concat_ws(' ',
            EXTRACT(epoch FROM pg_catalog.clock_timestamp()),
            pg_catalog.split_part(state, ' ', 2)::bigint + 1,
            pg_catalog.split_part(state, ' ', 3),
            pg_catalog.split_part(state, ' ', 4)),
        false);
    -- With resolve the transaction was the toolkit's own, and it has ended.
    IF NOT resolve THEN
        IF status IN ('BEGIN', 'START TRANSACTION', 'COMMIT', 'ROLLBACK', 'PREPARE TRANSACTION') THEN
            PERFORM {{ schema }}._note_tag(conn_name, sql, status);
        ELSIF pg_catalog.strpos(pg_catalog.rtrim(sql, E' \t\n\r;'), ';') > 0 THEN
            PERFORM {{ schema }}._note_statements(conn_name, sql);
        END IF;
    END IF;
    RETURN status;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._exec(
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
