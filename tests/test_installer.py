"""install, status and uninstall through the Python API against a real server."""

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from servers import Server

import pgdblink_safe
from pgdblink_safe import installer
from pgdblink_safe.generator import latest_version, render_migrations

Conn = psycopg.Connection[Any]

CATALOG_SNAPSHOT = """
SELECT 'class ' || c.oid::regclass::text FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname NOT LIKE 'pg_toast%%'
UNION ALL SELECT 'proc ' || p.oid::regprocedure::text FROM pg_proc p
UNION ALL SELECT 'namespace ' || nspname FROM pg_namespace
UNION ALL SELECT 'type ' || t.oid::regtype::text FROM pg_type t
UNION ALL SELECT 'extension ' || extname FROM pg_extension
UNION ALL SELECT 'acl ' || n.nspname || coalesce(n.nspacl::text, '') FROM pg_namespace n
ORDER BY 1
"""


@pytest.fixture
def bare_db(local: Server) -> Iterator[str]:
    """A database without dblink."""
    name = f"bare_{threading.get_ident()}"
    local.drop_database(name)
    local.create_database(name)
    yield name
    local.drop_database(name)


def snapshot(conn: Conn) -> list[str]:
    return [row[0] for row in conn.execute(CATALOG_SNAPSHOT)]


def test_install_status_reinstall_uninstall(conn: Conn) -> None:
    before = snapshot(conn)
    assert pgdblink_safe.status(conn).installed_version is None
    applied = pgdblink_safe.install(conn)
    assert [m.version for m in applied] == list(range(1, latest_version() + 1))

    state = pgdblink_safe.status(conn)
    assert state.installed_version == latest_version()
    assert state.pending == []
    assert state.dblink_schema == "public"
    row = state.applied[0]
    assert row.applied_by == conn.info.user
    assert row.checksum == render_migrations(pgdblink_safe.Settings())[0].checksum

    assert pgdblink_safe.install(conn) == []  # a second run changes nothing
    assert pgdblink_safe.status(conn).applied == state.applied

    assert pgdblink_safe.uninstall(conn) is True
    assert snapshot(conn) == before
    assert pgdblink_safe.uninstall(conn) is False


def test_uninstall_removes_nothing_else(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA mine")
    conn.execute("CREATE FUNCTION mine.f() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    conn.execute("CREATE TABLE public.kept (x int)")
    before = snapshot(conn)
    pgdblink_safe.install(conn)
    pgdblink_safe.uninstall(conn)
    assert snapshot(conn) == before


def test_uninstall_refuses_when_user_objects_depend_on_the_toolkit(conn: Conn) -> None:
    pgdblink_safe.install(conn)
    conn.execute("CREATE VIEW public.masked AS SELECT dblink_safe._mask_target('password=x') AS t")
    with pytest.raises(pgdblink_safe.InstallError, match="view masked"):
        pgdblink_safe.uninstall(conn)
    assert pgdblink_safe.status(conn).installed_version == latest_version()
    assert conn.execute("SELECT t FROM public.masked").fetchone() == ("password=********",)


def test_uninstall_refuses_a_schema_it_did_not_create(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA other")
    with pytest.raises(pgdblink_safe.InstallError, match="holds no pgdblink_safe installation"):
        pgdblink_safe.uninstall(conn, "other")
    assert conn.execute("SELECT to_regnamespace('other') IS NOT NULL").fetchone() == (True,)


def test_install_refuses_an_existing_foreign_schema(conn: Conn) -> None:
    conn.execute("CREATE SCHEMA dblink_safe")
    with pytest.raises(pgdblink_safe.InstallError, match="already exists"):
        pgdblink_safe.install(conn)


def test_missing_dblink_is_a_clear_error(local: Server, bare_db: str) -> None:
    with local.connect(bare_db) as conn:
        with pytest.raises(pgdblink_safe.DblinkMissingError, match="--create-extension"):
            pgdblink_safe.install(conn)
        assert pgdblink_safe.status(conn).installed_version is None
        pgdblink_safe.install(conn, create_extension=True)
        assert pgdblink_safe.status(conn).dblink_schema == "public"


def test_changed_migration_is_refused(conn: Conn) -> None:
    pgdblink_safe.install(conn)
    conn.execute("UPDATE dblink_safe.installed_migrations SET checksum = repeat('0', 64)")
    with pytest.raises(pgdblink_safe.ChecksumMismatchError, match="0001_baseline"):
        pgdblink_safe.install(conn)


def test_other_settings_are_refused_not_mixed(conn: Conn) -> None:
    pgdblink_safe.install(conn, pgdblink_safe.Settings(validation_window_ms=250))
    assert pgdblink_safe.install(conn) == []  # the recorded settings are the default
    with pytest.raises(pgdblink_safe.InstallError, match="validation_window_ms: 250 -> 1000"):
        pgdblink_safe.install(conn, pgdblink_safe.Settings())


def test_concurrent_installers_apply_each_migration_once(local: Server, local_db: str) -> None:
    results: list[Any] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        with local.connect(local_db) as conn:
            barrier.wait()
            try:
                results.append(len(pgdblink_safe.install(conn)))
            except Exception as exc:
                results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # Each migration commits on its own, so the installers may share the work between them;
    # together they apply every migration exactly once, and none fails.
    assert all(isinstance(r, int) for r in results), results
    assert len(results) == 3 and sum(results) == latest_version()
    with local.connect(local_db) as conn:
        assert len(pgdblink_safe.status(conn).applied) == latest_version()


def test_lock_wait_is_bounded(local: Server, local_db: str, conn: Conn) -> None:
    with local.connect(local_db, autocommit=False) as holder:
        holder.execute("SELECT pg_advisory_xact_lock(%s)", [installer._lock_key("dblink_safe")])
        with pytest.raises(pgdblink_safe.LockTimeoutError, match=r"more than 0\.3s"):
            pgdblink_safe.install(conn, lock_timeout_s=0.3)
    assert pgdblink_safe.status(conn).installed_version is None


def test_install_needs_a_connection_outside_a_transaction(local: Server, local_db: str) -> None:
    with local.connect(local_db, autocommit=False) as conn:
        conn.execute("SELECT 1")
        with pytest.raises(pgdblink_safe.InstallError, match="inside a transaction"):
            pgdblink_safe.install(conn)
