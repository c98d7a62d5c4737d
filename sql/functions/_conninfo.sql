CREATE OR REPLACE FUNCTION {{ schema }}._conninfo(target text)
RETURNS text
LANGUAGE plpgsql
STABLE
{{ function_settings }}
AS $fn$
DECLARE
    version_num constant integer := pg_catalog.current_setting('server_version_num')::integer;
    defaults text := {{ conninfo_defaults }};
BEGIN
    -- dblink reads a target naming a foreign server as that server. Anything else is a
    -- connection string: parsed by libpq's rules (22023 for one libpq would reject, before
    -- anything connects) and rebuilt as key/value pairs, the safe defaults added where the
    -- caller set nothing. Nothing is spliced into the caller's text: a default appended to
    -- a URI whose password holds a '?' became part of that password.
    IF EXISTS (SELECT 1 FROM pg_catalog.pg_foreign_server WHERE srvname = target) THEN
        RETURN target;
    END IF;
    IF version_num >= 160000 THEN
        -- connect_timeout is not applied here; tcp_user_timeout bounds the handshake.
        defaults := {{ conninfo_defaults_16 }};
    END IF;
    -- The server's major version stands for that of the libpq dblink runs with (18 changed
    -- how URI components treat blanks).
    RETURN {{ schema }}._conninfo_build(
        {{ schema }}._conninfo_parse(target, version_num / 10000),
        {{ schema }}._conninfo_parse(defaults));
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._conninfo(text) IS
'pgdblink_safe internal: the connection string dblink_connect gets for a target';
