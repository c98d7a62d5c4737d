CREATE OR REPLACE FUNCTION {{ schema }}._fanout_used(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    key text := {{ guc_hot }} || {{ schema }}._key(link);
    state text := pg_catalog.current_setting(key, true);
BEGIN
    -- As after every successful call: used now, once more, so that the next call within the
    -- validation window skips the liveness round trip.
    PERFORM pg_catalog.set_config(key,
        pg_catalog.concat_ws(' ',
            EXTRACT(epoch FROM pg_catalog.clock_timestamp()),
            COALESCE(NULLIF(pg_catalog.split_part(state, ' ', 2), ''), '0')::bigint + 1,
            COALESCE(NULLIF(pg_catalog.split_part(state, ' ', 3), ''), '0'),
            COALESCE(NULLIF(pg_catalog.split_part(state, ' ', 4), ''), '0')),
        false);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._fanout_used(text) IS
'pgdblink_safe internal: records a successful fan-out statement in a connection''s bookkeeping';
