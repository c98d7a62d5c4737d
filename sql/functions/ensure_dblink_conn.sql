CREATE OR REPLACE FUNCTION {{ schema }}.ensure_dblink_conn(
    conn_name text,
    target text,
    max_lifetime interval DEFAULT NULL,
    max_idle interval DEFAULT NULL,
    validation_window interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_budget interval DEFAULT NULL,
    scope text DEFAULT 'session',
    remote_tx boolean DEFAULT FALSE,
    two_phase boolean DEFAULT FALSE
)
RETURNS text
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    link text;
    key text;
    was_mapped boolean;
    remembered text;
    lifetime_s numeric := COALESCE(
        EXTRACT(epoch FROM max_lifetime), {{ max_lifetime_s }});
    idle_s numeric := COALESCE(
        EXTRACT(epoch FROM max_idle), {{ max_idle_s }});
    attempts integer := COALESCE(max_attempts, {{ max_attempts }});
    budget_s numeric := COALESCE(
        EXTRACT(epoch FROM retry_budget), {{ retry_budget_s }});
    window_s numeric := COALESCE(
        EXTRACT(epoch FROM validation_window), {{ validation_window_s }});
    opened text;
    outcome text;
BEGIN
    PERFORM {{ schema }}._check_user_name(conn_name);
    IF target IS NULL THEN
        RAISE EXCEPTION 'target must not be NULL'
            USING ERRCODE = '22004',
                  HINT = 'Pass a foreign server name or a libpq connection string.';
    END IF;
    IF pg_catalog.btrim(target) = '' THEN
        RAISE EXCEPTION 'target must not be empty or blank'
            USING ERRCODE = '22023',
                  HINT = 'Pass a foreign server name or a libpq connection string.';
    END IF;
    IF scope IS NULL OR remote_tx IS NULL OR two_phase IS NULL THEN
        RAISE EXCEPTION 'scope, remote_tx and two_phase must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF scope NOT IN ('session', 'transaction') THEN
        RAISE EXCEPTION 'scope must be ''session'' or ''transaction'', not %', pg_catalog.quote_literal(scope)
            USING ERRCODE = '22023';
    END IF;
    IF remote_tx AND scope <> 'transaction' THEN
        RAISE EXCEPTION 'remote_tx => true needs scope => ''transaction'''
            USING ERRCODE = '22023',
                  HINT = 'A remote transaction follows the local one, so its connection must too.';
    END IF;
    IF two_phase AND NOT remote_tx THEN
        RAISE EXCEPTION 'two_phase => true needs remote_tx => true'
            USING ERRCODE = '22023',
                  HINT = 'Two-phase commit prepares the remote transaction that remote_tx opens.';
    END IF;
    IF two_phase AND pg_catalog.current_setting('transaction_read_only') = 'on' THEN
        RAISE EXCEPTION 'two_phase => true needs a read-write transaction'
            USING ERRCODE = '25006',
                  DETAIL = 'Its commit record is written in the local transaction, and the remote '
                           'transaction of a read-only one is read-only too.',
                  HINT = 'Use remote_tx => true alone for read-only work.';
    END IF;
    IF scope = 'transaction' AND pg_catalog.octet_length(conn_name) > 60 THEN
        RAISE EXCEPTION 'conn_name "%..." is % bytes long; transaction-scoped names are limited to 60 bytes',
                pg_catalog.left(conn_name, 20), pg_catalog.octet_length(conn_name)
            USING ERRCODE = '22023',
                  HINT = 'Its dblink name is tx:<conn_name>, and dblink names are limited to 63 bytes.';
    END IF;
    PERFORM {{ schema }}._check_options(
        NULL, validation_window, max_attempts, retry_budget, max_lifetime, max_idle);
    PERFORM {{ schema }}._sweep();
    was_mapped := pg_catalog.current_setting({{ guc_mapped }} || {{ schema }}._key(conn_name), true)
        IS NOT DISTINCT FROM '1';
    IF scope = 'session' THEN
        IF was_mapped THEN
            RAISE EXCEPTION 'dblink connection "%" is open with scope transaction in this transaction', conn_name
                USING ERRCODE = '22023',
                      HINT = 'Use another name, or close it first with safe_dblink_disconnect.';
        END IF;
        link := conn_name;
    ELSE
        IF NOT was_mapped
           AND ((conn_name = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE
                OR COALESCE(pg_catalog.current_setting({{ guc_target }} || {{ schema }}._key(conn_name), true), '') <> '') THEN
            RAISE EXCEPTION 'dblink connection "%" is open with scope session', conn_name
                USING ERRCODE = '22023',
                      HINT = 'Use another name, or close it first with safe_dblink_disconnect.';
        END IF;
        link := 'tx:' || conn_name;
        IF was_mapped AND ({{ schema }}._meta(link) ->> 'remote_tx')::boolean IS DISTINCT FROM remote_tx THEN
            RAISE EXCEPTION 'dblink connection "%" is already open in this transaction with remote_tx => %',
                    conn_name, NOT remote_tx
                USING ERRCODE = '22023';
        END IF;
        IF was_mapped AND COALESCE(({{ schema }}._meta(link) ->> 'two_phase')::boolean, false) <> two_phase THEN
            RAISE EXCEPTION 'dblink connection "%" is already open in this transaction with two_phase => %',
                    conn_name, NOT two_phase
                USING ERRCODE = '22023';
        END IF;
        IF was_mapped THEN
            PERFORM {{ schema }}._refuse_prepared(link);
        END IF;
        IF two_phase AND NOT was_mapped THEN
            PERFORM {{ schema }}._two_phase_target(conn_name, target);
        END IF;
    END IF;
    key := {{ schema }}._key(link);
    remembered := pg_catalog.current_setting({{ guc_target }} || key, true);
    IF scope = 'transaction' AND NOT was_mapped THEN
        PERFORM {{ schema }}._hook(link, remote_tx);
        PERFORM pg_catalog.set_config({{ guc_mapped }} || {{ schema }}._key(conn_name), '1', true);
        PERFORM {{ schema }}._note(link, pg_catalog.jsonb_build_object(
            'scope', 'transaction', 'remote_tx', remote_tx, 'two_phase', two_phase));
    END IF;
    PERFORM {{ schema }}._note(link, pg_catalog.jsonb_build_object(
        'max_lifetime_s', lifetime_s, 'max_idle_s', idle_s));
    IF (link = ANY ({{ dblink }}.dblink_get_connections())) IS NOT TRUE THEN
        PERFORM {{ schema }}._reopen(link, target, false, attempts, budget_s);
        outcome := 'connected';
    ELSIF remembered IS NOT DISTINCT FROM target THEN
        -- A listed connection is reused only when it is known to point at this target: one
        -- whose state was rolled back, or that was opened by plain dblink_connect, could
        -- point anywhere.
        opened := {{ schema }}._meta(link) ->> 'opened_at';
        BEGIN
            PERFORM {{ schema }}._prepare(link, window_s, attempts, budget_s);
        EXCEPTION WHEN object_not_in_prerequisite_state THEN
            -- Reopened elsewhere by plain dblink calls: this call says where it should lead.
            -- A remote transaction it had was lost with the connection it replaced.
            IF {{ schema }}._in_tx(link) THEN
                RAISE;
            END IF;
            PERFORM {{ schema }}._reopen(link, target, true, attempts, budget_s);
        END;
        outcome := CASE WHEN ({{ schema }}._meta(link) ->> 'opened_at') IS DISTINCT FROM opened
            THEN 'reconnected' ELSE 'reused' END;
    ELSIF {{ schema }}._in_tx(link) THEN
        RAISE EXCEPTION 'dblink connection "%" has an open remote transaction; it cannot move to another target', conn_name
            USING ERRCODE = '25001',
                  HINT = 'Commit or roll back first, or use another name.';
    ELSE
        PERFORM {{ schema }}._reopen(link, target, true, attempts, budget_s);
        outcome := 'reconnected';
    END IF;
    IF remote_tx AND NOT was_mapped THEN
        PERFORM {{ schema }}._remote_begin(link);
    END IF;
    RETURN outcome;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}.ensure_dblink_conn(
    text,
    text,
    interval,
    interval,
    interval,
    integer,
    interval,
    text,
    boolean,
    boolean
) IS
'pgdblink_safe: opens the named dblink connection to target (a foreign server name or a '
'connection string) if missing, replaces it if dead; scope session or transaction, '
'remote_tx for a remote transaction that follows the local one, two_phase to prepare it at '
'local commit; returns reused, connected or reconnected';
