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
    PERFORM {{ schema }}._check_options(
        timeout, validation_window, max_attempts, retry_budget, NULL, NULL);
    IF failure IS NULL THEN
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
    key := {{ schema }}._key(conn_name);
    IF failure IS NULL THEN
        PERFORM {{ schema }}._prepare(conn_name, window_s, attempts, budget_s);
    END IF;
    state := pg_catalog.current_setting({{ guc_hot }} || key, true);
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
                    -- The transaction id and the server instance that gave it, in the round
                    -- trip that opens the transaction: after a crash or a failover the same id
                    -- can be handed to another transaction. now() equals statement_timestamp()
                    -- only when this BEGIN opened the transaction.
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
                    -- Only the COMMIT's outcome can be unknown: a failure before it leaves
                    -- nothing committed, and the resolution tells what became of the COMMIT.
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
                        -- A remote error inside the toolkit's own transaction: end it, so that
                        -- the connection stays usable.
                        PERFORM {{ dblink }}.dblink_exec(conn_name, 'ROLLBACK', false);
                    ELSIF err_state = '2F003' AND status IS NULL THEN
                        PERFORM {{ schema }}._rows_refused(conn_name, err_message);
                    END IF;
                    RAISE;
                END IF;
            END;
        END IF;
        -- The connection broke after the statement was sent.
        PERFORM {{ schema }}._forget_broken(conn_name, err_state, err_message, err_detail);
        IF resolve AND status IS NOT NULL THEN
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
