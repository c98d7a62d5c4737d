CREATE OR REPLACE FUNCTION {{ schema }}._mask_common(
    message text, hay text, min_len integer DEFAULT 3
)
RETURNS text
LANGUAGE plpgsql
IMMUTABLE
STRICT
PARALLEL SAFE
{{ function_settings }}
AS $fn$
DECLARE
    n constant integer := pg_catalog.length(message);
    i integer := 1;
    len integer;
    result text := '';
BEGIN
    -- Leftmost, longest first: each run of at least min_len characters that also occurs in
    -- hay becomes one ********.
    IF pg_catalog.length(hay) < min_len THEN
        RETURN message;
    END IF;
    WHILE i <= n LOOP
        IF i + min_len - 1 <= n
           AND pg_catalog.strpos(hay, pg_catalog.substr(message, i, min_len)) > 0 THEN
            len := min_len;
            WHILE i + len <= n
                  AND pg_catalog.strpos(hay, pg_catalog.substr(message, i, len + 1)) > 0 LOOP
                len := len + 1;
            END LOOP;
            result := result || '********';
            i := i + len;
        ELSE
            result := result || pg_catalog.substr(message, i, 1);
            i := i + 1;
        END IF;
    END LOOP;
    RETURN result;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._mask_common(text, text, integer) IS
'pgdblink_safe internal: a text with every run of 3 or more characters it shares with another '
'text masked';
