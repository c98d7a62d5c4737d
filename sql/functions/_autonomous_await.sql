CREATE OR REPLACE FUNCTION {{ schema }}._autonomous_await(
    link text, token text, timeout_s numeric, started timestamptz
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    nap numeric := 0.0005;
    polled_from timestamptz := pg_catalog.clock_timestamp();
    next_check timestamptz := pg_catalog.clock_timestamp() + interval '2 milliseconds';
    lock_type text;
    lock_mode text;
    what text;
    relation text;
    remote_pid integer;
BEGIN
    -- As _await (polling without sleeping for the first 300 µs of this wait), and more: the remote backend runs on this server, so a wait for a lock that
    -- this backend holds is seen in pg_blocking_pids. The server's deadlock detector cannot
    -- see it (the edge back to this backend runs through a client connection), and neither
    -- side would ever go on. Checked after 2 ms, then every 20 ms.
    WHILE {{ dblink }}.dblink_is_busy(link) = 1 LOOP
        IF timeout_s IS NOT NULL
           AND pg_catalog.clock_timestamp() - started >= pg_catalog.make_interval(secs => timeout_s::double precision) THEN
            -- The remote backend is on this server: the cancel request is answered at once,
            -- and closing the connection leaves nothing pending.
            PERFORM {{ dblink }}.dblink_cancel_query(link);
            PERFORM {{ dblink }}.dblink_disconnect(link);
            RAISE EXCEPTION 'autonomous statement on dblink connection "%" timed out after % s', link,
                    pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started)::numeric, 3)
                USING ERRCODE = '57014',
                      DETAIL = 'It was cancelled and its connection closed: its transaction did not commit, '
                               'unless it had finished when the cancel arrived.',
                      HINT = 'Raise timeout, or find what the statement waited for; the next call reconnects.';
        END IF;
        IF pg_catalog.clock_timestamp() >= next_check THEN
            -- The remote backend is the one that holds the advisory lock keyed by token,
            -- taken by the query string before the statement.
            SELECT l.pid INTO remote_pid FROM pg_catalog.pg_locks AS l
            WHERE l.locktype = 'advisory' AND l.classid = 1886610803::oid
              AND l.objid = pg_catalog.split_part(token, ':', 2)::oid AND l.objsubid = 2
              AND l.granted
            LIMIT 1;
            IF pg_catalog.pg_backend_pid() = ANY (pg_catalog.pg_blocking_pids(remote_pid)) THEN
                SELECT l.locktype, l.mode,
                       CASE l.locktype
                           WHEN 'relation' THEN 'relation ' || l.relation::regclass::text
                           WHEN 'transactionid' THEN 'transaction ' || l.transactionid::text
                           WHEN 'tuple' THEN pg_catalog.format('row (%s,%s) of relation %s',
                               l.page, l.tuple, l.relation::regclass::text)
                           ELSE pg_catalog.concat_ws(' ', l.locktype, l.relation::regclass::text)
                       END
                INTO lock_type, lock_mode, what
                FROM pg_catalog.pg_locks AS l
                WHERE l.pid = remote_pid AND NOT l.granted
                LIMIT 1;
                -- Waiting for a row: the lock it waits for is the transaction that changed
                -- the row; the row's relation is in the tuple lock it holds meanwhile.
                SELECT l.relation::regclass::text INTO relation
                FROM pg_catalog.pg_locks AS l
                WHERE l.pid = remote_pid AND l.locktype = 'tuple' AND l.granted
                LIMIT 1;
                PERFORM {{ dblink }}.dblink_cancel_query(link);
                PERFORM {{ schema }}._autonomous_drain(link);
                RAISE EXCEPTION 'autonomous statement waits for a lock its caller holds: %',
                        COALESCE(what, 'unknown lock')
                          || CASE WHEN relation IS NOT NULL AND lock_type = 'transactionid'
                                  THEN ', which updated a row of relation ' || relation ELSE '' END
                    USING ERRCODE = '40P01',
                          DETAIL = pg_catalog.format(
                              'Backend %s of the autonomous connection waited for %s on %s, held by '
                              'this backend (%s), which waited for it. It was cancelled: nothing of it '
                              'committed, and the connection stays open.',
                              remote_pid, COALESCE(lock_mode, 'a lock'), COALESCE(what, 'an object'),
                              pg_catalog.pg_backend_pid()),
                          HINT = 'An autonomous transaction cannot wait for its caller: run it before the '
                                 'caller locks or changes what it uses, or after the caller commits.';
            END IF;
            next_check := pg_catalog.clock_timestamp() + interval '20 milliseconds';
        END IF;
        IF pg_catalog.clock_timestamp() - polled_from > interval '300 microseconds' THEN
            PERFORM pg_catalog.pg_sleep(nap::double precision);
            nap := LEAST(nap * 2, 0.01);
        END IF;
    END LOOP;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._autonomous_await(text, text, numeric, timestamptz) IS
'pgdblink_safe internal: waits for the next result of an autonomous statement; raises 40P01 '
'when it waits for a lock the caller holds, 57014 at the timeout';
