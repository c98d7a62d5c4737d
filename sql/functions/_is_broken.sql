CREATE OR REPLACE FUNCTION {{ schema }}._is_broken(sqlstate text, message text)
RETURNS boolean
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
    -- Class 08 and the server's shutdown and idle-timeout codes mean the connection is gone;
    -- dblink's row-returning function reports a failed send as XX000 with this message only.
    SELECT pg_catalog.left(sqlstate, 2) = '08'
        OR sqlstate IN ('57P01', '57P02', '57P03', '57P05', '25P03')
        OR (sqlstate = 'XX000' AND message LIKE 'could not send query%');
$fn$;
COMMENT ON FUNCTION {{ schema }}._is_broken(text, text) IS
'pgdblink_safe internal: true when an error means the dblink connection is broken';
