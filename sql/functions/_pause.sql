CREATE OR REPLACE FUNCTION {{ schema }}._pause(
    attempt integer, max_attempts integer, started timestamptz, budget_s numeric
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    remaining_s numeric := budget_s
        - EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started)::numeric;
    cap_s numeric;
BEGIN
    IF attempt >= max_attempts OR remaining_s <= 0 THEN
        RETURN;
    END IF;
    IF attempt = 1 THEN
        -- A dropped connection to a healthy server is back at once: retry almost at once.
        cap_s := {{ backoff_base_s }};
    ELSE
        -- A server on its way back (a restart, a pooler's login retry): spread what is left
        -- of the budget over the attempts left.
        cap_s := LEAST({{ backoff_max_s }}, remaining_s / (max_attempts - attempt));
    END IF;
    cap_s := LEAST(cap_s, remaining_s);
    PERFORM pg_catalog.pg_sleep((cap_s * (0.5 + pg_catalog.random() / 2))::double precision);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._pause(integer, integer, timestamptz, numeric) IS
'pgdblink_safe internal: the wait after failed attempt number attempt, within the retry budget';
