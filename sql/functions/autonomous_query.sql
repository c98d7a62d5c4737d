CREATE OR REPLACE FUNCTION {{ schema }}.autonomous_query(
    sql text, row_type anyelement, timeout interval DEFAULT NULL
)
RETURNS SETOF anyelement
LANGUAGE plpgsql
VOLATILE
-- No SET clause, as autonomous_exec: the caller's search_path is what it passes on.
AS $fn$
BEGIN
    RETURN QUERY SELECT * FROM {{ schema }}._autonomous_query(
        sql, row_type, timeout, pg_catalog.current_setting('search_path'));
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}.autonomous_query(text, anyelement, interval) IS
'pgdblink_safe: runs a query in a transaction of its own on this database, as the current '
'role with the caller''s search_path, and returns its rows as row_type''s type; committed '
'whatever the caller does next; 40P01 instead of waiting for the caller''s own locks';
