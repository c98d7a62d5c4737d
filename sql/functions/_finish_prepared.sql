CREATE OR REPLACE FUNCTION {{ schema }}._finish_prepared(link text, local_xid xid8)
RETURNS boolean
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    the_gid text := {{ schema }}._gid(link, local_xid);
    status text := pg_catalog.pg_xact_status(local_xid);
    done boolean := false;
    err_state text;
    err_message text;
BEGIN
    -- Phase 2 of a remote transaction this session prepared, on the connection that prepared
    -- it: COMMIT PREPARED when the local transaction committed, ROLLBACK PREPARED when it
    -- did not. False (nothing done) while that transaction is still running.
    IF status = 'in progress' THEN
        RETURN false;
    END IF;
    BEGIN
        PERFORM {{ schema }}._status(link,
            CASE WHEN status = 'committed' THEN 'COMMIT PREPARED ' ELSE 'ROLLBACK PREPARED ' END
                || pg_catalog.quote_literal(the_gid),
            {{ remote_commit_timeout_s }});
        done := true;
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
        -- 42704: finished already, by the resolver.
        done := err_state = '42704';
        IF NOT done THEN
            RAISE WARNING 'phase 2 of two-phase transaction % (dblink connection "%") failed; resolve_prepared finishes it',
                    the_gid, pg_catalog.substr(link, 4)
                USING DETAIL = pg_catalog.format('%s PREPARED (SQLSTATE %s): %s',
                          CASE WHEN status = 'committed' THEN 'COMMIT' ELSE 'ROLLBACK' END,
                          err_state,
                          {{ schema }}._scrub(err_message, pg_catalog.current_setting(
                              {{ guc_target }} || {{ schema }}._key(link), true))),
                      HINT = 'Its remote locks are held until then: run resolve_prepared, or '
                             'pgdblink-safe resolve, soon.';
        END IF;
    END;
    PERFORM {{ schema }}._mark_prepared(link, local_xid, false);
    IF done AND status = 'committed' THEN
        -- The commit record is no longer needed once the remote transaction is gone. A
        -- read-only transaction cannot remove it: the resolver will.
        BEGIN
            DELETE FROM {{ schema }}.prepared_xacts AS p WHERE p.gid = the_gid;
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END IF;
    RETURN true;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._finish_prepared(text, xid8) IS
'pgdblink_safe internal: phase 2 of a remote transaction prepared by this session, decided '
'by the local transaction''s outcome';
