CREATE OR REPLACE PROCEDURE {{ schema }}.finish_prepared()
LANGUAGE plpgsql
{{ function_settings }}
AS $fn$
BEGIN
    -- Phase 2 of every two-phase transaction this session committed or rolled back, at once
    -- rather than at the session's next toolkit call: the remote locks go now.
    PERFORM {{ schema }}._sweep();
END;
$fn$;
COMMENT ON PROCEDURE {{ schema }}.finish_prepared() IS  -- noqa: LT01
'pgdblink_safe: finishes phase 2 of this session''s two-phase transactions that have ended '
'(COMMIT or ROLLBACK PREPARED on each remote)';
