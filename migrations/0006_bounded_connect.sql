-- pgdblink_safe migration 0006: schema dblink_safe

CREATE OR REPLACE FUNCTION dblink_safe._conninfo(target text)
RETURNS text
LANGUAGE plpgsql
STABLE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    defaults text := 'connect_timeout=10 keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3 tcp_user_timeout=60000';
BEGIN
    -- dblink reads a target naming a foreign server as that server; anything else is a
    -- connection string, which gets the safe defaults first so the caller's own values win
    -- (libpq keeps the last value of a repeated keyword).
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server WHERE srvname = target) THEN
        RETURN target;
    END IF;
    IF pg_catalog.current_setting('server_version_num')::integer >= 160000 THEN
        -- connect_timeout is not applied here; tcp_user_timeout bounds the handshake.
        defaults := 'connect_timeout=10 keepalives=1 keepalives_idle=30 keepalives_interval=10 keepalives_count=3 tcp_user_timeout=10000';
    END IF;
    IF target ~* '^postgres(ql)?://' THEN
        RETURN CASE
            WHEN pg_catalog.strpos(target, '?') > 0
                THEN pg_catalog.regexp_replace(
                    target, '\?', '?' || pg_catalog.replace(defaults, ' ', '&') || '&')
            ELSE target || '?' || pg_catalog.replace(defaults, ' ', '&')
        END;
    END IF;
    RETURN defaults || ' ' || target;
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._conninfo(text) IS
'pgdblink_safe internal: the connection string dblink_connect gets for a target';
REVOKE EXECUTE ON FUNCTION dblink_safe._conninfo(text) FROM PUBLIC;
