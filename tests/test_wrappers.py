"""ensure_dblink_conn and safe_dblink_exec against a real remote server."""

import threading
from typing import Any

import psycopg
import pytest
from calls import Conn, ensure, error_of, exec_, foreign_server, rows, scalar, user_mapping
from faults import kill_when
from servers import Server

import pgdblink_safe


def test_ensure_connects_then_reuses(installed: Conn, target: str) -> None:
    assert ensure(installed, target) == "connected"
    assert ensure(installed, target) == "reused"
    assert scalar(installed, "SELECT public.dblink_get_connections()") == ["r"]


def test_ensure_never_raises_duplicate_name(installed: Conn, target: str) -> None:
    installed.execute("SELECT public.dblink_connect('r', %s)", [target])
    # Opened behind the toolkit's back: it cannot know where it points, so it replaces it.
    assert ensure(installed, target) == "reconnected"
    assert ensure(installed, target) == "reused"


def test_ensure_replaces_connection_to_another_target(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    other = remote.conninfo(remote_db, application_name="second_target")
    assert ensure(installed, other) == "reconnected"
    name = scalar(
        installed,
        "SELECT a FROM public.dblink('r', 'SHOW application_name') AS t(a text)",
    )
    assert name == "second_target"


def test_exec_runs_statement_and_returns_status(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    assert exec_(installed, "INSERT INTO items (note) VALUES ('a'), ('a')") == "INSERT 0 2"
    assert rows(remote, remote_db, "a") == 2


@pytest.mark.parametrize("window_ms", [0, 600_000], ids=["probe-every-call", "no-probe-in-window"])
def test_exec_after_remote_backend_terminated(
    conn: Conn, target: str, remote: Server, remote_db: str, window_ms: int
) -> None:
    # With a window of 0 the round trip finds the dead connection; with ten minutes only
    # the free read of pending input can, so both detection paths are covered.
    pgdblink_safe.install(conn, pgdblink_safe.Settings(validation_window_ms=window_ms))
    ensure(conn, target)
    assert exec_(conn, "INSERT INTO items (note) VALUES ('before')") == "INSERT 0 1"
    assert remote.terminate_backends(remote_db) == 1
    assert exec_(conn, "INSERT INTO items (note) VALUES ('after')") == "INSERT 0 1"
    assert rows(remote, remote_db, "after") == 1
    assert len(remote.backend_pids(remote_db)) == 1


def test_ensure_after_remote_backend_terminated(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    remote.terminate_backends(remote_db)
    assert ensure(installed, target) == "reconnected"
    assert exec_(installed, "INSERT INTO items (note) VALUES ('x')") == "INSERT 0 1"
    assert rows(remote, remote_db, "x") == 1


def test_exec_after_remote_restart(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    if not remote.can_restart:
        pytest.skip(f"the {remote.label} server cannot be restarted by this provider")
    ensure(installed, target)
    exec_(installed, "INSERT INTO items (note) VALUES ('before')")
    remote.restart("fast")
    assert exec_(installed, "INSERT INTO items (note) VALUES ('after')") == "INSERT 0 1"
    assert rows(remote, remote_db, "after") == 1


def test_exec_reconnects_after_plain_dblink_disconnect(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    installed.execute("SELECT public.dblink_disconnect('r')")
    assert exec_(installed, "INSERT INTO items (note) VALUES ('y')") == "INSERT 0 1"
    assert rows(remote, remote_db, "y") == 1


def test_unknown_name_is_a_clear_08003(installed: Conn) -> None:
    err = error_of(exec_, installed, "SELECT 1", "nope")
    assert err.sqlstate == "08003"
    assert err.diag.message_primary == 'dblink connection "nope" does not exist'
    assert "ensure_dblink_conn('nope'" in (err.diag.message_hint or "")


def test_unknown_name_never_runs_on_a_foreign_server_of_that_name(
    installed: Conn, remote: Server, remote_db: str
) -> None:
    # Plain dblink_exec would run this on a one-off connection to the server named 'srv'.
    foreign_server(installed, "srv", remote, remote_db)
    user_mapping(installed, "srv", user=remote.user)
    err = error_of(exec_, installed, "INSERT INTO items (note) VALUES ('z')", "srv")
    assert err.sqlstate == "08003"
    assert rows(remote, remote_db, "z") == 0
    # The same name given to ensure_dblink_conn is the recommended, password-free target.
    assert ensure(installed, "srv", "srv") == "connected"
    assert exec_(installed, "INSERT INTO items (note) VALUES ('z')", "srv") == "INSERT 0 1"
    assert rows(remote, remote_db, "z") == 1


def test_remote_error_keeps_its_sqlstate(installed: Conn, target: str) -> None:
    ensure(installed, target)
    err = error_of(exec_, installed, "SELECT 1/0")
    assert err.sqlstate == "22012"
    # The connection survived the remote error.
    assert exec_(installed, "INSERT INTO items (note) VALUES ('ok')") == "INSERT 0 1"


def test_connection_lost_during_statement_is_08007_and_not_retried(
    installed: Conn, target: str, local: Server, local_db: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    outcome: dict[str, Any] = {}

    def run() -> None:
        # Its own session: the statement blocks while the test terminates its remote backend.
        with local.connect(local_db) as other:
            ensure(other, target)
            try:
                exec_(other, "INSERT INTO items (note) SELECT 'slow' FROM pg_sleep(30)")
            except psycopg.Error as exc:
                outcome["error"] = exc
            outcome["after"] = exec_(other, "INSERT INTO items (note) VALUES ('next')")

    worker = threading.Thread(target=run)
    worker.start()
    kill_when(remote, remote_db, "query LIKE '%pg_sleep(30)%'")
    worker.join(30)
    assert not worker.is_alive()
    err = outcome["error"]
    assert err.sqlstate == "08007"
    assert 'dblink connection "r" was lost' in err.diag.message_primary
    assert "Original error (SQLSTATE" in err.diag.message_detail
    # Never applied twice; the dead handle was closed, so the next call reconnected.
    assert rows(remote, remote_db, "slow") <= 1
    assert outcome["after"] == "INSERT 0 1"


def test_rolled_back_ensure_leaves_a_usable_connection(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    # dblink's connection list ignores the rollback; the toolkit's remembered target does not.
    with pytest.raises(psycopg.errors.RaiseException), installed.transaction():
        ensure(installed, target)
        installed.execute("DO $$BEGIN RAISE EXCEPTION 'boom'; END$$")
    assert scalar(installed, "SELECT public.dblink_get_connections()") == ["r"]
    assert exec_(installed, "INSERT INTO items (note) VALUES ('rb')") == "INSERT 0 1"
    assert ensure(installed, target) == "reconnected"
    assert ensure(installed, target) == "reused"


def test_unreachable_target_is_08001_without_the_password(installed: Conn, remote: Server) -> None:
    dead = remote.conninfo("postgres", port="1", password="Tr0ub4dor&3")
    err = error_of(ensure, installed, dead)
    assert err.sqlstate == "08001"
    assert err.diag.message_primary == 'could not open dblink connection "r"'
    text = " ".join(
        filter(None, [err.diag.message_primary, err.diag.message_detail, err.diag.message_hint])
    )
    assert "Tr0ub4dor" not in text
    assert "password=********" in (err.diag.message_hint or "")
    assert scalar(installed, "SELECT public.dblink_get_connections()") is None


def test_malformed_target_error_masks_password_fragments(installed: Conn) -> None:
    err = error_of(ensure, installed, "host=127.0.0.1 password='hunter2 swordfish' dbname")
    assert err.sqlstate == "22023"
    text = f"{err.diag.message_detail} {err.diag.message_hint}"
    assert "hunter2" not in text and "swordfish" not in text


@pytest.mark.parametrize(
    ("name", "sqlstate"),
    [(None, "22004"), ("", "22023"), ("   ", "22023"), ("n" * 64, "22023")],
    ids=["null", "empty", "blank", "64-bytes"],
)
def test_bad_connection_names_are_rejected(
    installed: Conn, target: str, name: str | None, sqlstate: str
) -> None:
    for call in (ensure, exec_):
        err = error_of(call, installed, target, name)
        assert err.sqlstate == sqlstate, call.__name__
        assert "conn_name" in (err.diag.message_primary or "")
    assert scalar(installed, "SELECT public.dblink_get_connections()") is None


def test_wrappers_work_with_dblink_in_another_schema(
    local: Server, local_db: str, target: str, remote: Server, remote_db: str
) -> None:
    with local.connect(local_db) as conn:
        conn.execute("DROP EXTENSION dblink")
        conn.execute("CREATE SCHEMA ext")
        conn.execute("CREATE EXTENSION dblink SCHEMA ext")
        pgdblink_safe.install(conn, pgdblink_safe.Settings(schema="Ops DBLink"))
        assert scalar(conn, 'SELECT "Ops DBLink".ensure_dblink_conn(%s, %s)', "r", target) == (
            "connected"
        )
        remote.terminate_backends(remote_db)
        status = scalar(
            conn,
            'SELECT "Ops DBLink".safe_dblink_exec(%s, %s)',
            "r",
            "INSERT INTO items (note) VALUES ('e')",
        )
        assert status == "INSERT 0 1"
    assert rows(remote, remote_db, "e") == 1
