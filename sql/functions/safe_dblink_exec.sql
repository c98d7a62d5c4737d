CREATE OR REPLACE FUNCTION {{ schema }}.safe_dblink_exec(
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
{{ function_settings }}
AS $fn$
DECLARE
    -- The setting's full name, computed inline: a call of _key would cost more than the rest
    -- of the checks together.
    key text := {{ guc_hot }} || pg_catalog.encode(pg_catalog.convert_to(conn_name, 'SQL_ASCII'), 'hex');
    state text := pg_catalog.current_setting(key, true);
    -- NULL until the statement is sent (no initializer: one expression fewer to evaluate).
    sent boolean;
    checked boolean;
    status text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    -- The hot path: a connection used within the validation window, not due for recycling,
    -- called without options that need the full path. Every expression here is evaluated
    -- as a plain expression (no query, no nested plpgsql call), in floating point.
    IF state <> ''
       AND sql IS NOT NULL AND idempotent IS NOT NULL
       AND (timeout IS NULL OR (timeout > interval '0' AND timeout <= interval '1 day'))
       AND resolve IS NOT NULL AND validation_window IS NULL
       AND max_attempts IS NULL AND retry_budget IS NULL
       AND pg_catalog.left(conn_name, 3) <> 'tx:'
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
    THEN
        BEGIN
            -- dblink_is_busy raises 08003 for a name dblink does not list, which takes the
            -- full path below. Its two reads of pending input are how libpq learns that the
            -- server closed the connection: the first takes the server's goodbye message,
            -- the second meets the closed socket and sets the error message.
            IF {{ dblink }}.dblink_is_busy(conn_name) = 0
               AND {{ dblink }}.dblink_is_busy(conn_name) = 0
               AND {{ dblink }}.dblink_error_message(conn_name) = 'OK' THEN
                IF resolve THEN
                    -- The toolkit's own transaction, run by the full path from here on, so
                    -- that an error in it is never taken for one before sending (below).
                    checked := true;
                    RETURN {{ schema }}._exec(conn_name, sql, idempotent, timeout, true,
                        NULL, NULL, NULL, '{}'::jsonb);
                END IF;
                sent := true;
                IF timeout IS NULL THEN
                    status := {{ dblink }}.dblink_exec(conn_name, sql);
                ELSE
                    status := {{ schema }}._status(conn_name, sql, EXTRACT(epoch FROM timeout));
                END IF;
                -- Written inside the block to save a statement; an assignment, not PERFORM,
                -- takes plpgsql's fast path for simple expressions.
                state := pg_catalog.set_config(key,
                    pg_catalog.concat_ws(' ',
                        pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()),
                        pg_catalog.split_part(state, ' ', 2)::bigint + 1,
                        pg_catalog.split_part(state, ' ', 3),
                        pg_catalog.split_part(state, ' ', 4)),
                    false);
                IF status IN ('BEGIN', 'START TRANSACTION', 'COMMIT', 'ROLLBACK', 'PREPARE TRANSACTION') THEN
                    PERFORM {{ schema }}._note_tag(conn_name, sql, status);
                ELSIF pg_catalog.strpos(pg_catalog.rtrim(sql, E' \t\n\r;'), ';') > 0 THEN
                    PERFORM {{ schema }}._note_statements(conn_name, sql);
                END IF;
                RETURN status;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            IF checked THEN
                RAISE;
            END IF;
            -- Before sending nothing has happened: the full path starts over. After sending,
            -- a remote error is the caller's; a lost connection goes to the full path, which
            -- knows whether the statement may run again.
            IF sent THEN
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                        err_message = MESSAGE_TEXT,
                                        err_detail = PG_EXCEPTION_DETAIL;
                IF NOT {{ schema }}._lost_connection(conn_name, err_state, err_message, false) THEN
                    IF err_state = '2F003' THEN
                        PERFORM {{ schema }}._rows_refused(conn_name, err_message);
                    END IF;
                    RAISE;
                END IF;
                RETURN {{ schema }}._exec(conn_name, sql, idempotent, timeout, resolve,
                    validation_window, max_attempts, retry_budget,
                    pg_catalog.jsonb_build_object(
                        'state', err_state, 'message', err_message, 'detail', err_detail));
            END IF;
        END;
    END IF;
    RETURN {{ schema }}._exec(conn_name, sql, idempotent, timeout, resolve,
        validation_window, max_attempts, retry_budget, NULL);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}.safe_dblink_exec(
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
