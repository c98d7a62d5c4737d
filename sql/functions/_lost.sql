CREATE OR REPLACE FUNCTION {{ schema }}._lost(
    conn_name text, err_state text, err_message text, err_detail text, what text
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
BEGIN
    RAISE EXCEPTION 'dblink connection "%" was lost while running a statement; it may or may not have been applied', conn_name
        USING ERRCODE = '08007',
              DETAIL = pg_catalog.format('Original error (SQLSTATE %s): %s%s', err_state,
                  {{ schema }}._scrub(pg_catalog.concat_ws(': ', err_message, NULLIF(err_detail, '')),
                      pg_catalog.current_setting({{ guc_target }} || {{ schema }}._key(conn_name), true)),
                  what),
              HINT = 'Check on the remote server whether it took effect before running it again; '
                     'pass idempotent => true for statements that are safe to repeat, or '
                     'resolve => true to have the outcome checked. The next call reconnects.';
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._lost(text, text, text, text, text) IS
'pgdblink_safe internal: raises 08007 for a statement whose outcome is unknown';
