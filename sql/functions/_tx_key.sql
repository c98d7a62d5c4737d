CREATE OR REPLACE FUNCTION {{ schema }}._tx_key(link text)
RETURNS bigint
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
    SELECT pg_catalog.hashtextextended({{ guc_hot }} || link, 0);
$fn$;
COMMENT ON FUNCTION {{ schema }}._tx_key(text) IS
'pgdblink_safe internal: the session advisory lock held while a connection has a remote '
'transaction open';
