CREATE OR REPLACE FUNCTION {{ schema }}.safe_dblink_disconnect_all()
RETURNS integer
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    closed integer := 0;
    name text;
BEGIN
    FOR name IN SELECT c.conn_name FROM {{ schema }}.connections() AS c LOOP
        IF {{ schema }}.safe_dblink_disconnect(name) THEN
            closed := closed + 1;
        END IF;
    END LOOP;
    RETURN closed;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}.safe_dblink_disconnect_all() IS
'pgdblink_safe: closes and forgets every toolkit connection of this session; '
'returns how many were open';
