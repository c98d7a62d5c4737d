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
    key text;
    type_oid oid := pg_catalog.pg_typeof(row_type)::oid;
    columns text;
    window_s numeric := COALESCE(
        EXTRACT(epoch FROM validation_window), {{ validation_window_s }});
    attempts integer := COALESCE(max_attempts, {{ max_attempts }});
    budget_s numeric := COALESCE(
        EXTRACT(epoch FROM retry_budget), {{ retry_budget_s }});
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
    PERFORM {{ schema }}._check_options(
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
    PERFORM {{ schema }}._check_user_name(conn_name);
    PERFORM {{ schema }}._sweep();
    conn_name := {{ schema }}._link(conn_name);
    key := {{ schema }}._key(conn_name);
    PERFORM {{ schema }}._prepare(conn_name, window_s, attempts, budget_s);
    state := pg_catalog.current_setting({{ guc_hot }} || key, true);
    LOOP
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
        PERFORM {{ schema }}._forget_broken(conn_name, err_state, err_message, err_detail);
        PERFORM {{ schema }}._next_attempt(conn_name, err_state, err_message, err_detail,
            idempotent, attempt, attempts, started, budget_s, window_s);
        attempt := attempt + 1;
        state := pg_catalog.current_setting({{ guc_hot }} || key, true);
    END LOOP;
    PERFORM pg_catalog.set_config({{ guc_hot }} || key,
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
