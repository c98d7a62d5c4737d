CREATE OR REPLACE FUNCTION {{ schema }}._two_phase_target(conn_name text, target text)
RETURNS void
LANGUAGE plpgsql
VOLATILE
{{ function_settings }}
AS $fn$
DECLARE
    err_state text;
    err_message text;
BEGIN
    -- The resolver reconnects with the target recorded here and in prepared_xacts: a
    -- password in it would be stored in a table. A foreign server with a user mapping keeps
    -- it where PostgreSQL keeps such secrets.
    IF pg_catalog.strpos({{ schema }}._mask_target(target), '********') > 0
       OR pg_catalog.left({{ schema }}._mask_target(target), 1) = '(' THEN
        RAISE EXCEPTION 'two_phase => true cannot use a connection string with a password (dblink connection "%")', conn_name
            USING ERRCODE = '22023',
                  DETAIL = 'The target is recorded for the resolver, which must reach the same '
                           'server after a crash.',
                  HINT = 'Name a foreign server instead, with a user mapping that holds the '
                         'password, or use a password file.';
    END IF;
    IF EXISTS (SELECT 1 FROM {{ schema }}.two_phase_targets AS t WHERE t.target = $2) THEN
        RETURN;
    END IF;
    -- Recorded before the first PREPARE there, in a transaction of its own: when this local
    -- transaction rolls back or its session dies after PREPARE, the resolver must still know
    -- where to look for what it prepared. Durable before anything is prepared there, even
    -- with synchronous_commit off.
    BEGIN
        PERFORM {{ schema }}._autonomous_exec(pg_catalog.format(
            'SET LOCAL synchronous_commit = on; '
            'INSERT INTO %s.two_phase_targets (target) VALUES (%L) ON CONFLICT (target) DO NOTHING',
            {{ schema_literal }}, target), NULL, 'pg_catalog');
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS err_state = RETURNED_SQLSTATE, err_message = MESSAGE_TEXT;
        RAISE EXCEPTION 'the target of dblink connection "%" is not yet recorded for two-phase commit, and could not be recorded', conn_name
            USING ERRCODE = '55000',
                  DETAIL = pg_catalog.format('Recording it in a transaction of its own failed '
                                             '(SQLSTATE %s): %s', err_state,
                                             {{ schema }}._scrub(err_message, target)),
                  HINT = pg_catalog.format('Record it once and commit: INSERT INTO '
                                           '%s.two_phase_targets (target) VALUES (%L);',
                                           {{ schema_literal }}, target);
    END;
END;
$fn$;
COMMENT ON FUNCTION {{ schema }}._two_phase_target(text, text) IS
'pgdblink_safe internal: refuses a target with a password for two-phase commit, and records '
'a new one for the resolver in a transaction of its own';
