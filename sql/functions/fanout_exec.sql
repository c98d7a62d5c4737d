CREATE OR REPLACE FUNCTION {{ schema }}.fanout_exec(
    conn_names text[],
    sql text,
    deadline interval DEFAULT '30 seconds',
    min_ok integer DEFAULT NULL,
    idempotent boolean DEFAULT FALSE
)
RETURNS TABLE (conn_name text, sqlstate text, message text, elapsed interval, status text)
LANGUAGE sql
VOLATILE
{{ function_settings }}
AS $fn$
    SELECT f.node, f.state, f.message, f.elapsed, f.status
    FROM {{ schema }}._fanout(
        conn_names, sql, NULL::text, FALSE, deadline, min_ok, idempotent
    ) AS f;
$fn$;
COMMENT ON FUNCTION {{ schema }}.fanout_exec(text[], text, interval, integer, boolean) IS
'pgdblink_safe: runs one command on many connections in parallel, one row per node: its '
'command status, or its sqlstate and message; bounded by deadline';
