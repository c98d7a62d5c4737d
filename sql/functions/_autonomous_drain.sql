CREATE OR REPLACE FUNCTION {{ schema }}._autonomous_drain(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    n bigint;
    errors integer := 0;
BEGIN
    -- Reads what is left of a query that failed or was cancelled, up to the empty result
    -- that ends it, so that the connection takes the next one. After an error the remote
    -- runs nothing more of the query string, so the first empty result is the end. A
    -- connection that does not get there within 5 s is closed instead.
    LOOP
        IF pg_catalog.clock_timestamp() - started > interval '5 s' THEN
            PERFORM {{ dblink }}.dblink_disconnect(link);
            RETURN;
        END IF;
        IF {{ dblink }}.dblink_is_busy(link) = 1 THEN
            PERFORM pg_catalog.pg_sleep(0.001);
            CONTINUE;
        END IF;
        BEGIN
            SELECT pg_catalog.count(*) INTO n FROM {{ dblink }}.dblink_get_result(link) AS r(ignored text);
        EXCEPTION WHEN OTHERS OR query_canceled THEN
            -- An error result (a cancel's among them), or rows of several columns: not the end yet.
            -- A query string gives one error at most: more mean a broken connection.
            n := -1;
            errors := errors + 1;
            IF errors > 2 THEN
                PERFORM {{ dblink }}.dblink_disconnect(link);
                RETURN;
            END IF;
        END;
        EXIT WHEN n = 0;
    END LOOP;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._autonomous_drain(text) IS
'pgdblink_safe internal: reads the rest of a failed or cancelled autonomous statement, so '
'that its connection stays usable';
