CREATE OR REPLACE FUNCTION {{ schema }}._typed(value text, row_type anyelement)
RETURNS SETOF anyelement
LANGUAGE plpgsql
STABLE
{{ function_settings }}
AS $fn$
DECLARE
    type_name text := pg_catalog.format_type(pg_catalog.pg_typeof(row_type), NULL);
BEGIN
    -- The text form of a value converts back to the same value for every type; a row type
    -- is expanded into its columns, as RETURN QUERY wants them.
    IF pg_catalog.pg_typeof(row_type) IN (
           SELECT t.oid FROM pg_catalog.pg_type AS t WHERE t.typtype = 'c') THEN
        RETURN QUERY EXECUTE pg_catalog.format('SELECT ($1::%s).*', type_name) USING value;
    ELSE
        RETURN QUERY EXECUTE pg_catalog.format('SELECT $1::%s', type_name) USING value;
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._typed(text, anyelement) IS
'pgdblink_safe internal: the value of row_type''s type whose text form is value, as one row';
