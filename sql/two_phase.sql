-- Two-phase commit (ensure_dblink_conn(..., two_phase => true)): the commit record of each
-- prepared remote transaction, written in the local transaction it belongs to, so that it
-- is visible exactly when that transaction committed. Each role sees and writes only its own
-- rows, and only for its own transaction; the resolver runs as the owner and sees them all.
CREATE TABLE {{ schema }}.prepared_xacts (
    gid text PRIMARY KEY,
    target text NOT NULL,
    conn_name text NOT NULL,
    -- '<system identifier>/<database>' of the server that prepared it: the target may lead
    -- elsewhere later, where the GID's absence says nothing.
    participant text NOT NULL,
    local_xid xid8 NOT NULL,
    role name NOT NULL DEFAULT CURRENT_USER,
    prepared_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON TABLE {{ schema }}.prepared_xacts FROM PUBLIC;
ALTER TABLE {{ schema }}.prepared_xacts ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_transaction ON {{ schema }}.prepared_xacts
USING (role OPERATOR (pg_catalog.=) CURRENT_USER)
WITH CHECK (
    role OPERATOR (pg_catalog.=) CURRENT_USER
    AND local_xid OPERATOR (pg_catalog.=) pg_catalog.pg_current_xact_id()
);
COMMENT ON TABLE {{ schema }}.prepared_xacts IS
'pgdblink_safe: one row per remote transaction prepared at a local commit; a visible row '
'means its local transaction committed';

-- Every target a two-phase transaction was prepared on, recorded in a transaction of its
-- own before the first PREPARE there: the resolver visits each of them, including those
-- whose local transaction rolled back and so left no row in prepared_xacts.
CREATE TABLE {{ schema }}.two_phase_targets (
    target text PRIMARY KEY,
    added_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    added_by name NOT NULL DEFAULT CURRENT_USER
);
REVOKE ALL ON TABLE {{ schema }}.two_phase_targets FROM PUBLIC;
COMMENT ON TABLE {{ schema }}.two_phase_targets IS
'pgdblink_safe: the targets the resolver visits for prepared transactions';

-- The last run of resolve_prepared that was not a dry run, for doctor.
CREATE TABLE {{ schema }}.resolver_runs (
    only_row boolean PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    ran_at timestamptz NOT NULL,
    ran_by name NOT NULL,
    finished integer NOT NULL,
    in_doubt integer NOT NULL
);
REVOKE ALL ON TABLE {{ schema }}.resolver_runs FROM PUBLIC;
COMMENT ON TABLE {{ schema }}.resolver_runs IS
'pgdblink_safe: when resolve_prepared last ran, and what it left in doubt';
