CREATE OR REPLACE FUNCTION {{ schema }}._autonomous_exec(
    sql text, timeout interval, search_path text
)
RETURNS text
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    timeout_s numeric := EXTRACT(epoch FROM timeout);
    -- Marks the end of this call's results; no statement of the caller's gives it by chance.
    -- Its second field keys the advisory lock by which _autonomous_await finds the remote
    -- backend.
    token text := 'pgdblink_safe:' || pg_catalog.floor(pg_catalog.random() * 2147483647)::bigint
        || ':' || pg_catalog.md5(pg_catalog.random()::text || pg_catalog.clock_timestamp()::text);
    link text;
    results text[];
    status text;
    gave_rows boolean := false;
    -- A BEGIN or START TRANSACTION of sql's own, not ended by it.
    open_tx boolean := false;
    key text;
    state text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    IF sql IS NULL THEN
        RAISE EXCEPTION 'sql must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass the statement to run in its own transaction.';
    END IF;
    IF pg_catalog.btrim(sql, E' \t\n\r;') = '' THEN
        RAISE EXCEPTION 'sql must hold a statement, not only blanks'
            USING ERRCODE = '22023', HINT = 'Pass the statement to run in its own transaction.';
    END IF;
    PERFORM {{ schema }}._check_options(timeout, NULL, NULL, NULL, NULL, NULL);
    link := {{ schema }}._autonomous_link();
    BEGIN
        PERFORM {{ schema }}._autonomous_send(link, sql, search_path, token, timeout_s, started);
        LOOP
            PERFORM {{ schema }}._autonomous_await(link, token, timeout_s, started);
            BEGIN
                results := ARRAY(SELECT r.v FROM {{ dblink }}.dblink_get_result(link) AS r(v text));
            EXCEPTION WHEN datatype_mismatch THEN
                GET STACKED DIAGNOSTICS err_message = MESSAGE_TEXT;
                IF err_message NOT LIKE 'remote query result rowtype does not match%' THEN
                    RAISE;
                END IF;
                gave_rows := true;
                CONTINUE;
            END;
            EXIT WHEN results = ARRAY[token];
            -- A command gives one row, its tag; anything else is rows.
            IF pg_catalog.cardinality(results) = 1 AND results[1] ~ '^[A-Z]+( [A-Z]+)*( [0-9]+)*$' THEN
                status := results[1];
                IF status IN ('BEGIN', 'START TRANSACTION') THEN
                    open_tx := true;
                ELSIF status IN ('COMMIT', 'ROLLBACK', 'PREPARE TRANSACTION') THEN
                    open_tx := false;
                END IF;
            ELSE
                gave_rows := true;
            END IF;
        END LOOP;
        -- The empty result that ends the query.
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
    IF open_tx THEN
        PERFORM {{ schema }}._autonomous_end(link, sql);
        RAISE EXCEPTION 'autonomous_exec commits sql itself: sql must not leave a transaction open'
            USING ERRCODE = '0A000',
                  DETAIL = 'It began a transaction and did not end it; that transaction was rolled back.',
                  HINT = 'Leave BEGIN and COMMIT out of sql: it runs in a transaction of its own.';
    END IF;
    -- Used now: the next call within the validation window needs no probe.
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
    IF gave_rows THEN
        RAISE EXCEPTION 'statement returning results not allowed'
            USING ERRCODE = '2F003',
                  DETAIL = 'It ran in its own transaction, which committed.',
                  HINT = 'Run statements that return rows (SELECT, ... RETURNING) with autonomous_query.';
    END IF;
    IF status IS NULL THEN
        RAISE EXCEPTION 'the autonomous statement produced neither a result nor an error'
            USING ERRCODE = '22023',
                  HINT = 'Pass sql that holds a statement, not only comments or blanks.';
    END IF;
    RETURN status;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._autonomous_exec(text, interval, text) IS
'pgdblink_safe internal: autonomous_exec, with the caller''s search_path';
