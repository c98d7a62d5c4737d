"""The resilient core against real faults: each test checks the result and the remote rows."""

import threading
import time

import psycopg
import pytest
from calls import (
    Conn,
    ensure,
    exec_,
    foreign_server,
    insert,
    listing,
    query_value,
    raw_remote_pid,
    rows,
    scalar,
    user_mapping,
)
from faults import backend_when, finish, in_background, kill_when
from proxy import TcpProxy
from servers import LocalCluster, Server, wait_for


@pytest.fixture
def restartable(remote: Server) -> LocalCluster:
    if not isinstance(remote, LocalCluster):
        pytest.skip(f"the {remote.label} server cannot be stopped and restarted by this provider")
    return remote


@pytest.mark.parametrize("window", ["0", "1 hour"], ids=["beyond-window", "within-window"])
def test_terminated_while_idle(
    installed: Conn, target: str, remote: Server, remote_db: str, window: str
) -> None:
    ensure(installed, target)
    exec_(installed, "INSERT INTO items (note) VALUES ('a')")
    before = listing(installed)
    assert (before["uses"], before["reconnects"]) == (1, 0)
    remote.terminate_backends(remote_db)
    status = exec_(installed, "INSERT INTO items (note) VALUES ('b')", validation_window=window)
    assert status == "INSERT 0 1"
    assert rows(remote, remote_db, "b") == 1
    after = listing(installed)
    assert (after["uses"], after["reconnects"], after["is_open"]) == (2, 1, True)


def test_idempotent_statement_is_retried_after_a_kill_mid_statement(
    installed: Conn, target: str, local: Server, local_db: str, remote: Server, remote_db: str
) -> None:
    statement = (
        "INSERT INTO items (note) SELECT 'idem' FROM pg_sleep(2) "
        "WHERE NOT EXISTS (SELECT FROM items WHERE note = 'idem')"
    )

    def work(conn: Conn) -> str:
        ensure(conn, target)
        return exec_(conn, statement, idempotent=True)

    outcome = in_background(local, local_db, work)
    kill_when(remote, remote_db, "query LIKE '%pg_sleep(2)%'")
    assert finish(outcome).get("result") == "INSERT 0 1", outcome.get("error")
    assert rows(remote, remote_db, "idem") == 1


def test_non_idempotent_statement_killed_mid_statement_is_08007(
    installed: Conn, target: str, local: Server, local_db: str, remote: Server, remote_db: str
) -> None:
    def work(conn: Conn) -> str:
        ensure(conn, target)
        try:
            return exec_(conn, "INSERT INTO items (note) SELECT 'once' FROM pg_sleep(2)")
        finally:
            conn.rollback()

    outcome = in_background(local, local_db, work)
    kill_when(remote, remote_db, "query LIKE '%pg_sleep(2)%'")
    err = finish(outcome)["error"]
    assert err.sqlstate == "08007"
    assert "SQLSTATE" in err.diag.message_detail
    assert rows(remote, remote_db, "once") <= 1


def test_lost_commit_reply_is_resolved_as_committed(
    installed: Conn,
    commit_reply_lost: str,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
) -> None:
    def work(conn: Conn) -> str:
        ensure(conn, commit_reply_lost)
        return exec_(conn, "INSERT INTO items (note) VALUES ('resolved')", resolve=True)

    outcome = in_background(local, local_db, work)
    kill_when(remote, remote_db, "wait_event = 'SyncRep'")
    assert finish(outcome).get("result") == "INSERT 0 1", outcome.get("error")
    assert rows(remote, remote_db, "resolved") == 1


def test_lost_commit_reply_with_the_remote_unreachable_is_08007_not_08001(
    installed: Conn, local: Server, local_db: str, remote: Server, remote_db: str
) -> None:
    # The COMMIT waits for a standby that never comes; the proxy then resets the flow and
    # refuses new connections, so the outcome cannot be asked. "Could not connect" (08001)
    # would tell the caller nothing ran, although the COMMIT is about to be applied.
    with (
        remote.settings(synchronous_standby_names="never_there"),
        TcpProxy(remote.host, remote.port) as proxy,
    ):
        target = remote.conninfo(
            remote_db,
            host=proxy.host,
            port=str(proxy.port),
            options="-c synchronous_commit=on",
        )

        def work(conn: Conn) -> str:
            ensure(conn, target)
            return exec_(
                conn,
                "INSERT INTO items (note) VALUES ('unreachable')",
                resolve=True,
                max_attempts=3,
                retry_budget="2 seconds",
            )

        outcome = in_background(local, local_db, work)
        backend_when(remote, remote_db, "wait_event = 'SyncRep'")
        proxy.refuse()
        proxy.cut()
        finish(outcome)
    error = outcome.get("error")
    assert error is not None and error.sqlstate == "08007", outcome
    assert " is unknown)" in (error.diag.message_detail or ""), error.diag.message_detail
    # Without the standby requirement the waiting COMMIT completes: it was applied, once.
    wait_for(lambda: rows(remote, remote_db, "unreachable") == 1, 15, "the commit to complete")


def test_lost_commit_reply_without_resolve_is_08007_never_twice(
    installed: Conn,
    commit_reply_lost: str,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
) -> None:
    def work(conn: Conn) -> str:
        ensure(conn, commit_reply_lost)
        return exec_(conn, "INSERT INTO items (note) VALUES ('unknown')")

    outcome = in_background(local, local_db, work)
    kill_when(remote, remote_db, "wait_event = 'SyncRep'")
    assert finish(outcome)["error"].sqlstate == "08007"
    # It did commit: the caller was told the outcome is unknown, and it was not repeated.
    assert rows(remote, remote_db, "unknown") == 1


def test_resolve_retries_a_transaction_killed_before_commit(
    installed: Conn, target: str, local: Server, local_db: str, remote: Server, remote_db: str
) -> None:
    def work(conn: Conn) -> str:
        ensure(conn, target)
        return exec_(
            conn, "INSERT INTO items (note) SELECT 'exactly once' FROM pg_sleep(2)", resolve=True
        )

    outcome = in_background(local, local_db, work)
    kill_when(remote, remote_db, "query LIKE '%pg_sleep(2)%'")
    assert finish(outcome).get("result") == "INSERT 0 1", outcome.get("error")
    assert rows(remote, remote_db, "exactly once") == 1


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_remote_restart(
    installed: Conn, target: str, restartable: LocalCluster, remote_db: str, mode: str
) -> None:
    ensure(installed, target)
    exec_(installed, "INSERT INTO items (note) VALUES ('before')")
    # The test servers commit asynchronously; make the setup survive the crash of "immediate".
    restartable.execute("CHECKPOINT")
    restartable.restart(mode)
    assert exec_(installed, "INSERT INTO items (note) VALUES ('after')") == "INSERT 0 1"
    assert rows(restartable, remote_db, "after") == 1
    assert listing(installed)["reconnects"] == 1


def test_refused_for_a_while_then_back(
    installed: Conn, target: str, restartable: LocalCluster, remote_db: str
) -> None:
    ensure(installed, target)
    restartable.stop_server()
    back = threading.Timer(1.0, restartable.start_server)
    back.start()
    try:
        status = exec_(
            installed,
            "INSERT INTO items (note) VALUES ('back')",
            retry_budget="30 seconds",
            max_attempts=50,
        )
    finally:
        back.join()
    assert status == "INSERT 0 1"
    assert rows(restartable, remote_db, "back") == 1


def test_refused_beyond_the_budget_is_08001_with_what_was_tried(
    installed: Conn, target: str, restartable: LocalCluster
) -> None:
    ensure(installed, target)
    restartable.stop_server()
    try:
        with pytest.raises(psycopg.Error) as info:
            exec_(
                installed,
                "INSERT INTO items (note) VALUES ('never')",
                retry_budget="1 second",
                max_attempts=50,
            )
    finally:
        restartable.start_server()
    err = info.value
    assert err.sqlstate == "08001"
    assert err.diag.message_primary == 'could not open dblink connection "r"'
    assert "attempt(s) in" in (err.diag.message_detail or "")
    assert "Tried dblink_connect to" in (err.diag.message_hint or "")


def test_defaults_ride_out_a_two_second_restart(
    installed: Conn, target: str, restartable: LocalCluster, remote_db: str
) -> None:
    """With the installed defaults (5 attempts, 10 s budget) the attempts span seconds."""
    ensure(installed, target)
    restartable.stop_server()
    back = threading.Timer(2.0, restartable.start_server)
    started = time.monotonic()
    back.start()
    try:
        status = exec_(installed, "INSERT INTO items (note) VALUES ('after 2 s')")
    finally:
        back.join()
    assert status == "INSERT 0 1"
    assert time.monotonic() - started >= 2.0
    assert rows(restartable, remote_db, "after 2 s") == 1


def test_defaults_give_up_within_the_budget_after_spreading_the_attempts(
    installed: Conn, target: str, restartable: LocalCluster
) -> None:
    ensure(installed, target)
    restartable.stop_server()
    started = time.monotonic()
    try:
        with pytest.raises(psycopg.Error) as info:
            exec_(installed, "INSERT INTO items (note) VALUES ('never')")
    finally:
        elapsed = time.monotonic() - started
        restartable.start_server()
    assert info.value.sqlstate == "08001"
    assert "(5 attempt(s) in" in (info.value.diag.message_detail or "")
    # Waits of at least half of 50 ms, then three of at least 1 s each; the budget is 10 s
    # and a refused connect returns at once.
    assert 3.0 <= elapsed < 10.0 + 5.0, elapsed


def test_idle_session_timeout_on_the_remote(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    with remote.settings(idle_session_timeout="300ms"):
        ensure(installed, target)
        pid = raw_remote_pid(installed)
        # Until the remote backend has exited its socket may still be open, and a statement
        # sent then is lost after sending (08007): the window the toolkit cannot see.
        remote.wait_backends_gone([pid], remote_db)
        assert exec_(installed, "INSERT INTO items (note) VALUES ('idle')") == "INSERT 0 1"
    assert rows(remote, remote_db, "idle") == 1


def test_idle_in_transaction_timeout_is_never_silently_reconnected(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    with remote.settings(idle_in_transaction_session_timeout="300ms"):
        ensure(installed, target)
        pid = raw_remote_pid(installed)
        assert exec_(installed, "BEGIN") == "BEGIN"
        assert exec_(installed, "INSERT INTO items (note) VALUES ('in tx')") == "INSERT 0 1"
        assert listing(installed)["remote_transaction"] is True
        # Until the remote backend has exited, its socket may still be open: the COMMIT would
        # then be sent before the loss shows, and its outcome be unknown (08007).
        remote.wait_backends_gone([pid], remote_db)
        with pytest.raises(psycopg.Error) as info:
            exec_(installed, "COMMIT")
        assert info.value.sqlstate == "08006"
        assert "inside an open remote transaction" in (info.value.diag.message_primary or "")
        # Reported once; the next unit of work gets a new connection.
        assert exec_(installed, "INSERT INTO items (note) VALUES ('after tx')") == "INSERT 0 1"
    assert rows(remote, remote_db, "in tx") == 0
    assert rows(remote, remote_db, "after tx") == 1


def test_busy_after_a_local_cancel_is_replaced(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    installed.execute("SET statement_timeout = '300ms'")
    with pytest.raises(psycopg.errors.QueryCanceled):
        exec_(installed, "DO $$BEGIN PERFORM pg_sleep(3); END$$")
    installed.execute("RESET statement_timeout")
    assert exec_(installed, "INSERT INTO items (note) VALUES ('after cancel')") == "INSERT 0 1"
    assert rows(remote, remote_db, "after cancel") == 1


def test_timeout_is_57014_and_leaves_the_connection_usable(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    started = time.monotonic()
    with pytest.raises(psycopg.errors.QueryCanceled) as info:
        exec_(installed, "DO $$BEGIN PERFORM pg_sleep(5); END$$", timeout="300 milliseconds")
    elapsed = time.monotonic() - started
    assert elapsed < 5  # it returned before the remote statement could have finished
    message = info.value.diag.message_primary or ""
    assert message.startswith('statement on dblink connection "r" timed out after 0.')
    assert scalar(installed, "SELECT public.dblink_get_connections()") is None
    assert exec_(installed, "INSERT INTO items (note) VALUES ('after timeout')", timeout="5s") == (
        "INSERT 0 1"
    )
    assert rows(remote, remote_db, "after timeout") == 1


def test_typed_query_without_column_list(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    remote.execute("INSERT INTO items (note) VALUES ('q1'), ('q2')", remote_db)
    installed.execute("CREATE TYPE item_row AS (id bigint, note text)")
    ensure(installed, target)
    got = installed.execute(
        "SELECT id, note FROM dblink_safe.safe_dblink_query('r', "
        "'SELECT id, note FROM items ORDER BY id', NULL::item_row)"
    ).fetchall()
    assert got == [(1, "q1"), (2, "q2")]
    count = query_value(installed, "SELECT count(*) FROM items", "bigint", timeout="5s")
    assert count == 2
    remote.terminate_backends(remote_db)
    again = installed.execute(
        "SELECT note FROM dblink_safe.safe_dblink_query('r', "
        "'SELECT id, note FROM items ORDER BY id', NULL::item_row, idempotent => true)"
    ).fetchall()
    assert again == [("q1",), ("q2",)]


def test_query_follows_a_row_type_altered_between_calls(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    remote.execute("INSERT INTO items (note) VALUES ('t1')", remote_db)
    installed.execute("CREATE TYPE item_row AS (id bigint, note text)")
    ensure(installed, target)
    query = "SELECT * FROM dblink_safe.safe_dblink_query('r', %s, NULL::item_row)"
    assert installed.execute(query, ("SELECT id, note FROM items",)).fetchall() == [(1, "t1")]
    # Within the validation window (the hot path), in the same session: the new columns.
    installed.execute("ALTER TYPE item_row ADD ATTRIBUTE size integer")
    got = installed.execute(query, ("SELECT id, note, length(note) FROM items",)).fetchall()
    assert got == [(1, "t1", 2)]
    installed.execute("ALTER TYPE item_row DROP ATTRIBUTE note")
    installed.execute("ALTER TYPE item_row ALTER ATTRIBUTE size TYPE numeric(4, 1)")
    got = installed.execute(query, ("SELECT id, 7.25 FROM items",)).fetchall()
    assert [(i, str(v)) for i, v in got] == [(1, "7.3")]
    assert listing(installed)["uses"] == 3


def test_query_remote_error_keeps_its_sqlstate_and_the_connection(
    installed: Conn, target: str
) -> None:
    ensure(installed, target)
    pid = raw_remote_pid(installed)
    with pytest.raises(psycopg.errors.DivisionByZero):
        query_value(installed, "SELECT 1 / 0", "integer")
    with pytest.raises(psycopg.errors.UndefinedTable):
        query_value(installed, "SELECT count(*) FROM no_such_table", "bigint")
    # A remote error loses nothing: the same connection answers next.
    assert query_value(installed, "SELECT 5", "integer") == 5
    assert raw_remote_pid(installed) == pid
    assert listing(installed)["reconnects"] == 0


def test_query_on_a_connection_closed_while_idle_reconnects_before_sending(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    pid = raw_remote_pid(installed)
    remote.terminate_backends(remote_db)
    remote.wait_backends_gone([pid], remote_db)
    # Not idempotent, and still run: the loss was seen before anything was sent.
    assert query_value(installed, "SELECT 6", "integer") == 6
    assert raw_remote_pid(installed) != pid
    assert listing(installed)["reconnects"] == 1


def test_max_lifetime_recycles_the_connection(installed: Conn, target: str) -> None:
    ensure(installed, target, max_lifetime="200 milliseconds")
    first = raw_remote_pid(installed)
    time.sleep(0.3)
    exec_(installed, "SET application_name = 'recycled'")
    assert raw_remote_pid(installed) != first
    assert listing(installed)["reconnects"] == 1


def test_names_differing_in_case_quotes_or_bytes_keep_separate_state(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    # Session settings compare names without case; the state of "Orders" must not be that
    # of "orders", nor may quotes or multibyte characters break or merge anything.
    names = ["orders", "Orders", "ordérs", "o'r;d$$", "orders "]
    for name in names:
        assert ensure(installed, target, name) == "connected"
    for count, name in enumerate(names, start=1):
        for _ in range(count):
            assert insert(installed, name, name) == "INSERT 0 1"
    uses = dict(
        installed.execute("SELECT conn_name, uses FROM dblink_safe.connections()").fetchall()
    )
    assert uses == {name: count for count, name in enumerate(names, start=1)}
    for count, name in enumerate(names, start=1):
        assert rows(remote, remote_db, name) == count


def test_disconnect_and_disconnect_all(installed: Conn, target: str) -> None:
    ensure(installed, target)
    ensure(installed, target, "s")
    assert scalar(installed, "SELECT count(*) FROM dblink_safe.connections()") == 2
    assert scalar(installed, "SELECT dblink_safe.safe_dblink_disconnect('s')") is True
    assert scalar(installed, "SELECT dblink_safe.safe_dblink_disconnect('s')") is False
    assert scalar(installed, "SELECT dblink_safe.safe_dblink_disconnect_all()") == 1
    assert scalar(installed, "SELECT count(*) FROM dblink_safe.connections()") == 0
    assert scalar(installed, "SELECT public.dblink_get_connections()") is None
    with pytest.raises(psycopg.Error) as info:
        exec_(installed, "SELECT 1")
    assert info.value.sqlstate == "08003"


def test_listing_masks_passwords_and_reports_foreign_server_gaps(
    installed: Conn, remote: Server, remote_db: str
) -> None:
    foreign_server(installed, "srv", remote, remote_db, connect_timeout="5")
    user_mapping(installed, "srv", user=remote.user)
    ensure(installed, "srv")
    ensure(installed, remote.conninfo(remote_db, password="Sw0rdf1sh"), "p")
    listed = {
        row[0]: row[1:]
        for row in installed.execute(
            "SELECT conn_name, target, missing_safety_options FROM dblink_safe.connections()"
        )
    }
    assert listed["r"] == ("srv", ["keepalives", "tcp_user_timeout"])
    assert "Sw0rdf1sh" not in listed["p"][0] and "password=********" in listed["p"][0]
    assert listed["p"][1] is None


def test_timeout_bounds_a_remote_that_stops_answering(
    installed: Conn, restartable: LocalCluster, remote_db: str
) -> None:
    from proxy import TcpProxy

    with TcpProxy(restartable.host, restartable.port) as proxy:
        through = restartable.conninfo(remote_db, host=proxy.host, port=str(proxy.port))
        ensure(installed, through)
        assert exec_(installed, "INSERT INTO items (note) VALUES ('before stall')") == "INSERT 0 1"
        proxy.stall()
        started = time.monotonic()
        with pytest.raises(psycopg.errors.QueryCanceled) as info:
            exec_(installed, "INSERT INTO items (note) VALUES ('stalled')", timeout="500ms")
        assert time.monotonic() - started < 30  # bounded, not the kernel's 15 minutes
        assert "timed out after 0." in (info.value.diag.message_primary or "")
        assert scalar(installed, "SELECT public.dblink_get_connections()") is None
        proxy.resume()
        assert exec_(installed, "INSERT INTO items (note) VALUES ('after stall')") == "INSERT 0 1"
    assert rows(restartable, remote_db, "after stall") == 1
    assert rows(restartable, remote_db, "stalled") <= 1
