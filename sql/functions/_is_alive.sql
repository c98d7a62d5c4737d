CREATE OR REPLACE FUNCTION {{ schema }}._is_alive(conn_name text)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    nap numeric := 0.0005;
    err_state text;
    err_message text;
BEGIN
    -- A one-row query is the cheapest statement dblink accepts on every version that
    -- reaches the remote and leaves nothing behind.
    IF {{ dblink }}.dblink_send_query(conn_name, 'SELECT 1') <> 1 THEN
        RETURN false;
    END IF;
    WHILE {{ dblink }}.dblink_is_busy(conn_name) = 1 LOOP
        IF pg_catalog.clock_timestamp() - started
           >= pg_catalog.make_interval(secs => {{ connect_timeout_s }}) THEN
            -- Silent for as long as a connect may take: dead. The caller closes it.
            RETURN false;
        END IF;
        PERFORM pg_catalog.pg_sleep(nap::double precision);
        nap := LEAST(nap * 2, 0.01);
    END LOOP;
    BEGIN
        PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name) AS probe(one integer);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
        -- Leave the connection ready for the next statement.
        BEGIN
            PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name, false) AS r(ignored text);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
        -- Any other error (a remote transaction in failed state, say) came from a live remote.
        RETURN NOT {{ schema }}._is_broken(err_state, err_message);
    END;
    -- The empty result that ends an asynchronous query must be read before the next one.
    PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name) AS probe(one integer);
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    RETURN NOT {{ schema }}._is_broken(err_state, err_message);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._is_alive(text) IS
'pgdblink_safe internal: proves a listed dblink connection alive with one round trip, '
'within connect_timeout';
