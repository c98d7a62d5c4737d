CREATE OR REPLACE FUNCTION {{ schema }}._probe(conn_name text, run boolean)
RETURNS text
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    nap numeric := 0.0005;
    err_state text;
    err_message text;
    leads_to text;
    instance text;
BEGIN
    -- One row that names where the connection leads: the database, the role and the
    -- cluster's system identifier. A pooler that spreads one client connection over the
    -- servers of one cluster (a primary and its standbys) gives the same answer from each.
    -- With run, also the server run it reached, which resolve => true keeps with the ids of
    -- its transactions: reading it in every transaction would cost more than the statement,
    -- and on a new backend as much as the connect (the statistics it reads are cold).
    IF {{ dblink }}.dblink_send_query(conn_name,
        'SELECT pg_catalog.concat_ws(''/'', pg_catalog.current_database(), CURRENT_USER, '
        '(SELECT c.system_identifier FROM pg_catalog.pg_control_system() AS c)), '
        || CASE WHEN run THEN {{ schema }}._instance_sql() ELSE 'NULL::text' END) <> 1 THEN
        RETURN NULL;
    END IF;
    WHILE {{ dblink }}.dblink_is_busy(conn_name) = 1 LOOP
        IF pg_catalog.clock_timestamp() - started
           >= pg_catalog.make_interval(secs => {{ connect_timeout_s }}) THEN
            -- Silent for as long as a connect may take: dead. The caller closes it.
            RETURN NULL;
        END IF;
        PERFORM pg_catalog.pg_sleep(nap::double precision);
        nap := LEAST(nap * 2, 0.01);
    END LOOP;
    BEGIN
        SELECT p.identity, p.instance INTO leads_to, instance
        FROM {{ dblink }}.dblink_get_result(conn_name) AS p(identity text, instance text);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
        -- Leave the connection ready for the next statement.
        BEGIN
            PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name, false) AS r(ignored text);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
        -- Any other error (a remote transaction in failed state, say) came from a live
        -- remote that could not say where it is.
        RETURN CASE WHEN NOT {{ schema }}._is_broken(err_state, err_message) THEN '' END;
    END;
    -- The empty result that ends an asynchronous query must be read before the next one.
    PERFORM 1 FROM {{ dblink }}.dblink_get_result(conn_name) AS p(identity text, instance text);
    IF run THEN
        PERFORM {{ schema }}._note(conn_name, pg_catalog.jsonb_build_object('instance', instance));
    END IF;
    RETURN COALESCE(leads_to, '');
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
    RETURN CASE WHEN NOT {{ schema }}._is_broken(err_state, err_message) THEN '' END;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._probe(text, boolean) IS
'pgdblink_safe internal: proves a listed dblink connection alive with one round trip, within '
'connect_timeout, with run also noting the server run it reached; returns where it leads '
'(database/role/system identifier), '''' when a live remote could not say, NULL when dead';
