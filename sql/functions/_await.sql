CREATE OR REPLACE FUNCTION {{ schema }}._await(
    conn_name text, timeout_s numeric, started timestamptz
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    nap numeric := 0.0005;
BEGIN
    -- dblink_is_busy reads without blocking. Most statements answer within a few hundred
    -- microseconds, and the shortest sleep PL/pgSQL has lasts about a millisecond: poll
    -- without sleeping for the first 300 µs, then sleep, the naps growing to 10 ms.
    WHILE {{ dblink }}.dblink_is_busy(conn_name) = 1 LOOP
        IF pg_catalog.clock_timestamp() - started >= pg_catalog.make_interval(secs => timeout_s::double precision) THEN
            -- Closing is the only bounded way out: dblink_cancel_query can block on a peer
            -- that stopped answering. The next call reconnects.
            PERFORM {{ dblink }}.dblink_disconnect(conn_name);
            RAISE EXCEPTION 'statement on dblink connection "%" timed out after % s', conn_name,
                    pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started)::numeric, 3)
                USING ERRCODE = '57014',
                      DETAIL = 'The connection was closed; the remote server may still complete the statement.',
                      HINT = 'Raise timeout, or check the remote server; the next call reconnects.';
        END IF;
        IF pg_catalog.clock_timestamp() - started > interval '300 microseconds' THEN
            PERFORM pg_catalog.pg_sleep(nap::double precision);
            nap := LEAST(nap * 2, 0.01);
        END IF;
    END LOOP;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._await(text, numeric, timestamptz) IS
'pgdblink_safe internal: waits until a result of a query sent asynchronously is ready, '
'closing the connection with 57014 at timeout_s after started';
