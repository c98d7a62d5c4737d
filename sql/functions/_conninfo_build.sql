CREATE OR REPLACE FUNCTION {{ schema }}._conninfo_build(
    pairs text[], defaults text[] DEFAULT '{}'
)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
DECLARE
    keys text[] := '{}'::text[];
    vals text[] := '{}'::text[];
    all_pairs constant text[] := COALESCE(pairs, '{}') || COALESCE(defaults, '{}');
    n_pairs constant integer := pg_catalog.cardinality(COALESCE(pairs, '{}'));
    k integer;
    result text := '';
BEGIN
    IF pg_catalog.cardinality(all_pairs) % 2 <> 0 THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'connection string pairs must have an even number of elements';
    END IF;
    FOR i IN 1 .. pg_catalog.cardinality(all_pairs) BY 2 LOOP
        k := pg_catalog.array_position(keys, all_pairs[i]);
        IF k IS NULL THEN
            keys := keys || all_pairs[i];
            vals := vals || all_pairs[i + 1];
        ELSIF i <= n_pairs THEN
            vals[k] := all_pairs[i + 1];    -- a default never overrides the caller
        END IF;
    END LOOP;
    -- Keywords go out unquoted: only plain identifiers are allowed.
    IF pg_catalog.array_position(keys, NULL) IS NOT NULL
       OR pg_catalog.array_to_string(keys, ' ') !~ '^([A-Za-z_][A-Za-z0-9_]*( |$))*$' THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = 'invalid connection option keyword';
    END IF;
    -- A value of printable ASCII without a blank, quote or backslash goes out as it is (easier
    -- to read where it is shown); any other is single-quoted with \ and ' escaped. libpq's
    -- conninfo_parse reads both back verbatim.
    FOR i IN 1 .. pg_catalog.cardinality(keys) LOOP
        CONTINUE WHEN vals[i] IS NULL;
        result := result || CASE WHEN result <> '' THEN ' ' ELSE '' END || keys[i] || '='
            || CASE WHEN vals[i] ~ '^[!-~]+$' AND vals[i] !~ '[''\\]' THEN vals[i]
                    ELSE '''' || pg_catalog.replace(pg_catalog.replace(vals[i], '\', '\\'),
                                                    '''', '\''') || ''''
               END;
    END LOOP;
    RETURN result;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._conninfo_build(text[], text[]) IS
'pgdblink_safe internal: a key/value connection string from (keyword, value) pairs, defaults '
'added where unset';
