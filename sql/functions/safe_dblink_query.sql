CREATE OR REPLACE FUNCTION {{ schema }}.safe_dblink_query(
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
{{ function_settings }}
AS $fn$
DECLARE
    -- As in safe_dblink_exec: the setting's full name inline, the state read once.
    key text := {{ guc_hot }} || pg_catalog.encode(pg_catalog.convert_to(conn_name, 'SQL_ASCII'), 'hex');
    state text := pg_catalog.current_setting(key, true);
    type_oid oid := pg_catalog.pg_typeof(row_type)::oid;
    columns text;
    sent boolean;
    lost boolean := false;
    -- The full path's, set there: the hot path evaluates no more than it needs.
    window_s numeric;
    attempts integer;
    budget_s numeric;
    timeout_s numeric;
    started timestamptz;
    attempt integer := 1;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    -- The column definition list dblink needs, from the row type the caller passed, read
    -- from the catalog on every call: a list kept from an earlier call could be stale after
    -- ALTER TYPE, and one kept in a session setting could be planted by another role of the
    -- session. ARRAY() and not string_agg: an aggregate costs several times the scan here.
    -- A type without columns is a scalar.
    columns := NULLIF(pg_catalog.array_to_string(ARRAY(
        SELECT pg_catalog.quote_ident(a.attname) OPERATOR(pg_catalog.||) ' '
               OPERATOR(pg_catalog.||) pg_catalog.format_type(a.atttypid, a.atttypmod)
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = (SELECT t.typrelid FROM pg_catalog.pg_type t WHERE t.oid = type_oid)
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum), ', '), '');
    IF columns IS NULL THEN
        columns := 'value ' || pg_catalog.format_type(type_oid, NULL);
    END IF;
    -- The hot path, on the same terms as safe_dblink_exec's: a connection used within the
    -- validation window, not due for recycling, no option that needs the full path. The test
    -- is written out here as there, not shared: a function with a pinned search_path costs
    -- more to call than the test itself.
    IF state <> ''
       AND sql IS NOT NULL AND idempotent IS NOT NULL
       AND timeout IS NULL AND validation_window IS NULL
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
            IF {{ dblink }}.dblink_is_busy(conn_name) = 0
               AND {{ dblink }}.dblink_is_busy(conn_name) = 0
               AND {{ dblink }}.dblink_error_message(conn_name) = 'OK' THEN
                sent := true;
                -- dblink gathers every row before it returns one, so an error here leaves
                -- nothing returned.
                RETURN QUERY EXECUTE 'SELECT * FROM ' || {{ dblink_literal }}
                    || '.dblink($1, $2) AS r(' || columns || ')'
                    USING conn_name, sql;
                state := pg_catalog.set_config(key,
                    pg_catalog.concat_ws(' ',
                        pg_catalog.date_part('epoch', pg_catalog.clock_timestamp()),
                        pg_catalog.split_part(state, ' ', 2)::bigint + 1,
                        pg_catalog.split_part(state, ' ', 3),
                        pg_catalog.split_part(state, ' ', 4)),
                    false);
                RETURN;
            END IF;
        EXCEPTION WHEN OTHERS THEN
            -- Before sending: the full path starts over. After: a remote error is the
            -- caller's; a lost connection is the full path's to heal or report (08007).
            IF sent THEN
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                        err_message = MESSAGE_TEXT,
                                        err_detail = PG_EXCEPTION_DETAIL;
                IF NOT {{ schema }}._lost_connection(conn_name, err_state, err_message, false) THEN
                    RAISE;
                END IF;
                lost := true;
            END IF;
        END;
    END IF;
    window_s := COALESCE(EXTRACT(epoch FROM validation_window), {{ validation_window_s }});
    attempts := COALESCE(max_attempts, {{ max_attempts }});
    budget_s := COALESCE(EXTRACT(epoch FROM retry_budget), {{ retry_budget_s }});
    timeout_s := EXTRACT(epoch FROM timeout);
    started := pg_catalog.clock_timestamp();
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
    PERFORM {{ schema }}._check_options(
        timeout, validation_window, max_attempts, retry_budget, NULL, NULL);
    PERFORM {{ schema }}._check_user_name(conn_name);
    IF NOT lost THEN
        PERFORM {{ schema }}._sweep();
        conn_name := {{ schema }}._link(conn_name);
        PERFORM {{ schema }}._prepare(conn_name, window_s, attempts, budget_s);
    END IF;
    key := {{ guc_hot }} || {{ schema }}._key(conn_name);
    LOOP
        -- Lost after sending on the hot path: that was the first attempt.
        IF NOT lost THEN
            BEGIN
                IF timeout_s IS NULL THEN
                    RETURN QUERY EXECUTE pg_catalog.format(
                        'SELECT * FROM %s.dblink($1, $2) AS r(%s)', {{ dblink_literal }}, columns)
                        USING conn_name, sql;
                ELSE
                    PERFORM {{ schema }}._wait(conn_name, sql, timeout_s, pg_catalog.clock_timestamp());
                    RETURN QUERY EXECUTE pg_catalog.format(
                        'SELECT * FROM %s.dblink_get_result($1) AS r(%s)', {{ dblink_literal }}, columns)
                        USING conn_name;
                    PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name) AS r(ignored text);
                END IF;
                EXIT;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                        err_message = MESSAGE_TEXT,
                                        err_detail = PG_EXCEPTION_DETAIL;
                IF NOT {{ schema }}._lost_connection(conn_name, err_state, err_message, false) THEN
                    RAISE;
                END IF;
            END;
        END IF;
        lost := false;
        PERFORM {{ schema }}._forget_broken(conn_name, err_state, err_message, err_detail);
        PERFORM {{ schema }}._next_attempt(conn_name, err_state, err_message, err_detail,
            idempotent, attempt, attempts, started, budget_s, window_s);
        attempt := attempt + 1;
    END LOOP;
    state := pg_catalog.current_setting(key, true);
    PERFORM pg_catalog.set_config(key,
        pg_catalog.concat_ws(' ',
            EXTRACT(epoch FROM pg_catalog.clock_timestamp()),
            pg_catalog.split_part(state, ' ', 2)::bigint + 1,
            pg_catalog.split_part(state, ' ', 3),
            pg_catalog.split_part(state, ' ', 4)),
        false);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}.safe_dblink_query(
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
