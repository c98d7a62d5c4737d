CREATE OR REPLACE FUNCTION {{ schema }}._scrub(message text, target text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
DECLARE
    scan text[];
    secrets text[] := '{}'::text[];
    suspects text[] := '{}'::text[];
    secret text;
BEGIN
    IF message IS NULL OR message = '' OR target IS NULL
       OR NOT (pg_catalog.strpos(target, '=') > 0
            OR target ~ '^[ \t\n\r\f\v]*[A-Za-z][A-Za-z0-9+.-]*://') THEN
        RETURN message;
    END IF;
    BEGIN
        -- libpq 17's rules: they find every secret either libpq version would read.
        scan := {{ schema }}._conninfo_scan(target, 17);
    EXCEPTION WHEN invalid_parameter_value OR character_not_in_repertoire THEN
        -- libpq's parse errors quote fragments of the string (a keyword, a query parameter,
        -- the whole URI) and where the password is cannot be known: every run of 3 or more
        -- characters the message shares with the target, as written or percent-decoded, is
        -- masked. This does not depend on the language of the message.
        message := {{ schema }}._mask_common(message, target);
        RETURN {{ schema }}._mask_common(message, {{ schema }}._conninfo_decode(target, false));
    END;
    FOR i IN 1 .. pg_catalog.cardinality(scan) BY 4 LOOP
        IF scan[i + 3] IN ('secret', 'suspect') THEN
            -- Every value of a secret keyword, also one a later value overrides: decoded, as
            -- written (percent-encoded, backslash-escaped), trimmed as libpq 18 trims it, and
            -- escaped as _conninfo_build quotes it.
            secrets := secrets || scan[i + 1] || scan[i + 2]
                || pg_catalog.btrim(scan[i + 1], ' ')
                || pg_catalog.replace(pg_catalog.replace(scan[i + 1], '\', '\\'), '''', '\''');
        END IF;
        IF scan[i + 3] = 'suspect' THEN
            -- An unencoded password libpq split: its pieces went into the host, port or
            -- dbname, which errors quote; every 3+ character piece of it is masked.
            suspects := suspects || scan[i + 1] || scan[i + 2];
        END IF;
        IF scan[i] = 'dbname' AND (pg_catalog.strpos(scan[i + 1], '=') > 0
                                   OR scan[i + 1] ~ '^postgres(ql)?://') THEN
            -- A dbname that is itself a connection string: the server quotes it back
            -- ("database ... does not exist"); its secrets are masked as well.
            message := {{ schema }}._scrub(message, scan[i + 1]);
        END IF;
    END LOOP;
    FOR secret IN
        SELECT DISTINCT ON (pg_catalog.length(x), x) x
        FROM pg_catalog.unnest(secrets) AS x
        WHERE x <> ''
        ORDER BY pg_catalog.length(x) DESC, x
    LOOP
        message := pg_catalog.replace(message, secret, '********');
    END LOOP;
    FOREACH secret IN ARRAY suspects LOOP
        message := {{ schema }}._mask_common(message, secret);
    END LOOP;
    RETURN message;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._scrub(text, text) IS
'pgdblink_safe internal: an error text with every secret of the target masked';
