CREATE OR REPLACE FUNCTION {{ schema }}._check_options(
    timeout interval,
    validation_window interval,
    max_attempts integer,
    retry_budget interval,
    max_lifetime interval,
    max_idle interval
)
RETURNS void
LANGUAGE plpgsql
IMMUTABLE
PARALLEL SAFE
{{ function_settings }}
AS $fn$
BEGIN
    -- NULL means the installed default. The upper limits catch a unit mistake (minutes for
    -- seconds, a stray digit) before it turns into a wait nobody meant.
    IF timeout <= interval '0' OR timeout > interval '1 day' THEN
        RAISE EXCEPTION 'timeout must be more than 0 and at most 1 day, not %', timeout
            USING ERRCODE = '22023', HINT = 'Leave it NULL to wait as long as the statement runs.';
    END IF;
    IF validation_window < interval '0' OR validation_window > interval '1 day' THEN
        RAISE EXCEPTION 'validation_window must be from 0 to 1 day, not %', validation_window
            USING ERRCODE = '22023', HINT = '0 proves the connection alive before every statement.';
    END IF;
    IF max_attempts < 1 OR max_attempts > 100 THEN
        RAISE EXCEPTION 'max_attempts must be from 1 to 100, not %', max_attempts
            USING ERRCODE = '22023', HINT = '1 means no retry.';
    END IF;
    IF retry_budget < interval '0' OR retry_budget > interval '1 hour' THEN
        RAISE EXCEPTION 'retry_budget must be from 0 to 1 hour, not %', retry_budget
            USING ERRCODE = '22023';
    END IF;
    IF max_lifetime < interval '0' OR max_lifetime > interval '365 days' THEN
        RAISE EXCEPTION 'max_lifetime must be from 0 (no limit) to 365 days, not %', max_lifetime
            USING ERRCODE = '22023';
    END IF;
    IF max_idle < interval '0' OR max_idle > interval '365 days' THEN
        RAISE EXCEPTION 'max_idle must be from 0 (no limit) to 365 days, not %', max_idle
            USING ERRCODE = '22023';
    END IF;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._check_options(
    interval, interval, integer, interval, interval, interval
) IS
'pgdblink_safe internal: 22023 for an option outside its range, naming the option';
