CREATE OR REPLACE FUNCTION {{ schema }}._hot(
    link text,
    OUT last_used numeric,
    OUT uses bigint,
    OUT recycle_at numeric,
    OUT max_idle numeric
)
LANGUAGE sql
STABLE
{{ function_settings }}
AS $fn$
    -- The slow paths' reading of <prefix>.h_<key> (sql/README.md); the hot paths read it
    -- inline. All NULL for a connection without state (never used, or rolled back).
    SELECT NULLIF(pg_catalog.split_part(t.s, ' ', 1), '')::numeric,
           NULLIF(pg_catalog.split_part(t.s, ' ', 2), '')::bigint,
           NULLIF(pg_catalog.split_part(t.s, ' ', 3), '')::numeric,
           NULLIF(pg_catalog.split_part(t.s, ' ', 4), '')::numeric
    FROM (SELECT NULLIF(pg_catalog.current_setting({{ guc_hot }} || {{ schema }}._key(link), true), '')
          AS s) AS t;
$fn$;
COMMENT ON FUNCTION {{ schema }}._hot(text) IS
'pgdblink_safe internal: the per-call state of a connection: last use, uses, recycle time, '
'idle limit';
