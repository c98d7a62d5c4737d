CREATE OR REPLACE FUNCTION {{ schema }}._conninfo(target text)
RETURNS text
LANGUAGE plpgsql
STABLE
{{ function_settings }}
AS $fn$
DECLARE
    defaults text := {{ conninfo_defaults }};
BEGIN
    -- dblink reads a target naming a foreign server as that server; anything else is a
    -- connection string, which gets the safe defaults first so the caller's own values win
    -- (libpq keeps the last value of a repeated keyword).
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server WHERE srvname = target) THEN
        RETURN target;
    END IF;
    IF pg_catalog.current_setting('server_version_num')::integer >= 160000 THEN
        -- connect_timeout is not applied here; tcp_user_timeout bounds the handshake.
        defaults := {{ conninfo_defaults_16 }};
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
COMMENT ON FUNCTION {{ schema }}._conninfo(text) IS
'pgdblink_safe internal: the connection string dblink_connect gets for a target';
