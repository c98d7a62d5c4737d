CREATE OR REPLACE FUNCTION {{ schema }}.connections()
RETURNS TABLE (
    conn_name text,
    scope text,
    target text,
    is_open boolean,
    opened_at timestamptz,
    last_used_at timestamptz,
    uses bigint,
    reconnects integer,
    remote_transaction boolean,
    last_error_sqlstate text,
    last_error_at timestamptz,
    last_validation_ok boolean,
    last_validated_at timestamptz,
    recycle_at timestamptz,
    missing_safety_options text[]
)
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    open_names text[];
    link text;
    info jsonb;
    hot record;
    raw_target text;
BEGIN
    -- Connections of transactions that have ended are closed first, not listed.
    PERFORM {{ schema }}._sweep();
    open_names := COALESCE({{ dblink }}.dblink_get_connections(), '{}');
    FOR link IN
        SELECT n FROM pg_catalog.unnest(COALESCE(
            NULLIF(pg_catalog.current_setting({{ guc_names }}, true), '')::text[], '{}')) AS n
        ORDER BY CASE WHEN pg_catalog.left(n, 3) = 'tx:' THEN pg_catalog.substr(n, 4) ELSE n END, n
    LOOP
        conn_name := link;
        IF pg_catalog.left(link, 3) = 'tx:' THEN
            conn_name := pg_catalog.substr(link, 4);
            -- Bookkeeping left by a rolled-back sweep: no longer this transaction's.
            CONTINUE WHEN {{ schema }}._link(conn_name) <> link;
        END IF;
        info := {{ schema }}._meta(link);
        SELECT * INTO hot FROM {{ schema }}._hot(link);
        raw_target := NULLIF(pg_catalog.current_setting({{ guc_target }} || {{ schema }}._key(link), true), '');
        scope := COALESCE(info ->> 'scope', 'session');
        target := {{ schema }}._mask_target(raw_target);
        is_open := link = ANY (open_names);
        opened_at := pg_catalog.to_timestamp((info ->> 'opened_at')::double precision);
        last_used_at := pg_catalog.to_timestamp(hot.last_used::double precision);
        uses := hot.uses;
        reconnects := (info ->> 'reconnects')::integer;
        remote_transaction := {{ schema }}._in_tx(link);
        last_error_sqlstate := info ->> 'last_error';
        last_error_at := pg_catalog.to_timestamp((info ->> 'last_error_at')::double precision);
        last_validation_ok := (info ->> 'validated')::boolean;
        last_validated_at := pg_catalog.to_timestamp((info ->> 'validated_at')::double precision);
        recycle_at := pg_catalog.to_timestamp(NULLIF(hot.recycle_at, 0)::double precision);
        -- Options the toolkit adds to connection strings; a foreign server must carry its own.
        -- NULL for connection strings, which get the toolkit's safe options.
        SELECT ARRAY(
                   SELECT o
                   FROM pg_catalog.unnest(ARRAY['connect_timeout', 'keepalives', 'tcp_user_timeout']) AS o
                   WHERE NOT EXISTS (
                       SELECT 1 FROM pg_catalog.unnest(fs.srvoptions) AS opt
                       WHERE pg_catalog.split_part(opt, '=', 1) = o)
                   ORDER BY o)
        INTO missing_safety_options
        FROM pg_catalog.pg_foreign_server fs
        WHERE fs.srvname = raw_target;
        RETURN NEXT;
    END LOOP;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}.connections() IS
'pgdblink_safe: this session''s toolkit connections, passwords masked';
