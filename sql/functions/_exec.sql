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
    key := {{ schema }}._key(conn_name);
    state := pg_catalog.current_setting({{ guc_hot }} || key, true);
    IF failure IS NULL THEN
        PERFORM {{ schema }}._prepare(conn_name, window_s, attempts, budget_s);
        state := pg_catalog.current_setting({{ guc_hot }} || key, true);
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
                    SELECT r.x INTO xid FROM {{ dblink }}.dblink(conn_name,
                        'BEGIN; SELECT pg_catalog.pg_current_xact_id()::text') AS r(x text);
                    status := {{ schema }}._status(conn_name, sql, timeout_s);
                    -- Only the COMMIT's outcome can be unknown: a failure before it leaves
                    -- nothing committed, and pg_xact_status tells what became of the COMMIT.
                    PERFORM {{ schema }}._status(conn_name, 'COMMIT', timeout_s);
                ELSIF timeout_s IS NULL THEN
                    status := {{ dblink }}.dblink_exec(conn_name, sql);
                ELSE
                    status := {{ schema }}._status(conn_name, sql, timeout_s);
                END IF;
                EXIT;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                        err_message = MESSAGE_TEXT,
                                        err_detail = PG_EXCEPTION_DETAIL;
                IF NOT {{ schema }}._is_broken(err_state, err_message) THEN
                    IF resolve AND xid IS NOT NULL
                       AND (conn_name = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE THEN
                        -- A remote error inside the toolkit's own transaction: end it.
                        PERFORM {{ dblink }}.dblink_exec(conn_name, 'ROLLBACK', false);
                    END IF;
                    RAISE;
                END IF;
            END;
        END IF;
        -- The connection broke after the statement was sent.
        PERFORM {{ schema }}._forget_broken(conn_name, pg_catalog.split_part(state, ' ', 5) = '1',
            err_state, err_message, err_detail);
        IF resolve AND status IS NOT NULL THEN
            outcome := {{ schema }}._resolve(conn_name, xid, attempts, budget_s);
            EXIT WHEN outcome = 'committed';
            IF outcome <> 'aborted' THEN
                PERFORM {{ schema }}._lost(conn_name, err_state, err_message, err_detail,
                    pg_catalog.format(' (remote transaction %s is %s)', xid, outcome));
            END IF;
        END IF;
        -- Repeatable: idempotent, or (resolving) known not to have committed.
        PERFORM {{ schema }}._next_attempt(conn_name, err_state, err_message, err_detail,
            idempotent OR resolve, attempt, attempts, started, budget_s, window_s);
        attempt := attempt + 1;
        xid := NULL;
        status := NULL;
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
