CREATE OR REPLACE FUNCTION {{ schema }}.fanout(
    conn_names text[],
    sql text,
    row_type anyelement,
    deadline interval DEFAULT '30 seconds',
    min_ok integer DEFAULT NULL,
    idempotent boolean DEFAULT FALSE
)
RETURNS TABLE (conn_name text, sqlstate text, message text, elapsed interval, value anyelement)
LANGUAGE sql
VOLATILE
{{ function_settings }}
AS $fn$
    SELECT f.node, f.state, f.message, f.elapsed,
           CASE WHEN f.state IS NULL THEN (SELECT {{ schema }}._typed(f.value, row_type)) END
    FROM {{ schema }}._fanout(conn_names, sql, row_type, TRUE, deadline, min_ok, idempotent) AS f;
$fn$;
COMMENT ON FUNCTION {{ schema }}.fanout(text[], text, anyelement, interval, integer, boolean) IS
'pgdblink_safe: runs one query on many connections in parallel: its rows typed by row_type '
'(sqlstate NULL), or one row per failed node with its sqlstate and message; bounded by deadline';
