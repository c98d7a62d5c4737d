CREATE OR REPLACE FUNCTION {{ schema }}._conninfo_parse(
    target text, libpq_major integer DEFAULT 18
)
RETURNS text[]
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
{{ function_settings }}
AS $fn$
DECLARE
    scan constant text[] := {{ schema }}._conninfo_scan(target, libpq_major);
    keys text[] := '{}'::text[];
    out text[] := '{}'::text[];
    k integer;
BEGIN
    -- What PQconninfoParse reports: each keyword once, with its last value, in order of first
    -- appearance. libpq_major selects the one rule that differs between the libpq versions of
    -- PostgreSQL 14 to 18 (blanks in URI components, see _conninfo_scan).
    FOR i IN 1 .. pg_catalog.cardinality(scan) BY 4 LOOP
        CONTINUE WHEN scan[i] = '#suspect';
        k := pg_catalog.array_position(keys, scan[i]);
        IF k IS NULL THEN
            keys := keys || scan[i];
            out := out || ARRAY[scan[i], scan[i + 1]];
        ELSE
            out[2 * k] := scan[i + 1];
        END IF;
    END LOOP;
    IF pg_catalog.array_position(out, NULL) IS NOT NULL THEN
        -- libpq would accept these bytes, but text cannot hold them.
        RAISE EXCEPTION USING ERRCODE = '22021',
            MESSAGE = 'unsupported connection string: percent-encoded bytes that are not '
                      'valid in the database encoding';
    END IF;
    RETURN out;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._conninfo_parse(text, integer) IS
'pgdblink_safe internal: a libpq connection string (key/value or URI) as (keyword, value) '
'pairs, parsed by libpq''s rules';
