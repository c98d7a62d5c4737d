CREATE OR REPLACE FUNCTION {{ schema }}._at_commit()
RETURNS trigger
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    link text := NEW.link;
BEGIN
    -- Fires at local commit (a deferred constraint trigger), once per connection opened
    -- with scope => 'transaction' in the transaction. It fires at PREPARE TRANSACTION too,
    -- which then fails (the transaction used this temporary table): committing the remote
    -- transaction there would leave it committed under a rolled-back local one.
    IF NEW.remote_tx AND pg_catalog.current_query() ~* '\mprepare\s+transaction\M' THEN
        RAISE EXCEPTION 'PREPARE TRANSACTION cannot include the remote transaction of dblink connection "%"',
                pg_catalog.substr(link, 4)
            USING ERRCODE = '0A000',
                  DETAIL = 'remote_tx => true commits the remote transaction when the local one '
                           'commits, and a transaction that used a transaction-scoped connection '
                           'cannot be prepared. Nothing was committed on the remote server.',
                  HINT = 'COMMIT instead, or open the connection without remote_tx.';
    END IF;
    IF NEW.remote_tx AND ({{ schema }}._meta(link) ->> 'two_phase')::boolean THEN
        -- Two-phase: the first of these triggers to fire prepares every such connection of
        -- the transaction, in parallel. The connection stays open for phase 2, which comes
        -- after the local commit: the session's next call, finish_prepared() or the
        -- resolver.
        IF ({{ schema }}._meta(link) ->> 'prepared') IS NULL THEN
            PERFORM {{ schema }}._two_phase_prepare();
        END IF;
        RETURN NULL;
    END IF;
    IF (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE THEN
        IF NEW.remote_tx AND {{ schema }}._in_tx(link) THEN
            PERFORM {{ schema }}._remote_commit(link);
        END IF;
        IF (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE THEN
            PERFORM {{ dblink }}.dblink_disconnect(link);
        END IF;
    END IF;
    PERFORM {{ schema }}._forget(link);
    PERFORM pg_catalog.set_config(
        {{ guc_mapped }} || {{ schema }}._key(pg_catalog.substr(link, 4)), '', true);
    RETURN NULL;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._at_commit() IS
'pgdblink_safe internal: at local commit, commits remote_tx work (prepares it with '
'two_phase) and closes a transaction-scoped connection';
