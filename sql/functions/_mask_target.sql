CREATE OR REPLACE FUNCTION {{ schema }}._mask_target(target text)
RETURNS text
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
    SELECT pg_catalog.regexp_replace(
        pg_catalog.regexp_replace(
            pg_catalog.regexp_replace(
                target,
                -- key=value form: password = value, value quoted or bare
                $re$(password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S+)$re$, '\1********', 'gi'),
            -- URI form: scheme://user:password@host
            $re$^([a-z]+://[^:/@?]*:)[^@/?]*@$re$, '\1********@', 'i'),
        -- URI query form: ?password=...&
        $re$([?&]password=)[^&]*$re$, '\1********', 'g');
$fn$;
COMMENT ON FUNCTION {{ schema }}._mask_target(text) IS
'pgdblink_safe internal: a connection target with any password replaced by ********';
