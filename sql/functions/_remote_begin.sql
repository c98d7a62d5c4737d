CREATE OR REPLACE FUNCTION {{ schema }}._remote_begin(link text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    begin_sql text := pg_catalog.concat(
        'START TRANSACTION ISOLATION LEVEL ',
        CASE pg_catalog.current_setting('transaction_isolation')
            WHEN 'serializable' THEN 'SERIALIZABLE'
            ELSE 'REPEATABLE READ'
        END,
        CASE WHEN pg_catalog.current_setting('transaction_read_only') = 'on'
            THEN ' READ ONLY' ELSE '' END,
        '; SET LOCAL idle_in_transaction_session_timeout = ',
        {{ remote_tx_idle_timeout_ms }});
    slots integer;
    participant text;
BEGIN
    -- Isolation as postgres_fdw chooses it: serializable stays serializable, anything else
    -- becomes repeatable read so that one local statement sees one remote snapshot. The
    -- backstop (a remote transaction nobody ends is ended by the remote server after this
    -- long) is local to the transaction, so that a pooled server connection keeps nothing.
    IF ({{ schema }}._meta(link) ->> 'two_phase')::boolean THEN
        -- In the same round trip: whether the remote can prepare at all, checked before
        -- any work is done rather than at commit, and which server and database this is,
        -- for the commit record.
        SELECT r.n, r.p INTO slots, participant FROM {{ dblink }}.dblink(link, begin_sql
            || '; SELECT pg_catalog.current_setting(''max_prepared_transactions'')::integer, '
            || 'pg_catalog.concat((SELECT c.system_identifier FROM pg_catalog.pg_control_system() AS c), '
            || '''/'', pg_catalog.current_database())')
            AS r(n integer, p text);
        PERFORM {{ schema }}._mark_tx(link, true);
        PERFORM {{ schema }}._note(link, pg_catalog.jsonb_build_object('participant', participant));
        IF slots = 0 THEN
            PERFORM {{ dblink }}.dblink_exec(link, 'ROLLBACK');
            PERFORM {{ schema }}._mark_tx(link, false);
            RAISE EXCEPTION 'the remote server of dblink connection "%" cannot prepare transactions', pg_catalog.substr(link, 4)
                USING ERRCODE = '55000',
                      DETAIL = 'Its max_prepared_transactions is 0. Nothing was done there.',
                      HINT = 'Set max_prepared_transactions on the remote server (at least the '
                             'number of sessions that commit this way at once) and restart it, '
                             'or open the connection without two_phase.';
        END IF;
        RETURN;
    END IF;
    PERFORM {{ dblink }}.dblink_exec(link, begin_sql);
    PERFORM {{ schema }}._mark_tx(link, true);
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._remote_begin(text) IS
'pgdblink_safe internal: opens the remote transaction of a remote_tx connection';
