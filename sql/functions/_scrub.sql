CREATE OR REPLACE FUNCTION {{ schema }}._scrub(message text, target text)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
DECLARE
    secret text;
    piece text;
BEGIN
    IF message IS NULL OR target IS NULL THEN
        RETURN message;
    END IF;
    -- libpq quotes fragments of a malformed connection string in its errors; any fragment of
    -- the password could be among them.
    FOR secret IN
        SELECT m[1]
        FROM pg_catalog.regexp_matches(
            target,
            $re$(?:password\s*=\s*'((?:[^'\\]|\\.)*)'?|password\s*=\s*(\S+)|^[a-z]+://[^:/@?]*:([^@/?]*)@|[?&]password=([^&]*))$re$,
            'gi') AS r(m0),
            LATERAL (SELECT ARRAY[COALESCE(m0[1], m0[2], m0[3], m0[4])]) AS x(m)
    LOOP
        CONTINUE WHEN secret IS NULL OR secret = '';
        message := pg_catalog.replace(message, secret, '********');
        FOREACH piece IN ARRAY pg_catalog.regexp_split_to_array(secret, $re$[\s'\\]+$re$) LOOP
            IF pg_catalog.length(piece) >= 2 THEN
                message := pg_catalog.replace(message, piece, '********');
            END IF;
        END LOOP;
    END LOOP;
    RETURN message;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._scrub(text, text) IS
'pgdblink_safe internal: an error text with every fragment of the target''s password masked';
