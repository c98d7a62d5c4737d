CREATE OR REPLACE FUNCTION {{ schema }}._remote_commit(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    conn_name text := pg_catalog.substr(link, 4);
    target text := pg_catalog.current_setting({{ guc_target }} || {{ schema }}._key(link), true);
    xid text;
    asked boolean := false;
    listed boolean;
    lost boolean;
    status text;
    outcome text;
    err_state text;
    err_message text;
    err_detail text;
BEGIN
    -- The remote transaction id with the server instance that gave it, to resolve a
    -- COMMIT whose reply is lost; NULL when the remote work wrote nothing, and then there is
    -- nothing to lose.
    BEGIN
        SELECT r.x INTO xid FROM {{ dblink }}.dblink(link, pg_catalog.format(
            'SELECT pg_catalog.pg_current_xact_id_if_assigned()::text || ''@'' || %s',
            {{ schema }}._instance_sql())) AS r(x text);
        asked := true;
        status := {{ schema }}._status(link, 'COMMIT', {{ remote_commit_timeout_s }});
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                err_message = MESSAGE_TEXT,
                                err_detail = PG_EXCEPTION_DETAIL;
    END;
    IF err_state IS NULL AND status = 'COMMIT' THEN
        PERFORM {{ schema }}._mark_tx(link, false);
        RETURN;
    END IF;
    -- A remote deferred trigger may raise 08006 itself; remote_commit_timeout or a local
    -- cancel may stop the wait while the COMMIT goes on.
    lost := err_state IS NOT NULL AND {{ schema }}._lost_connection(link, err_state, err_message, true);
    listed := (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE;
    IF listed THEN
        PERFORM {{ dblink }}.dblink_disconnect(link);
    END IF;
    PERFORM {{ schema }}._mark_tx(link, false);
    IF err_state IS NULL OR (err_state = '25P02' AND NOT asked) THEN
        -- COMMIT of a transaction that had failed answers ROLLBACK.
        RAISE EXCEPTION 'the remote transaction of dblink connection "%" had failed and was rolled back', conn_name
            USING ERRCODE = '40000',
                  DETAIL = 'A statement in it failed earlier; the local transaction is rolled back too.',
                  HINT = 'Find the failed remote statement, then run the unit of work again.';
    END IF;
    IF NOT lost THEN
        -- The remote refused to commit (a serialization failure, a deferred constraint):
        -- the local transaction must not commit either.
        RAISE EXCEPTION 'the remote transaction of dblink connection "%" did not commit: %', conn_name,
                {{ schema }}._scrub(err_message, target)
            USING ERRCODE = err_state,
                  DETAIL = 'The local transaction is rolled back too.';
    END IF;
    IF asked AND xid IS NULL THEN
        -- The remote transaction wrote nothing: there was nothing to commit.
        RETURN;
    END IF;
    IF xid IS NOT NULL THEN
        outcome := {{ schema }}._resolve(link, xid, {{ max_attempts }},
            {{ retry_budget_s }});
        IF outcome = 'committed' THEN
            RETURN;
        END IF;
    END IF;
    RAISE EXCEPTION 'the remote transaction of dblink connection "%" was lost at commit', conn_name
        USING ERRCODE = CASE WHEN outcome IS NULL OR outcome = 'aborted' THEN '08006' ELSE '08007' END,
              DETAIL = pg_catalog.format(
                  'Remote transaction %s is %s; the local transaction is rolled back. Original error (SQLSTATE %s): %s',
                  COALESCE(pg_catalog.split_part(xid, '@', 1), '(no id)'),
                  COALESCE(outcome, 'lost before its COMMIT was sent'),
                  err_state,
                  {{ schema }}._scrub(pg_catalog.concat_ws(': ', err_message, NULLIF(err_detail, '')), target)),
              HINT = CASE WHEN outcome IS NULL OR outcome = 'aborted'
                  THEN 'Nothing was committed on either side; run the unit of work again.'
                  ELSE 'Check on the remote server whether that transaction committed before running it again.'
              END;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._remote_commit(text) IS
'pgdblink_safe internal: commits a remote_tx connection''s remote transaction, resolving a '
'lost reply with pg_xact_status, or raises so that the local commit fails';
