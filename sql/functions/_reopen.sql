CREATE OR REPLACE FUNCTION {{ schema }}._reopen(
    conn_name text, target text, listed boolean, max_attempts integer, budget_s numeric
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    started timestamptz := pg_catalog.clock_timestamp();
    attempt integer := 0;
    err_state text;
    err_message text;
    err_detail text;
    err_hint text;
    previous text;
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
            PERFORM {{ schema }}._open(conn_name, target, listed);
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
        -- are not retried. The server words its refusals in its own language, so besides
        -- the English ones: a refusal the server sent (libpq writes those as "SEVERITY:  text",
        -- two blanks, in every language) that comes back word for word is not retried again.
        EXIT WHEN NOT (pg_catalog.left(err_state, 2) = '08' OR err_state = '57P03')
               OR err_detail ~ '(authentication|password|does not exist|no pg_hba|unsupported startup parameter)'
               OR (err_detail ~ '[[:alpha:]]:  ' AND err_detail = previous)
               OR attempt >= max_attempts
               OR EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started) >= budget_s;
        previous := err_detail;
        PERFORM {{ schema }}._pause(attempt, max_attempts, started, budget_s);
    END LOOP;
    RAISE EXCEPTION '%', err_message
        USING ERRCODE = err_state,
              DETAIL = pg_catalog.format('%s (%s attempt(s) in %s s)', err_detail, attempt,
                  pg_catalog.round(EXTRACT(epoch FROM pg_catalog.clock_timestamp() - started)::numeric, 3)),
              HINT = err_hint;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._reopen(text, text, boolean, integer, numeric) IS
'pgdblink_safe internal: opens a connection, retrying a refused or unreachable target with backoff';
