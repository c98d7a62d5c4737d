CREATE OR REPLACE FUNCTION {{ schema }}._rows_refused(conn_name text, err_message text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
BEGIN
    -- dblink_exec refuses rows only once the remote has run the statement: an INSERT ...
    -- RETURNING has been applied (and committed, outside a remote transaction) by then.
    RAISE EXCEPTION '%', err_message
        USING ERRCODE = '2F003',
              DETAIL = pg_catalog.format(
                  'The statement ran on dblink connection "%s" before dblink refused the rows it '
                  'returned: outside a remote transaction it has been committed.', conn_name),
              HINT = 'Run statements that return rows (SELECT, ... RETURNING) with safe_dblink_query.';
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._rows_refused(text, text) IS
'pgdblink_safe internal: 2F003 for a statement that returned rows, saying that it ran';
