CREATE OR REPLACE FUNCTION {{ schema }}.autonomous_exec(sql text, timeout interval DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
VOLATILE
-- No SET clause, unlike every other function of the toolkit: the caller's search_path is
-- what this function passes on, and a SET clause would hide it. The body names everything
-- with its schema, so no search_path can change what it calls.
AS $fn$
BEGIN
    RETURN {{ schema }}._autonomous_exec(sql, timeout, pg_catalog.current_setting('search_path'));
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}.autonomous_exec(text, interval) IS
'pgdblink_safe: runs sql in a transaction of its own on this database, as the current role '
'with the caller''s search_path, committed whatever the caller does next; one healed '
'connection per session and role; 40P01 instead of waiting for the caller''s own locks';
