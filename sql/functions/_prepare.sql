CREATE OR REPLACE FUNCTION {{ schema }}._prepare(
    conn_name text, window_s numeric, max_attempts integer, budget_s numeric
)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    key text;
    target text;
    hot record;
    now_s numeric := EXTRACT(epoch FROM pg_catalog.clock_timestamp());
    alive boolean;
    leads_to text;
    opened_to text;
BEGIN
    PERFORM {{ schema }}._check_name(conn_name);
    IF pg_catalog.left(conn_name, 3) = 'tx:' THEN
        PERFORM {{ schema }}._refuse_prepared(conn_name);
    END IF;
    IF window_s IS NULL OR window_s < 0 THEN
        RAISE EXCEPTION 'validation_window must not be negative' USING ERRCODE = '22023';
    END IF;
    key := {{ schema }}._key(conn_name);
    target := NULLIF(pg_catalog.current_setting({{ guc_target }} || key, true), '');
    SELECT * INTO hot FROM {{ schema }}._hot(conn_name);
    -- dblink_exec would read an unknown name as a foreign server or connection string and
    -- either fail with a parse error or run the statement somewhere else.
    IF (conn_name = ANY ({{ dblink }}.dblink_get_connections())) IS NOT TRUE THEN
        IF target IS NULL THEN
            RAISE EXCEPTION 'dblink connection "%" does not exist', conn_name
                USING ERRCODE = '08003',
                      HINT = pg_catalog.format(
                          'Open it first with SELECT %s.ensure_dblink_conn(%L, <foreign server or connection string>).',
                          {{ schema_literal }}, conn_name);
        END IF;
        -- A remote transaction it had open was lost when it was closed: reported then (the
        -- toolkit closes a broken one only while raising), or closed on purpose.
        PERFORM {{ schema }}._reopen(conn_name, target, false, max_attempts, budget_s);
        RETURN;
    END IF;
    IF {{ dblink }}.dblink_is_busy(conn_name) = 1 OR {{ dblink }}.dblink_is_busy(conn_name) = 1 THEN
        -- A result nobody collected (a cancelled call, an abandoned dblink_send_query): the
        -- connection is replaced rather than drained, which could wait without bound (below).
        NULL;
    ELSIF (hot.recycle_at <> 0 AND now_s >= hot.recycle_at)
          OR (hot.max_idle <> 0 AND now_s - hot.last_used > hot.max_idle) THEN
        -- Past its lifetime or idle beyond its limit: replaced without asking (below), unless
        -- a remote transaction is open on it.
        IF {{ schema }}._in_tx(conn_name) THEN
            RETURN;
        END IF;
    ELSIF {{ dblink }}.dblink_error_message(conn_name) <> 'OK'
          OR hot.last_used IS NULL
          OR now_s - hot.last_used > window_s THEN
        leads_to := {{ schema }}._probe(conn_name, true);
        alive := leads_to IS NOT NULL;
        PERFORM {{ schema }}._note(conn_name, pg_catalog.jsonb_build_object(
            'validated', alive, 'validated_at', now_s));
        opened_to := {{ schema }}._meta(conn_name) ->> 'leads_to';
        IF leads_to <> '' AND opened_to <> '' AND leads_to <> opened_to THEN
            -- Closed and opened again by plain dblink calls under the same name: statements
            -- must not go to a place other than the one this session's bookkeeping names,
            -- and a reconnect would silently move them back.
            RAISE EXCEPTION 'dblink connection "%" no longer leads where ensure_dblink_conn opened it', conn_name
                USING ERRCODE = '55000',
                      DETAIL = pg_catalog.format(
                          'Opened to %s (database/role/system identifier); it now reaches %s.',
                          opened_to, leads_to),
                      HINT = pg_catalog.format(
                          'The name was reopened with plain dblink_connect. Call '
                          '%s.ensure_dblink_conn(%L, <target>) to point it where it should lead.',
                          {{ schema_literal }}, conn_name);
        END IF;
        IF alive THEN
            PERFORM pg_catalog.set_config({{ guc_hot }} || key,
                pg_catalog.concat_ws(' ', now_s, COALESCE(hot.uses, 0),
                    COALESCE(hot.recycle_at, 0), COALESCE(hot.max_idle, 0)),
                false);
            RETURN;
        END IF;
    ELSE
        RETURN;
    END IF;
    -- Dead, busy or due for recycling.
    IF target IS NULL THEN
        PERFORM {{ dblink }}.dblink_disconnect(conn_name);
        PERFORM {{ schema }}._mark_tx(conn_name, false);
        RAISE EXCEPTION 'dblink connection "%" is broken and was closed; its target is unknown', conn_name
            USING ERRCODE = '08003',
                  DETAIL = 'It was not opened by ensure_dblink_conn in this session, or that '
                           'call was rolled back, so it cannot be reopened.',
                  HINT = pg_catalog.format(
                      'Open it with SELECT %s.ensure_dblink_conn(%L, <target>) before use.',
                      {{ schema_literal }}, conn_name);
    END IF;
    IF {{ schema }}._in_tx(conn_name) THEN
        PERFORM {{ dblink }}.dblink_disconnect(conn_name);
        PERFORM {{ schema }}._mark_tx(conn_name, false);
        RAISE EXCEPTION 'dblink connection "%" broke inside an open remote transaction', conn_name
            USING ERRCODE = '08006',
                  DETAIL = 'The remote transaction is lost; reconnecting silently would drop its work.',
                  HINT = 'Roll back and start the unit of work again; the next call reconnects.';
    END IF;
    PERFORM {{ schema }}._reopen(conn_name, target, true, max_attempts, budget_s);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._prepare(text, numeric, integer, numeric) IS
'pgdblink_safe internal: makes a connection usable (the slow path of every call) or raises';
