CREATE OR REPLACE FUNCTION {{ schema }}._open(conn_name text, target text, listed boolean)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    key text := {{ schema }}._key(conn_name);
    info jsonb := {{ schema }}._meta(conn_name);
    now_s numeric;
    lifetime numeric := COALESCE((info ->> 'max_lifetime_s')::numeric, 0);
    recycle_at numeric := 0.0;
    err_state text;
    err_message text;
    err_detail text;
    conninfo text;
BEGIN
    BEGIN
        -- Parsed before anything is closed or opened. A string libpq would reject fails here
        -- with a fixed message: libpq's own quotes the string, and any part of it could be
        -- the password. It is not retried (22023, not class 08).
        conninfo := {{ schema }}._conninfo(target);
    EXCEPTION WHEN invalid_parameter_value OR character_not_in_repertoire THEN
        GET STACKED DIAGNOSTICS err_message = MESSAGE_TEXT;
        RAISE EXCEPTION 'could not open dblink connection "%"', conn_name
            USING ERRCODE = '22023',
                  DETAIL = err_message,
                  HINT = 'The target is neither the name of a foreign server nor a connection '
                         'string libpq accepts. In a URI, percent-encode @ / ? # % and blanks '
                         'in the password (%40 %2F %3F %23 %25 %20), or use key=value pairs.';
    END;
    IF listed THEN
        -- dblink_disconnect also works on a dead connection and frees the name.
        PERFORM {{ dblink }}.dblink_disconnect(conn_name);
    END IF;
    BEGIN
        PERFORM {{ dblink }}.dblink_connect(conn_name, conninfo);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE,
                                err_message = MESSAGE_TEXT,
                                err_detail = PG_EXCEPTION_DETAIL;
        RAISE EXCEPTION 'could not open dblink connection "%"', conn_name
            USING ERRCODE = err_state,
                  DETAIL = {{ schema }}._scrub(
                      pg_catalog.concat_ws(': ', err_message, NULLIF(err_detail, '')), target),
                  HINT = pg_catalog.format(
                      'Tried dblink_connect to %s. Check that the server is reachable and '
                      'accepts these credentials; a foreign server with a user mapping keeps '
                      'passwords out of your code.',
                      {{ schema }}._mask_target(target));
    END;
    now_s := EXTRACT(epoch FROM pg_catalog.clock_timestamp());
    IF lifetime > 0 THEN
        -- Up to 10 % earlier, so that sessions opened together do not all reconnect together.
        recycle_at := now_s + lifetime * (1 - 0.1 * pg_catalog.random()::numeric);
    END IF;
    PERFORM pg_catalog.set_config({{ guc_target }} || key, target, false);
    -- Zero is written as '0' so that the hot path can test it as text.
    PERFORM pg_catalog.set_config(
        {{ guc_hot }} || key,
        pg_catalog.concat_ws(' ',
            now_s,
            COALESCE(NULLIF(pg_catalog.split_part(
                pg_catalog.current_setting({{ guc_hot }} || key, true), ' ', 2), ''), '0'),
            CASE WHEN recycle_at > 0 THEN pg_catalog.round(recycle_at, 6)::text ELSE '0' END,
            CASE WHEN (info ->> 'max_idle_s')::numeric > 0 THEN info ->> 'max_idle_s' ELSE '0' END),
        false);
    -- A new connection has no remote transaction open.
    PERFORM {{ schema }}._mark_tx(conn_name, false);
    PERFORM {{ schema }}._note(conn_name, pg_catalog.jsonb_build_object(
        -- Where it leads, to notice the name reopened by plain dblink calls (_prepare). The
        -- server run is read later, when it is needed (_probe, resolve => true).
        'leads_to', {{ schema }}._probe(conn_name, false),
        'instance', NULL,
        'opened_at', now_s,
        'reconnects', COALESCE((info ->> 'reconnects')::integer, -1) + 1,
        'scope', COALESCE(info ->> 'scope', 'session')));
    PERFORM {{ schema }}._track(conn_name, true);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._open(text, text, boolean) IS
'pgdblink_safe internal: (re)opens a named dblink connection and resets its bookkeeping';
