CREATE OR REPLACE FUNCTION {{ schema }}._fanout(
    conn_names text[],
    sql text,
    row_type anyelement,
    typed boolean,
    deadline interval,
    min_ok integer,
    idempotent boolean
)
RETURNS TABLE (
    node text, state text, message text, elapsed interval, status text, value text
)
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
#variable_conflict use_variable
DECLARE
    -- After the deadline, how long the nodes get to deliver the remote's own cancel, and
    -- after min_ok, how long cancelled nodes get to answer; then they are closed.
    grace constant interval := interval '500 milliseconds';
    n integer := pg_catalog.cardinality(conn_names);
    started timestamptz := pg_catalog.clock_timestamp();
    deadline_at timestamptz;
    stop_at timestamptz;
    now_at timestamptz;
    links text[];
    -- Per node: 0 not started, 1 waiting for the SET that bounds it on the remote, 2 waiting
    -- for its result (rows), 3 reading what is left up to the final empty result, 4 done.
    phase integer[];
    -- Per node: its outcome was returned; it succeeded; it was re-sent once; it had a remote
    -- transaction open before the call; the last two command tags read (fanout_exec).
    emitted boolean[];
    ok boolean[];
    resent boolean[];
    had_tx boolean[];
    tags text[];
    prev_tags text[];
    why text[];
    ok_count integer := 0;
    cancelled boolean := false;
    type_oid oid := pg_catalog.pg_typeof(row_type)::oid;
    columns text;
    value_sql text;
    window_s numeric := {{ validation_window_s }};
    budget_s numeric;
    i integer;
    next_node integer := 1;
    running integer;
    link text;
    tag text;
    nap numeric := 0.0005;
    last_sent timestamptz;
    lost_tx text[] := '{}'::text[];
    held bigint[];
    err_state text;
    err_message text;
    err_detail text;
    err_context text;
BEGIN
    IF conn_names IS NULL THEN
        RAISE EXCEPTION 'conn_names must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass the names of connections opened with ensure_dblink_conn.';
    END IF;
    IF n = 0 THEN
        RAISE EXCEPTION 'conn_names must not be empty'
            USING ERRCODE = '22023', HINT = 'Pass the names of connections opened with ensure_dblink_conn.';
    END IF;
    IF pg_catalog.array_position(conn_names, NULL) IS NOT NULL THEN
        RAISE EXCEPTION 'conn_names must not contain NULL (element %)', pg_catalog.array_position(conn_names, NULL)
            USING ERRCODE = '22004';
    END IF;
    FOR i IN 1 .. n LOOP
        PERFORM {{ schema }}._check_user_name(conn_names[i]);
        IF pg_catalog.array_position(conn_names, conn_names[i]) <> i THEN
            RAISE EXCEPTION 'conn_names names dblink connection "%" twice', conn_names[i]
                USING ERRCODE = '22023',
                      HINT = 'Each node runs the statement once: name each connection once.';
        END IF;
    END LOOP;
    IF sql IS NULL THEN
        RAISE EXCEPTION 'sql must not be NULL'
            USING ERRCODE = '22004', HINT = 'Pass the statement to run on every node.';
    END IF;
    IF pg_catalog.btrim(sql, E' \t\n\r;') = '' THEN
        RAISE EXCEPTION 'sql must hold a statement, not only blanks'
            USING ERRCODE = '22023', HINT = 'Pass the statement to run on every node.';
    END IF;
    IF deadline IS NULL OR idempotent IS NULL THEN
        RAISE EXCEPTION 'deadline and idempotent must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF deadline <= interval '0' OR deadline > interval '1 day' THEN
        RAISE EXCEPTION 'deadline must be more than 0 and at most 1 day, not %', deadline
            USING ERRCODE = '22023';
    END IF;
    IF min_ok < 1 OR min_ok > n THEN
        RAISE EXCEPTION 'min_ok must be from 1 to the number of conn_names (%), not %', n, min_ok
            USING ERRCODE = '22023', HINT = 'Leave it NULL to wait for every node.';
    END IF;
    IF {{ schema }}._ends_transaction(sql) THEN
        RAISE EXCEPTION 'fan-out cannot run a statement that ends a transaction'
            USING ERRCODE = '0A000',
                  DETAIL = 'It holds COMMIT, END, ROLLBACK, ABORT or PREPARE TRANSACTION: one cancelled '
                           'at the deadline or cut off with its connection may have committed or not.',
                  HINT = 'End remote transactions with safe_dblink_exec on each connection, or let '
                         'remote_tx => true commit them at local commit.';
    END IF;
    PERFORM {{ schema }}._sweep();
    -- The remote transactions open, as _in_tx reads them, in one look at pg_locks for all
    -- the nodes (a look costs about as much as a round trip on a loopback).
    SELECT pg_catalog.array_agg((l.classid::bigint << 32) | l.objid::bigint)
    INTO held
    FROM pg_catalog.pg_locks AS l
    WHERE l.locktype = 'advisory'
      AND l.pid = pg_catalog.pg_backend_pid()
      AND l.objsubid = 1;
    FOR i IN 1 .. n LOOP
        link := {{ schema }}._link(conn_names[i]);
        -- Every name is checked before anything is sent to any node.
        IF (link = ANY ({{ dblink }}.dblink_get_connections())) IS NOT TRUE
           AND COALESCE(pg_catalog.current_setting({{ guc_target }} || {{ schema }}._key(link), true), '') = '' THEN
            RAISE EXCEPTION 'dblink connection "%" does not exist', conn_names[i]
                USING ERRCODE = '08003',
                      DETAIL = 'It is named in conn_names; nothing was sent to any node.',
                      HINT = pg_catalog.format(
                          'Open it first with SELECT %s.ensure_dblink_conn(%L, <foreign server or connection string>).',
                          {{ schema_literal }}, conn_names[i]);
        END IF;
        links[i] := link;
        phase[i] := 0;
        emitted[i] := false;
        ok[i] := false;
        resent[i] := false;
        had_tx[i] := COALESCE({{ schema }}._tx_key(link) = ANY (held), false);
    END LOOP;
    IF typed THEN
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
            value_sql := 'r.value::text';
        ELSE
            value_sql := pg_catalog.format('ROW(r.*)::%s::text', pg_catalog.format_type(type_oid, NULL));
        END IF;
    END IF;
    deadline_at := started + deadline;
    stop_at := deadline_at + grace;
    LOOP
        now_at := pg_catalog.clock_timestamp();
        -- Collect what has arrived, without waiting: a result is read only once
        -- dblink_is_busy says it is complete, so dblink_get_result never blocks.
        FOR i IN 1 .. n LOOP
            link := links[i];
            WHILE phase[i] BETWEEN 1 AND 3 AND {{ dblink }}.dblink_is_busy(link) = 0 LOOP
                BEGIN
                    IF phase[i] = 1 THEN
                        SELECT r.s INTO tag FROM {{ dblink }}.dblink_get_result(link) AS r(s text);
                        phase[i] := CASE WHEN typed THEN 2 ELSE 3 END;
                    ELSIF phase[i] = 2 THEN
                        node := conn_names[i];
                        elapsed := pg_catalog.clock_timestamp() - started;
                        RETURN QUERY EXECUTE pg_catalog.format(
                            'SELECT $1, NULL::text, NULL::text, $2, NULL::text, %s '
                            'FROM %s.dblink_get_result($3) AS r(%s)',
                            value_sql, {{ dblink_literal }}, columns)
                            USING node, elapsed, link;
                        emitted[i] := true;
                        ok[i] := true;
                        ok_count := ok_count + 1;
                        phase[i] := 3;
                        PERFORM {{ schema }}._fanout_used(link);
                    ELSE
                        tag := NULL;
                        SELECT r.s INTO tag FROM {{ dblink }}.dblink_get_result(link) AS r(s text);
                        IF FOUND THEN
                            prev_tags[i] := tags[i];
                            tags[i] := tag;
                        ELSE
                            phase[i] := 4;
                            IF NOT typed AND NOT emitted[i] THEN
                                -- The last tag is the closing SET's; the one before is the
                                -- statement's.
                                node := conn_names[i];
                                state := NULL;
                                message := NULL;
                                elapsed := pg_catalog.clock_timestamp() - started;
                                status := prev_tags[i];
                                value := NULL;
                                RETURN NEXT;
                                emitted[i] := true;
                                ok[i] := true;
                                ok_count := ok_count + 1;
                                PERFORM {{ schema }}._fanout_used(link);
                                IF status IN ('BEGIN', 'START TRANSACTION') THEN
                                    PERFORM {{ schema }}._note_tag(link, sql, status);
                                ELSIF pg_catalog.strpos(pg_catalog.rtrim(sql, E' \t\n\r;'), ';') > 0 THEN
                                    PERFORM {{ schema }}._note_statements(link, sql);
                                END IF;
                            END IF;
                        END IF;
                    END IF;
                EXCEPTION WHEN OTHERS OR query_canceled THEN
                    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                            err_message = MESSAGE_TEXT,
                                            err_detail = PG_EXCEPTION_DETAIL,
                                            err_context = PG_EXCEPTION_CONTEXT;
                    -- A cancel of this call (not one a node reported) stops everything.
                    IF err_state = '57014'
                       AND pg_catalog.strpos(err_context, pg_catalog.format('dblink connection named "%s"', link)) = 0 THEN
                        RAISE;
                    END IF;
                    IF {{ schema }}._lost_connection(link, err_state, err_message, false) THEN
                        why[i] := 'lost';
                    ELSIF NOT ok[i] AND NOT emitted[i] THEN
                        -- The remote's own error; the rest of the string was skipped, only the
                        -- final empty result is left to read.
                        IF err_state = '57014' AND pg_catalog.clock_timestamp() >= deadline_at THEN
                            err_message := pg_catalog.format(
                                'still running at the deadline (%s); cancelled on the remote server', deadline);
                        ELSIF err_state = '57014' AND cancelled THEN
                            err_message := pg_catalog.format(
                                'cancelled: min_ok (%s) nodes had succeeded', min_ok);
                        END IF;
                        node := conn_names[i];
                        state := err_state;
                        message := err_message;
                        elapsed := pg_catalog.clock_timestamp() - started;
                        status := NULL;
                        value := NULL;
                        RETURN NEXT;
                        emitted[i] := true;
                        phase[i] := 3;
                    END IF;
                END;
                IF why[i] = 'lost' THEN
                    why[i] := NULL;
                    -- Closed so that the next use reconnects; inside a remote transaction
                    -- that transaction is gone, which the call reports once it has finished.
                    BEGIN
                        PERFORM {{ schema }}._forget_broken(link, err_state, err_message, err_detail);
                    EXCEPTION WHEN OTHERS THEN
                        IF (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE THEN
                            PERFORM {{ dblink }}.dblink_disconnect(link);
                        END IF;
                        PERFORM {{ schema }}._mark_tx(link, false);
                    END;
                    phase[i] := 4;
                    IF emitted[i] THEN
                        CONTINUE;
                    END IF;
                    IF idempotent AND NOT resent[i] AND NOT had_tx[i] AND NOT cancelled
                       AND pg_catalog.clock_timestamp() < deadline_at THEN
                        -- Sent again once, on a connection healed first; a failure to heal is
                        -- the node's outcome.
                        resent[i] := true;
                        phase[i] := 0;
                        next_node := LEAST(next_node, i);
                        CONTINUE;
                    END IF;
                    BEGIN
                        PERFORM {{ schema }}._lost(link, err_state, err_message, err_detail,
                            CASE WHEN had_tx[i] THEN ' (inside an open remote transaction, which is lost)'
                                 WHEN resent[i] THEN ' (sent twice)'
                                 ELSE '' END);
                    EXCEPTION WHEN OTHERS THEN
                        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                                err_message = MESSAGE_TEXT,
                                                err_detail = PG_EXCEPTION_DETAIL;
                    END;
                    node := conn_names[i];
                    state := err_state;
                    message := pg_catalog.concat_ws(': ', err_message, err_detail);
                    elapsed := pg_catalog.clock_timestamp() - started;
                    status := NULL;
                    value := NULL;
                    RETURN NEXT;
                    emitted[i] := true;
                END IF;
            END LOOP;
        END LOOP;
        now_at := pg_catalog.clock_timestamp();
        IF min_ok IS NOT NULL AND ok_count >= min_ok AND NOT cancelled THEN
            -- Enough nodes succeeded: the ones still running are cancelled, the ones not
            -- started never will be.
            cancelled := true;
            FOR i IN 1 .. n LOOP
                IF phase[i] IN (1, 2) OR (phase[i] = 3 AND NOT emitted[i]) THEN
                    PERFORM {{ dblink }}.dblink_cancel_query(links[i]);
                ELSIF phase[i] = 0 THEN
                    node := conn_names[i];
                    IF resent[i] THEN
                        -- Lost once already: whether it was applied is unknown.
                        state := '08007';
                        message := pg_catalog.format(
                            'dblink connection "%s" was lost while running the statement, which may or '
                            'may not have been applied; not sent again: min_ok (%s) nodes had succeeded',
                            conn_names[i], min_ok);
                    ELSE
                        state := '02000';
                        message := pg_catalog.format('not started: min_ok (%s) nodes had succeeded', min_ok);
                    END IF;
                    elapsed := NULL;
                    status := NULL;
                    value := NULL;
                    RETURN NEXT;
                    emitted[i] := true;
                    phase[i] := 4;
                END IF;
            END LOOP;
            stop_at := LEAST(stop_at, pg_catalog.clock_timestamp() + grace);
        END IF;
        -- Start the next node, one per turn so that results are collected in between.
        WHILE next_node <= n AND phase[next_node] <> 0 LOOP
            next_node := next_node + 1;
        END LOOP;
        IF next_node <= n THEN
            i := next_node;
            link := links[i];
            next_node := next_node + 1;
            IF now_at >= deadline_at THEN
                node := conn_names[i];
                IF resent[i] THEN
                    state := '08007';
                    message := pg_catalog.format(
                        'dblink connection "%s" was lost while running the statement, which may or '
                        'may not have been applied; not sent again: the deadline (%s) had passed',
                        conn_names[i], deadline);
                ELSE
                    state := '57014';
                    message := pg_catalog.format(
                        'not started: the deadline (%s) passed while other nodes were being connected', deadline);
                END IF;
                elapsed := now_at - started;
                status := NULL;
                value := NULL;
                RETURN NEXT;
                emitted[i] := true;
                phase[i] := 4;
                CONTINUE;
            END IF;
            BEGIN
                -- Healed as every call heals, with retries only while the deadline allows.
                budget_s := LEAST({{ retry_budget_s }}, EXTRACT(epoch FROM deadline_at - now_at));
                PERFORM {{ schema }}._prepare(link, window_s, {{ max_attempts }}, budget_s);
                -- The remote ends the statement itself at the deadline: a cancel request
                -- could wait without bound on a node that stopped answering. SET LOCAL ends
                -- with the implicit transaction of the string, and inside a remote
                -- transaction the closing SET puts the setting back.
                IF {{ dblink }}.dblink_send_query(link, pg_catalog.concat(
                       'SET LOCAL statement_timeout = ',
                       GREATEST(1, pg_catalog.ceil(EXTRACT(epoch FROM deadline_at - pg_catalog.clock_timestamp()) * 1000)),
                       E';\n', sql, E'\n;SET LOCAL statement_timeout TO DEFAULT')) <> 1 THEN
                    RAISE EXCEPTION 'could not send the statement: %', {{ dblink }}.dblink_error_message(link)
                        USING ERRCODE = '08006';
                END IF;
                phase[i] := 1;
                last_sent := pg_catalog.clock_timestamp();
                tags[i] := NULL;
                prev_tags[i] := NULL;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                        err_message = MESSAGE_TEXT,
                                        err_detail = PG_EXCEPTION_DETAIL;
                IF (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE
                   AND {{ dblink }}.dblink_is_busy(link) = 1 THEN
                    PERFORM {{ dblink }}.dblink_disconnect(link);
                    PERFORM {{ schema }}._mark_tx(link, false);
                END IF;
                node := conn_names[i];
                state := err_state;
                message := pg_catalog.concat_ws(': ', err_message, NULLIF(err_detail, ''));
                elapsed := pg_catalog.clock_timestamp() - started;
                status := NULL;
                value := NULL;
                RETURN NEXT;
                emitted[i] := true;
                phase[i] := 4;
            END;
            CONTINUE;
        END IF;
        running := 0;
        FOR i IN 1 .. n LOOP
            IF phase[i] BETWEEN 1 AND 3 THEN
                running := running + 1;
            END IF;
        END LOOP;
        EXIT WHEN running = 0;
        IF now_at >= stop_at THEN
            -- Neither the remote's cancel nor a result came back in time: closed, which
            -- leaves no result behind; the remote ends the statement at its own timeout.
            FOR i IN 1 .. n LOOP
                CONTINUE WHEN phase[i] NOT BETWEEN 1 AND 3;
                link := links[i];
                PERFORM {{ dblink }}.dblink_disconnect(link);
                PERFORM {{ schema }}._mark_tx(link, false);
                PERFORM {{ schema }}._note(link, pg_catalog.jsonb_build_object(
                    'last_error', '57014',
                    'last_error_at', EXTRACT(epoch FROM now_at)));
                phase[i] := 4;
                IF had_tx[i] THEN
                    lost_tx := lost_tx || conn_names[i];
                END IF;
                CONTINUE WHEN emitted[i];
                node := conn_names[i];
                state := '57014';
                message := CASE WHEN cancelled
                    THEN pg_catalog.format(
                        'cancelled: min_ok (%s) nodes had succeeded; no answer to the cancel, connection closed', min_ok)
                    ELSE pg_catalog.format(
                        'no answer by the deadline (%s) and its grace; connection closed, the remote '
                        'server ends the statement at the deadline', deadline)
                END;
                elapsed := now_at - started;
                status := NULL;
                value := NULL;
                RETURN NEXT;
                emitted[i] := true;
            END LOOP;
            EXIT;
        END IF;
        -- Poll without sleeping for 300 µs after the last statement was sent (the shortest
        -- nap lasts about a millisecond), then nap, the naps growing to 5 ms and never past
        -- the next time limit.
        IF now_at - COALESCE(last_sent, started) > interval '300 microseconds' THEN
            PERFORM pg_catalog.pg_sleep(LEAST(nap,
                GREATEST(0, EXTRACT(epoch FROM CASE WHEN now_at < deadline_at THEN deadline_at ELSE stop_at END - now_at)))
                ::double precision);
            nap := LEAST(nap * 2, 0.005);
        END IF;
    END LOOP;
    FOR i IN 1 .. n LOOP
        IF had_tx[i] AND NOT {{ schema }}._in_tx(links[i])
           AND pg_catalog.array_position(lost_tx, conn_names[i]) IS NULL THEN
            lost_tx := lost_tx || conn_names[i];
        END IF;
    END LOOP;
    IF pg_catalog.cardinality(lost_tx) > 0 THEN
        -- The local transaction must not commit as if that remote work had been done.
        RAISE EXCEPTION 'fan-out lost the open remote transaction of dblink connection(s) %',
                pg_catalog.array_to_string(lost_tx, ', ')
            USING ERRCODE = '08007',
                  DETAIL = 'Their connections broke or were closed at the deadline, which ended the '
                           'remote transaction; what it had done is rolled back on the remote server.',
                  HINT = 'Roll back and run the unit of work again; the next call reconnects.';
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._fanout(
    text[], text, anyelement, boolean, interval, integer, boolean
) IS
'pgdblink_safe internal: fanout and fanout_exec: heal, send, collect, cancel and drain every '
'node; rows come as the text of row_type, for fanout to turn back';
