-- pgdblink_safe migration 0007: schema dblink_safe, dblink in public

CREATE FUNCTION dblink_safe._pause(
    attempt integer, max_attempts integer, started timestamptz, budget_s numeric
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
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
        cap_s := 0.05;
    ELSE
        -- A server on its way back (a restart, a pooler's login retry): spread what is left
        -- of the budget over the attempts left.
        cap_s := LEAST(2.0, remaining_s / (max_attempts - attempt));
    END IF;
    cap_s := LEAST(cap_s, remaining_s);
    PERFORM pg_catalog.pg_sleep((cap_s * (0.5 + pg_catalog.random() / 2))::double precision);
END;
$fn$;
COMMENT ON FUNCTION dblink_safe._pause(integer, integer, timestamptz, numeric) IS
'pgdblink_safe internal: the wait after failed attempt number attempt, within the retry budget';

CREATE OR REPLACE FUNCTION dblink_safe._reopen(
    conn_name text, target text, listed boolean, max_attempts integer, budget_s numeric
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
    err_state text;
    err_message text;
    err_detail text;
    err_hint text;
BEGIN
    IF max_attempts IS NULL OR max_attempts < 1 THEN
        RAISE EXCEPTION 'max_attempts must be at least 1, not %', max_attempts
            USING ERRCODE = '22023';
    END IF;
    IF budget_s IS NULL OR budget_s < 0 THEN
        RAISE EXCEPTION 'retry_budget must not be negative' USING ERRCODE = '22023';
    END IF;
    LOOP
        attempt := attempt + 1;
        BEGIN
            PERFORM dblink_safe._open(conn_name, target, listed);
            RETURN;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                    err_message = MESSAGE_TEXT,
                                    err_detail = PG_EXCEPTION_DETAIL,
                                    err_hint = PG_EXCEPTION_HINT;
        END;
        listed := false;
        -- Refused or unreachable (a restart in progress, say) may pass; a rejected password,
        -- a missing user mapping or a startup parameter a pooler refuses will not, so those
        -- are not retried.
        EXIT WHEN NOT (pg_catalog.left(err_state, 2) = '08' OR err_state = '57P03')
               OR err_detail ~ '(authentication|password|does not exist|no pg_hba|unsupported startup parameter)'
               OR attempt >= max_attempts
               OR EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started) >= budget_s;
        PERFORM dblink_safe._pause(attempt, max_attempts, started, budget_s);
    END LOOP;
    RAISE EXCEPTION '%', err_message
        USING ERRCODE = err_state,
              DETAIL = pg_catalog.format('%s (%s attempt(s) in %s s)', err_detail, attempt,
                  pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started)::numeric, 3)),
              HINT = err_hint;
END;
$fn$;

CREATE OR REPLACE FUNCTION dblink_safe._next_attempt(
    conn_name text,
    err_state text,
    err_message text,
    err_detail text,
    safe_to_repeat boolean,
    attempt integer,
    max_attempts integer,
    started timestamptz,
    budget_s numeric,
    window_s numeric
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NOT safe_to_repeat THEN
        PERFORM dblink_safe._lost(conn_name, err_state, err_message, err_detail, '');
    END IF;
    IF attempt >= max_attempts
       OR EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started) >= budget_s THEN
        PERFORM dblink_safe._lost(conn_name, err_state, err_message, err_detail,
            pg_catalog.format(' (gave up after %s attempt(s))', attempt));
    END IF;
    PERFORM dblink_safe._pause(attempt, max_attempts, started, budget_s);
    PERFORM dblink_safe._prepare(conn_name, window_s, max_attempts, budget_s);
END;
$fn$;

DROP FUNCTION dblink_safe._backoff(integer);

REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA dblink_safe FROM PUBLIC;
