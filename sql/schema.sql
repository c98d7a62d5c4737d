CREATE SCHEMA {{ schema }};
REVOKE ALL ON SCHEMA {{ schema }} FROM PUBLIC;
COMMENT ON SCHEMA {{ schema }} IS 'pgdblink_safe: safe dblink wrappers for PL/pgSQL';

CREATE TABLE {{ schema }}.installed_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    settings jsonb NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    applied_by name NOT NULL DEFAULT CURRENT_USER
);
REVOKE ALL ON TABLE {{ schema }}.installed_migrations FROM PUBLIC;
COMMENT ON TABLE {{ schema }}.installed_migrations IS
'pgdblink_safe: one row per applied migration, written in the migration''s own transaction';
