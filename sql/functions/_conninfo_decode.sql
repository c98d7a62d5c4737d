CREATE OR REPLACE FUNCTION {{ schema }}._conninfo_decode(
    str text, strict_mode boolean DEFAULT TRUE, trim_spaces boolean DEFAULT FALSE
)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
{{ function_settings }}
AS $fn$
DECLARE
    result text := '';
    m text[];
BEGIN
    -- libpq's conninfo_uri_decode: %XX (hex, either case) is that byte; a '%' without two hex
    -- digits, and %00, are errors. libpq 18 also trims blanks (' ' only) around a component
    -- and rejects one inside ("use %20"): trim_spaces. strict_mode => false decodes what it
    -- can and returns the input unchanged where it cannot (only to find secrets in a string
    -- libpq rejects). Messages are fixed texts: they never quote the input.
    IF trim_spaces AND pg_catalog.strpos(str, ' ') > 0 THEN
        str := pg_catalog.btrim(str, ' ');
        IF pg_catalog.strpos(str, ' ') > 0 THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = 'invalid connection string: blank inside a URI component (use %20)';
        END IF;
    END IF;
    IF pg_catalog.strpos(str, '%') = 0 THEN
        RETURN str;
    END IF;
    IF str ~ '%(?![0-9A-Fa-f]{2})' OR pg_catalog.strpos(str, '%00') > 0 THEN
        IF strict_mode THEN
            RAISE EXCEPTION USING ERRCODE = '22023',
                MESSAGE = 'invalid connection string: invalid percent-encoded token';
        END IF;
        RETURN str;
    END IF;
    FOR m IN
        SELECT r
        FROM pg_catalog.regexp_matches(str, '((?:%[0-9A-Fa-f]{2})+)|([^%]+)', 'g') AS r
    LOOP
        IF m[1] IS NULL THEN
            result := result || m[2];
        ELSE
            BEGIN
                -- The bytes are read in the database encoding, the encoding of the text
                -- dblink hands libpq.
                result := result || pg_catalog.convert_from(
                    pg_catalog.decode(pg_catalog.replace(m[1], '%', ''), 'hex'),
                    pg_catalog.getdatabaseencoding());
            EXCEPTION WHEN character_not_in_repertoire OR untranslatable_character THEN
                -- libpq would pass these bytes on, but text cannot hold them: NULL, and the
                -- caller decides (a later value of the same keyword may replace this one).
                RETURN CASE WHEN strict_mode THEN NULL ELSE str END;
            END;
        END IF;
    END LOOP;
    RETURN result;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._conninfo_decode(text, boolean, boolean) IS
'pgdblink_safe internal: a URI component percent-decoded as libpq does';
