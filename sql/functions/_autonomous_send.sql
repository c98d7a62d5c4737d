CREATE OR REPLACE FUNCTION {{ schema }}._autonomous_send(
    link text, sql text, search_path text, token text, timeout_s numeric, started timestamptz
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    sent text;
    err_message text;
BEGIN
    -- One query string, one remote transaction (the statements of a simple query run in one
    -- implicit transaction, committed after the last one): a check that the connection leads
    -- to this server, database and role, which also sets the caller's search_path for this
    -- transaction only and takes a shared advisory lock keyed by token until it ends (how
    -- _autonomous_await finds the remote backend, whatever the statement does); the statement; and a row holding token, whose result arrives only once
    -- that transaction has committed. The check fails with a cast error, so that nothing of
    -- the statement runs. The server sends the results together at the end of the string.
    sent := pg_catalog.format(
        'SELECT pg_catalog.set_config(''search_path'', CASE WHEN CURRENT_USER OPERATOR(pg_catalog.=) %L '
        'AND pg_catalog.current_database() OPERATOR(pg_catalog.=) %L '
        'AND pg_catalog.date_part(''epoch'', pg_catalog.pg_postmaster_start_time()) OPERATOR(pg_catalog.=) %s '
        'THEN %L ELSE (''pgdblink_safe: the autonomous connection leads to role '' '
        'OPERATOR(pg_catalog.||) CURRENT_USER OPERATOR(pg_catalog.||) '' in database '' '
        'OPERATOR(pg_catalog.||) pg_catalog.current_database())::integer::text END, true), '
        'pg_catalog.pg_advisory_xact_lock_shared(1886610803, %s);' || E'\n' || '%s' || E'\n' || ';SELECT %L::text',
        CURRENT_USER, pg_catalog.current_database(),
        pg_catalog.date_part('epoch', pg_catalog.pg_postmaster_start_time()),
        search_path, pg_catalog.split_part(token, ':', 2)::integer, sql, token);
    IF {{ dblink }}.dblink_send_query(link, sent) <> 1 THEN
        err_message := {{ dblink }}.dblink_error_message(link);
        PERFORM {{ schema }}._forget_broken(link, '08006', err_message, NULL);
        RAISE EXCEPTION 'could not send the autonomous statement on dblink connection "%"', link
            USING ERRCODE = '08006',
                  DETAIL = pg_catalog.format('Nothing was sent: %s', err_message),
                  HINT = 'The connection was closed; the next call reconnects.';
    END IF;
    PERFORM {{ schema }}._autonomous_await(link, token, timeout_s, started);
    BEGIN
        PERFORM 1 FROM {{ dblink }}.dblink_get_result(link) AS r(path text, locked text);
    EXCEPTION WHEN invalid_text_representation THEN
        GET STACKED DIAGNOSTICS err_message = MESSAGE_TEXT;
        IF pg_catalog.strpos(err_message, 'pgdblink_safe: the autonomous connection leads to') = 0 THEN
            RAISE;
        END IF;
        PERFORM {{ schema }}.safe_dblink_disconnect(link);
        RAISE EXCEPTION 'the autonomous connection does not lead to this server, database and role'
            USING ERRCODE = '28000',
                  DETAIL = pg_catalog.format('Expected role %s in database %s of this server; %s. '
                      'Nothing ran.', CURRENT_USER, pg_catalog.current_database(),
                      pg_catalog.substring(err_message, 'leads to [^"]*')),
                  HINT = 'autonomous_server must name a foreign server for this server and database, '
                         'with a user mapping for each role that logs in as that role.';
    END;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._autonomous_send(text, text, text, text, numeric, timestamptz) IS
'pgdblink_safe internal: sends an autonomous statement, with the identity check and the '
'caller''s search_path before it and token after it, and reads the check''s result';
