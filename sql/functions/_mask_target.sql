CREATE OR REPLACE FUNCTION {{ schema }}._mask_target(target text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
DECLARE
    scan text[];
    keys text[] := '{}'::text[];
    out text[] := '{}'::text[];
    v text;
    k integer;
BEGIN
    -- A foreign server name (no '=', not URI-like) comes back unchanged. URI-like means any
    -- scheme://, blanks before it allowed, so that " postgresql://u:pw@h" (which libpq
    -- rejects) is never shown as if it were a server name.
    IF target IS NULL OR NOT (pg_catalog.strpos(target, '=') > 0
            OR target ~ '^[ \t\n\r\f\v]*[A-Za-z][A-Za-z0-9+.-]*://') THEN
        RETURN target;
    END IF;
    -- libpq 17's rules keep the blanks of URI components that 18 trims or rejects, so they
    -- find every secret either version would read.
    BEGIN
        scan := {{ schema }}._conninfo_scan(target, 17);
    EXCEPTION WHEN invalid_parameter_value OR character_not_in_repertoire THEN
        RETURN '(invalid connection string, not shown)';
    END;
    -- The string is rebuilt from the parse, so only values are shown, each under its keyword:
    -- a secret never survives in a part that was not recognised.
    FOR i IN 1 .. pg_catalog.cardinality(scan) BY 4 LOOP
        CONTINUE WHEN scan[i] = '#suspect';
        -- A dbname that is itself a connection string is not expanded by PQconnectdb, but
        -- the server quotes it back: hidden too.
        v := CASE WHEN scan[i + 3] IN ('secret', 'tainted')
                    OR (scan[i] = 'dbname' AND (pg_catalog.strpos(scan[i + 1], '=') > 0
                        OR scan[i + 1] ~ '^postgres(ql)?://'))
                  THEN '********' ELSE scan[i + 1] END;
        k := pg_catalog.array_position(keys, scan[i]);
        IF k IS NULL THEN
            keys := keys || scan[i];
            out := out || ARRAY[scan[i], v];
        ELSE
            out[2 * k] := v;
        END IF;
    END LOOP;
    RETURN {{ schema }}._conninfo_build(out);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._mask_target(text) IS
'pgdblink_safe internal: a connection target rebuilt from its parse with every secret '
'replaced by ********';
