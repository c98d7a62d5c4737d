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
    -- with scope => 'transaction' in the transaction.
    IF (link = ANY ({{ dblink }}.dblink_get_connections())) IS TRUE THEN
        IF NEW.remote_tx AND pg_catalog.split_part(
               pg_catalog.current_setting({{ guc_hot }} || {{ schema }}._key(link), true), ' ', 5) = '1' THEN
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
'pgdblink_safe internal: at local commit, commits remote_tx work and closes a '
'transaction-scoped connection';
