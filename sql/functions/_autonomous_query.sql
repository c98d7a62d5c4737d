CREATE OR REPLACE FUNCTION {{ schema }}._autonomous_query(
    sql text, row_type anyelement, timeout interval, search_path text
)
RETURNS SETOF anyelement
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    timeout_s numeric := EXTRACT(epoch FROM timeout);
    -- As in _autonomous_exec: the end of the results, and the key of the advisory lock.
    token text := 'pgdblink_safe:' || pg_catalog.floor(pg_catalog.random() * 2147483647)::bigint
        || ':' || pg_catalog.md5(pg_catalog.random()::text || pg_catalog.clock_timestamp()::text);
    type_oid oid := pg_catalog.pg_typeof(row_type)::oid;
    columns text;
    link text;
    results text[];
    extra boolean := false;
    key text;
    state text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    IF sql IS NULL THEN
        RAISE EXCEPTION 'sql must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass the query to run in its own transaction.';
    END IF;
    IF pg_catalog.btrim(sql, E' \t\n\r;') = '' THEN
        RAISE EXCEPTION 'sql must hold a query, not only blanks'
            USING ERRCODE = '22023', HINT = 'Pass the query to run in its own transaction.';
    END IF;
    PERFORM {{ schema }}._check_options(timeout, NULL, NULL, NULL, NULL, NULL);
    -- The column definition list dblink needs, from the catalog on every call, as in
    -- safe_dblink_query; a type without columns is a scalar.
    columns := NULLIF(pg_catalog.array_to_string(ARRAY(
        SELECT pg_catalog.quote_ident(a.attname) || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
        FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = (SELECT t.typrelid FROM pg_catalog.pg_type t WHERE t.oid = type_oid)
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum), ', '), '');
    IF columns IS NULL THEN
        columns := 'value ' || pg_catalog.format_type(type_oid, NULL);
    END IF;
    link := {{ schema }}._autonomous_link();
    BEGIN
        PERFORM {{ schema }}._autonomous_send(link, sql, search_path, token, timeout_s, started);
        PERFORM {{ schema }}._autonomous_await(link, token, timeout_s, started);
        -- dblink gathers every row before it returns one; the rows reach the caller only if
        -- the transaction then commits (its token follows the commit).
        RETURN QUERY EXECUTE 'SELECT * FROM ' || {{ dblink_literal }}
            || '.dblink_get_result($1) AS r(' || columns || ')'
            USING link;
        LOOP
            PERFORM {{ schema }}._autonomous_await(link, token, timeout_s, started);
            BEGIN
                results := ARRAY(SELECT r.v FROM {{ dblink }}.dblink_get_result(link) AS r(v text));
            EXCEPTION WHEN datatype_mismatch THEN
                results := NULL;
            END;
            EXIT WHEN results = ARRAY[token];
            extra := true;
        END LOOP;
        PERFORM {{ schema }}._autonomous_await(link, token, timeout_s, started);
        PERFORM 1 FROM {{ dblink }}.dblink_get_result(link) AS r(v text);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                err_message = MESSAGE_TEXT,
                                err_detail = PG_EXCEPTION_DETAIL;
        PERFORM {{ schema }}._autonomous_failed(link, err_state, err_message, err_detail);
        PERFORM {{ schema }}._autonomous_end(link, sql);
        RAISE;
    END;
    key := {{ guc_hot }} || {{ schema }}._key(link);
    state := pg_catalog.current_setting(key, true);
    IF COALESCE(state, '') <> '' THEN
        PERFORM pg_catalog.set_config(key,
            pg_catalog.concat_ws(' ',
                EXTRACT(epoch FROM pg_catalog.clock_timestamp()),
                pg_catalog.split_part(state, ' ', 2)::bigint + 1,
                pg_catalog.split_part(state, ' ', 3),
                pg_catalog.split_part(state, ' ', 4)),
            false);
    END IF;
    IF extra THEN
        PERFORM {{ schema }}._autonomous_end(link, sql);
        RAISE EXCEPTION 'autonomous_query takes one query, and sql held several statements'
            USING ERRCODE = '0A000',
                  DETAIL = 'They ran in a transaction of their own, which committed unless they began '
                           'one of their own and left it open (then it was rolled back).',
                  HINT = 'Run the other statements with autonomous_exec.';
    END IF;
    RETURN;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._autonomous_query(text, anyelement, interval, text) IS
'pgdblink_safe internal: autonomous_query, with the caller''s search_path';
