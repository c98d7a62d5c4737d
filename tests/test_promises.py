"""Never a lost write reported as success: local rollbacks, remote errors that look like lost
connections, failed first steps, timeouts at COMMIT, statements that end the transaction."""

import time
from typing import Any

import psycopg
import pytest
from calls import (
    Conn,
    ensure,
    error_of,
    exec_,
    insert,
    listing,
    query_value,
    raw_remote_pid,
    rows,
    scalar,
)
from faults import backend_when, finish, in_background
from proxy import TcpProxy
from psycopg import sql
from report import record
from servers import LocalCluster, Server, wait_for

import pgdblink_safe


def remote_sessions(remote: Server, remote_db: str) -> list[tuple[int, str]]:
    query = sql.SQL(
        "SELECT pid, state FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()"
    ).format(sql.Literal(remote_db))
    return [(int(pid), str(state)) for pid, state in remote.execute(query)]


# --- a remote transaction stays known through a local ROLLBACK --------------------------


def test_remote_transaction_survives_a_local_rollback_and_is_never_silently_healed(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    with pytest.raises(psycopg.errors.DivisionByZero), installed.transaction():
        assert exec_(installed, "BEGIN") == "BEGIN"
        installed.execute("SELECT 1 / 0")
    # The local rollback undid the session settings, not the remote transaction.
    assert listing(installed)["remote_transaction"] is True
    assert exec_(installed, "INSERT INTO items (note) VALUES ('in forgotten tx')") == "INSERT 0 1"
    pid = raw_remote_pid(installed)
    remote.terminate_backends(remote_db)
    remote.wait_backends_gone([pid], remote_db)
    error = error_of(exec_, installed, "INSERT INTO items (note) VALUES ('after kill')")
    assert error.sqlstate == "08006"
    assert "inside an open remote transaction" in (error.diag.message_primary or "")
    assert rows(remote, remote_db, "in forgotten tx") == 0
    assert rows(remote, remote_db, "after kill") == 0
    # Reported once: the next unit of work runs on a new connection.
    assert insert(installed, "next") == "INSERT 0 1"
    assert rows(remote, remote_db, "next") == 1


def test_a_commit_in_a_rolled_back_local_transaction_ends_the_remote_one(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    assert exec_(installed, "BEGIN") == "BEGIN"
    assert insert(installed, "committed remotely") == "INSERT 0 1"
    with pytest.raises(psycopg.errors.DivisionByZero), installed.transaction():
        assert exec_(installed, "COMMIT") == "COMMIT"
        installed.execute("SELECT 1 / 0")
    assert listing(installed)["remote_transaction"] is False
    assert rows(remote, remote_db, "committed remotely") == 1
    # No transaction open: a terminated backend is replaced without a word.
    remote.terminate_backends(remote_db)
    assert insert(installed, "healed") == "INSERT 0 1"
    assert rows(remote, remote_db, "healed") == 1


@pytest.mark.parametrize(
    "statement",
    [
        "BEGIN; INSERT INTO items (note) VALUES ('multi')",
        "START TRANSACTION READ WRITE; INSERT INTO items (note) VALUES ('multi')",
    ],
)
def test_a_transaction_opened_inside_a_string_of_statements_is_followed(
    installed: Conn, target: str, remote: Server, remote_db: str, statement: str
) -> None:
    ensure(installed, target)
    assert exec_(installed, statement) == "INSERT 0 1"
    assert listing(installed)["remote_transaction"] is True
    pid = raw_remote_pid(installed)
    remote.terminate_backends(remote_db)
    remote.wait_backends_gone([pid], remote_db)
    assert error_of(exec_, installed, "SELECT 1").sqlstate == "08006"
    assert rows(remote, remote_db, "multi") == 0


def test_rollback_to_savepoint_keeps_the_remote_transaction(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    assert exec_(installed, "BEGIN") == "BEGIN"
    assert exec_(installed, "SAVEPOINT s") == "SAVEPOINT"
    assert exec_(installed, "ROLLBACK TO SAVEPOINT s") == "ROLLBACK"
    assert listing(installed)["remote_transaction"] is True
    assert exec_(installed, "COMMIT AND CHAIN") == "COMMIT"
    assert listing(installed)["remote_transaction"] is True
    assert exec_(installed, "ROLLBACK") == "ROLLBACK"
    assert listing(installed)["remote_transaction"] is False


# --- remote errors of class 08 or 57P0x are the remote's own ---------------------------


@pytest.mark.parametrize("code", ["08006", "08001", "57P01"])
def test_a_remote_error_with_a_connection_sqlstate_is_reported_as_it_is(
    installed: Conn, target: str, remote: Server, remote_db: str, code: str
) -> None:
    ensure(installed, target)
    pid = raw_remote_pid(installed)
    statement = (
        "DO $$BEGIN INSERT INTO items (note) VALUES ('raised'); "
        f"RAISE EXCEPTION 'remote says no' USING ERRCODE = '{code}', "
        "DETAIL = 'the detail', HINT = 'the hint'; END$$"
    )
    started = time.monotonic()
    for options in ({}, {"idempotent": True}, {"resolve": True}, {"timeout": "5 s"}):
        error = error_of(exec_, installed, statement, **options)
        assert error.sqlstate == code, options
        assert error.diag.message_primary == "remote says no", options
        assert error.diag.message_detail == "the detail"
        assert error.diag.message_hint == "the hint"
    # Never re-run, never a healthy connection dropped.
    assert time.monotonic() - started < 3
    assert raw_remote_pid(installed) == pid
    assert rows(remote, remote_db, "raised") == 0
    assert insert(installed, "still usable") == "INSERT 0 1"


# --- a failed first step of resolve leaves the connection usable ------------------------


def test_a_failed_first_step_of_resolve_does_not_poison_the_connection(
    installed: Conn, remote: Server, remote_db: str
) -> None:
    """The role may not ask for its transaction id (42501): the call fails, nothing sticks."""
    remote.execute("DROP ROLE IF EXISTS resolver_less")
    remote.execute("CREATE ROLE resolver_less LOGIN")
    remote.execute("REVOKE EXECUTE ON FUNCTION pg_current_xact_id() FROM PUBLIC", remote_db)
    remote.execute("GRANT INSERT, SELECT ON items TO resolver_less", remote_db)
    try:
        limited = remote.conninfo(remote_db, user="resolver_less")
        ensure(installed, limited)
        error = error_of(exec_, installed, "INSERT INTO items (note) VALUES ('x')", resolve=True)
        assert error.sqlstate == "42501"
        # The remote transaction the first step opened was rolled back: the connection works.
        assert insert(installed, "plain") == "INSERT 0 1"
        assert ensure(installed, limited) == "reused"
        # One idle remote session (the setup's own sessions may linger a moment).
        wait_for(
            lambda: [state for _, state in remote_sessions(remote, remote_db)] == ["idle"],
            10,
            "one idle remote session",
        )
        assert rows(remote, remote_db, "x") == 0
        assert rows(remote, remote_db, "plain") == 1
    finally:
        installed.execute("SELECT dblink_safe.safe_dblink_disconnect_all()")
        remote.execute("GRANT EXECUTE ON FUNCTION pg_current_xact_id() TO PUBLIC", remote_db)
        remote.execute("DROP OWNED BY resolver_less", remote_db)
        remote.execute("DROP ROLE resolver_less")


# --- resolve with a timeout at COMMIT ----------------------------------------------------


@pytest.fixture
def slow_commit(remote: Server, remote_db: str) -> str:
    """``items`` rows noted 'slow' make their COMMIT wait 2 s (a deferred constraint trigger)."""
    remote.execute(
        """
        CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.note LIKE 'slow%' THEN PERFORM pg_sleep(2); END IF;
            RETURN NULL;
        END$$;
        CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON items
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();
        """,
        remote_db,
    )
    return remote.conninfo(remote_db)


def test_resolve_with_a_timeout_shorter_than_the_commit_reports_the_commit(
    installed: Conn, slow_commit: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, slow_commit)
    started = time.monotonic()
    result = exec_(
        installed, "INSERT INTO items (note) VALUES ('slow 1')", resolve=True, timeout="1 s"
    )
    elapsed = time.monotonic() - started
    # The COMMIT outlived the timeout and committed: resolved as committed, never 57014.
    assert result == "INSERT 0 1"
    assert rows(remote, remote_db, "slow 1") == 1
    assert elapsed < 1 + 5 + 1  # timeout, then resolve_wait (5 s) at most


def test_a_statement_timeout_before_commit_with_resolve_is_57014_and_nothing_committed(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    statement = "INSERT INTO items (note) SELECT 'late' FROM pg_sleep(2)"
    error = error_of(exec_, installed, statement, resolve=True, timeout="500 ms")
    assert error.sqlstate == "57014"
    wait_for(lambda: not remote_sessions(remote, remote_db), 10, "the remote backend to end")
    assert rows(remote, remote_db, "late") == 0


# --- statements that end the toolkit's own transaction ----------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO items (note) VALUES ('a'); COMMIT; INSERT INTO items (note) VALUES ('b')",
        "insert into items (note) values ('a');\nend",
        "ROLLBACK; INSERT INTO items (note) VALUES ('b')",
        "INSERT INTO items (note) VALUES ('a'); PREPARE TRANSACTION 'p'",
    ],
)
def test_resolve_refuses_a_statement_that_ends_its_transaction(
    installed: Conn, target: str, remote: Server, remote_db: str, statement: str
) -> None:
    ensure(installed, target)
    error = error_of(exec_, installed, statement, resolve=True)
    assert error.sqlstate == "0A000"
    assert "ends its own transaction" in (error.diag.message_primary or "")
    assert rows(remote, remote_db, "a") == 0 and rows(remote, remote_db, "b") == 0


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE items SET note = CASE WHEN note = 'x' THEN 'y' ELSE note END",
        "INSERT INTO items (note) VALUES ('commit; rollback')",
        "INSERT INTO items (note) VALUES ($q$; END$q$) -- ; COMMIT",
        "SAVEPOINT s; INSERT INTO items (note) VALUES ('s'); ROLLBACK TO SAVEPOINT s",
    ],
)
def test_resolve_takes_statements_that_only_mention_those_words(
    installed: Conn, target: str, statement: str
) -> None:
    ensure(installed, target)
    exec_(installed, statement, resolve=True)


# --- remote_tx and a local PREPARE TRANSACTION -------------------------------------------


def test_remote_tx_refuses_a_local_prepare_before_committing_anything(
    local: Server, local_db: str, installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    with (
        local.settings(max_prepared_transactions="2"),
        local.connect(local_db, autocommit=False) as session,
    ):
        ensure(session, target, scope="transaction", remote_tx=True)
        insert(session, "prepared")
        with pytest.raises(psycopg.Error) as info:
            session.execute("PREPARE TRANSACTION 'p'")
        assert info.value.sqlstate == "0A000"
        assert "PREPARE TRANSACTION" in (info.value.diag.message_primary or "")
        session.rollback()
    assert rows(remote, remote_db, "prepared") == 0
    wait_for(lambda: not remote_sessions(remote, remote_db), 15, "the remote session to end")


# --- smaller ones ------------------------------------------------------------------------


def test_insert_returning_says_that_it_ran(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    error = error_of(exec_, installed, "INSERT INTO items (note) VALUES ('ret') RETURNING id")
    assert error.sqlstate == "2F003"
    assert "has been committed" in (error.diag.message_detail or "")
    assert "safe_dblink_query" in (error.diag.message_hint or "")
    assert rows(remote, remote_db, "ret") == 1


def test_commit_after_a_failed_remote_statement_is_40000(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    with pytest.raises(psycopg.Error) as info, installed.transaction():
        ensure(installed, target, scope="transaction", remote_tx=True)
        insert(installed, "before failure")
        with pytest.raises(psycopg.errors.DivisionByZero), installed.transaction():
            exec_(installed, "SELECT 1 / 0")
    assert info.value.sqlstate == "40000"
    assert rows(remote, remote_db, "before failure") == 0


def test_remote_tx_commits_after_the_toolkit_was_dropped_and_installed_again(
    local: Server, local_db: str, installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    with local.connect(local_db) as session:
        with session.transaction():
            ensure(session, target, scope="transaction", remote_tx=True)
            insert(session, "first")
        # What an operator does when uninstall refuses because of this session's table.
        installed.execute("DROP SCHEMA dblink_safe CASCADE")
        pgdblink_safe.install(installed)
        with session.transaction():
            ensure(session, target, scope="transaction", remote_tx=True)
            insert(session, "second")
    assert rows(remote, remote_db, "first") == 1
    assert rows(remote, remote_db, "second") == 1


# --- a lost COMMIT across an immediate restart: the xid may be handed out again ---------


def test_a_lost_commit_is_never_success_when_a_restart_reuses_its_transaction_id(
    local: Server, local_db: str, installed: Conn, slow_commit: str, remote: Server, remote_db: str
) -> None:
    """The remote stops with ``-m immediate`` while the COMMIT waits in a deferred trigger,
    before its commit record is written. Crash recovery hands the same id to the next
    transaction, which commits: ``pg_xact_status`` then says 'committed' for a row that does
    not exist. The call must not report success."""
    if not isinstance(remote, LocalCluster):
        pytest.skip(f"the {remote.label} server cannot be restarted by this provider")
    # The test servers commit asynchronously: make the table and its trigger durable first.
    # Nothing else may write WAL until the stop (autovacuum would, and its flush would make
    # the transaction's own records durable, so that its id is not handed out again).
    # A WAL write the test does not control (the WAL writer after some other commit) can make
    # the transaction's records durable before the stop; the id is then not handed out again,
    # and the scenario is tried once more. That run must still tell the truth.
    for attempt in range(1, 4):
        note = f"slow reused {attempt}"
        with remote.settings(autovacuum="off"):
            remote.execute("CHECKPOINT")
            result, xid, handed_out = _commit_cut_by_an_immediate_stop(
                local, local_db, remote, remote_db, note
            )
        reused = xid in handed_out
        record(f"promises: immediate restart during COMMIT: xid {xid} reused: {reused}")
        if reused:
            break
        # Not reused: the COMMIT never happened (aborted), so the statement ran again, once.
        assert result.get("result") == "INSERT 0 1", result
        assert rows(remote, remote_db, note) == 1
    assert reused, (xid, handed_out)
    # Unknown (08007), never success, and the statement was not run again.
    assert result["error"].sqlstate == "08007", result
    assert "may have handed the id out again" in (result["error"].diag.message_detail or "")
    assert rows(remote, remote_db, note) == 0


def _commit_cut_by_an_immediate_stop(
    local: Server,
    local_db: str,
    remote: LocalCluster,
    remote_db: str,
    note: str,
    remote_tx: bool = False,
) -> tuple[dict[str, Any], int, list[int]]:
    with TcpProxy(remote.host, remote.port) as proxy:
        through = remote.conninfo(remote_db, host=proxy.host, port=str(proxy.port))

        def work(conn: Conn) -> str:
            statement = sql.SQL("INSERT INTO items (note) VALUES ({})").format(sql.Literal(note))
            if not remote_tx:
                ensure(conn, through)
                return exec_(conn, statement.as_string(conn), resolve=True)
            # The local COMMIT commits the remote transaction, and waits in its trigger.
            with conn.transaction():
                ensure(conn, through, scope="transaction", remote_tx=True)
                exec_(conn, statement.as_string(conn))
            return "committed"

        outcome = in_background(local, local_db, work)
        pid = backend_when(remote, remote_db, "wait_event = 'PgSleep'")
        query = sql.SQL("SELECT backend_xid::text FROM pg_stat_activity WHERE pid = {}")
        xid = int(remote.execute(query.format(sql.Literal(pid)))[0][0])
        # Keep the toolkit out until the id has been handed out again (nothing that writes
        # WAL may run before the stop: a flush would make the transaction's records durable).
        proxy.refuse()
        remote.stop_server("immediate")
        remote.start_server()
        handed_out = []
        with remote.connect("postgres") as other:
            while not handed_out or handed_out[-1] < xid:
                handed_out.append(int(scalar(other, "SELECT pg_current_xact_id()::text")))
        proxy.accept()
        return finish(outcome), xid, handed_out


def test_a_remote_tx_commit_cut_by_an_immediate_stop_is_never_success(
    local: Server, local_db: str, installed: Conn, slow_commit: str, remote: Server, remote_db: str
) -> None:
    """The same stop, at the remote COMMIT that the local COMMIT of a remote_tx unit makes:
    the local transaction fails (08007 when the id was handed out again, 08006 when the
    remote answers that it did not commit), and the row is not there."""
    if not isinstance(remote, LocalCluster):
        pytest.skip(f"the {remote.label} server cannot be restarted by this provider")
    with remote.settings(autovacuum="off"):
        remote.execute("CHECKPOINT")
        result, xid, handed_out = _commit_cut_by_an_immediate_stop(
            local, local_db, remote, remote_db, "slow remote_tx", remote_tx=True
        )
    reused = xid in handed_out
    record(f"promises: immediate restart during a remote_tx COMMIT: xid {xid} reused: {reused}")
    assert "error" in result, result
    assert result["error"].sqlstate == ("08007" if reused else "08006"), result["error"]
    assert "lost at commit" in (result["error"].diag.message_primary or "")
    assert rows(remote, remote_db, "slow remote_tx") == 0


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_a_query_cut_by_an_immediate_restart(
    local: Server,
    local_db: str,
    installed: Conn,
    target: str,
    remote: Server,
    remote_db: str,
    idempotent: bool,
) -> None:
    if not isinstance(remote, LocalCluster):
        pytest.skip(f"the {remote.label} server cannot be restarted by this provider")
    remote.execute("CHECKPOINT")

    def work(conn: Conn) -> object:
        ensure(conn, target)
        return query_value(conn, "SELECT 42 FROM pg_sleep(1)", "integer", idempotent=idempotent)

    outcome = in_background(local, local_db, work)
    backend_when(remote, remote_db, "wait_event = 'PgSleep'")
    remote.restart("immediate")
    result = finish(outcome)
    if idempotent:
        assert result.get("result") == 42, result.get("error")
    else:
        assert result["error"].sqlstate == "08007", result


def test_a_lost_commit_reply_across_a_clean_restart_is_resolved_as_committed(
    local: Server, local_db: str, installed: Conn, remote: Server, remote_db: str
) -> None:
    """A clean shutdown writes every record first: after a fast restart alone the id cannot
    have been handed out again, so 'committed' is still ours."""
    if not isinstance(remote, LocalCluster):
        pytest.skip(f"the {remote.label} server cannot be restarted by this provider")
    with remote.settings(synchronous_standby_names="never_there"):
        waits = remote.conninfo(remote_db, options="-c synchronous_commit=on")

        def work(conn: Conn) -> str:
            ensure(conn, waits)
            return exec_(conn, "INSERT INTO items (note) VALUES ('clean restart')", resolve=True)

        outcome = in_background(local, local_db, work)
        backend_when(remote, remote_db, "wait_event = 'SyncRep'")
        remote.restart("fast")
    assert finish(outcome).get("result") == "INSERT 0 1", outcome.get("error")
    assert rows(remote, remote_db, "clean restart") == 1


# --- permanent connection errors are not retried, whatever language the server speaks -----


def test_a_refusal_the_server_repeats_word_for_word_is_not_retried(
    installed: Conn, remote: Server, remote_db: str
) -> None:
    """No English pattern matches this refusal; it is the repetition that tells."""
    target = remote.conninfo(remote_db, options="-c no_such.setting_x=1 -c bogus_param=1")
    started = time.monotonic()
    error = error_of(ensure, installed, target)
    elapsed = time.monotonic() - started
    assert error.sqlstate == "08001"
    assert "(2 attempt(s)" in (error.diag.message_detail or "")
    assert elapsed < 2  # not five attempts spread over the retry budget


def test_a_refused_connection_is_still_retried(installed: Conn, remote: Server) -> None:
    """A port nobody listens on answers the same way each time, but nothing answers it."""
    target = remote.conninfo("postgres", port="1", connect_timeout="2")
    error = error_of(ensure, installed, target, max_attempts=3, retry_budget="2 s")
    assert error.sqlstate == "08001"
    assert "(3 attempt(s)" in (error.diag.message_detail or "")


# --- the hot path with a timeout, lost after sending --------------------------------------


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_the_timeout_hot_path_lost_after_sending(
    local: Server,
    local_db: str,
    installed: Conn,
    target: str,
    remote: Server,
    remote_db: str,
    idempotent: bool,
) -> None:
    """A fresh connection takes the hot path; killed mid-statement, the same rules hold."""
    statement = "INSERT INTO items (note) SELECT 'hot timeout' FROM pg_sleep(0.5)"

    def work(conn: Conn) -> str:
        ensure(conn, target)
        return exec_(conn, statement, idempotent=idempotent, timeout="10 s")

    outcome = in_background(local, local_db, work)
    pid = backend_when(remote, remote_db, "wait_event = 'PgSleep'")
    remote.execute(sql.SQL("SELECT pg_terminate_backend({})").format(sql.Literal(pid)))
    result = finish(outcome)
    if idempotent:
        assert result.get("result") == "INSERT 0 1", result.get("error")
        assert rows(remote, remote_db, "hot timeout") == 1
    else:
        assert result["error"].sqlstate == "08007"
        assert rows(remote, remote_db, "hot timeout") == 0


@pytest.mark.parametrize("idempotent", [False, True], ids=["plain", "idempotent"])
def test_a_query_lost_after_sending(
    local: Server,
    local_db: str,
    installed: Conn,
    target: str,
    remote: Server,
    remote_db: str,
    idempotent: bool,
) -> None:
    """safe_dblink_query killed mid-query: 08007, or run again when idempotent."""

    def work(conn: Conn) -> object:
        ensure(conn, target)
        return query_value(conn, "SELECT 42 FROM pg_sleep(0.5)", "integer", idempotent=idempotent)

    outcome = in_background(local, local_db, work)
    pid = backend_when(remote, remote_db, "wait_event = 'PgSleep'")
    remote.execute(sql.SQL("SELECT pg_terminate_backend({})").format(sql.Literal(pid)))
    result = finish(outcome)
    if idempotent:
        assert result.get("result") == 42, result.get("error")
    else:
        assert result["error"].sqlstate == "08007"


# --- a name reopened elsewhere by plain dblink calls -------------------------------------


@pytest.mark.parametrize("elsewhere", ["another database", "another cluster"])
def test_a_name_reopened_elsewhere_with_plain_dblink_is_noticed_at_the_next_probe(
    installed: Conn, target: str, remote: Server, remote_db: str, local: Server, elsewhere: str
) -> None:
    other_db = f"{remote_db}_other"
    server = remote if elsewhere == "another database" else local
    server.create_database(other_db)
    try:
        server.execute(
            "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
            dbname=other_db,
        )
        ensure(installed, target)
        assert insert(installed, "first") == "INSERT 0 1"
        installed.execute("SELECT dblink_disconnect('r')")
        installed.execute("SELECT dblink_connect('r', %s)", (server.conninfo(other_db),))
        # A call that probes (a zero validation window) refuses to send anything there.
        error = error_of(insert, installed, "sent elsewhere", validation_window="0 s")
        assert error.sqlstate == "55000"
        assert '"r" no longer leads where ensure_dblink_conn opened it' in str(error)
        assert other_db in (error.diag.message_detail or "")
        assert remote_db in (error.diag.message_detail or "")
        assert "ensure_dblink_conn('r'" in (error.diag.message_hint or "")
        assert rows(server, other_db, "sent elsewhere") == 0
        # So does a query, and so does every call after it: the name is still not ours.
        again = error_of(query_value, installed, "SELECT 1", "integer", validation_window="0 s")
        assert again.sqlstate == "55000"
        assert rows(remote, remote_db, "sent elsewhere") == 0
        # ensure_dblink_conn, when it probes, points it back where it says.
        assert ensure(installed, target, validation_window="0 s") == "reconnected"
        assert insert(installed, "back home") == "INSERT 0 1"
        assert rows(remote, remote_db, "back home") == 1
        assert rows(server, other_db, "back home") == 0
    finally:
        installed.execute("SELECT dblink_disconnect(n) FROM unnest(dblink_get_connections()) AS n")
        server.drop_database(other_db)


def test_a_name_reopened_to_the_same_place_is_used_as_before(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    installed.execute("SELECT dblink_disconnect('r')")
    installed.execute("SELECT dblink_connect('r', %s)", (target,))
    assert insert(installed, "same place", validation_window="0 s") == "INSERT 0 1"
    assert ensure(installed, target, validation_window="0 s") == "reused"
    assert rows(remote, remote_db, "same place") == 1


# --- resolve in two round trips: what happens to each part of the first one --------------


def test_resolve_in_a_remote_transaction_the_toolkit_knows_sends_nothing(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    assert exec_(installed, "BEGIN") == "BEGIN"
    assert insert(installed, "kept open") == "INSERT 0 1"
    error = error_of(insert, installed, "resolved inside", resolve=True)
    assert error.sqlstate == "25001"
    assert error.diag.message_detail == "Nothing was sent."
    # The transaction it found is intact, and commits.
    assert exec_(installed, "COMMIT") == "COMMIT"
    assert rows(remote, remote_db, "kept open") == 1
    assert rows(remote, remote_db, "resolved inside") == 0


def test_resolve_in_a_remote_transaction_opened_behind_the_toolkit_runs_nothing(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    installed.execute("SELECT dblink_exec('r', 'BEGIN')")
    installed.execute("SELECT dblink_exec('r', 'INSERT INTO items (note) VALUES (''behind'')')")
    error = error_of(insert, installed, "resolved behind", resolve=True)
    assert error.sqlstate == "25001"
    assert "rolled back" in (error.diag.message_detail or "")
    # The check failed that transaction, so it was rolled back; the connection is usable.
    assert insert(installed, "after", resolve=True) == "INSERT 0 1"
    assert rows(remote, remote_db, "behind") == 0
    assert rows(remote, remote_db, "resolved behind") == 0
    assert rows(remote, remote_db, "after") == 1
    assert listing(installed)["remote_transaction"] is False


@pytest.mark.parametrize(
    ("statement", "sqlstate"),
    [
        ("INSERT INTO items (note) VALUES ('returning') RETURNING id", "2F003"),
        ("INSERT INTO items (note) VALUES ('returning') RETURNING id, note", "2F003"),
        ("UPDATE items SET note = 'returning' WHERE false RETURNING id", "2F003"),
        ("INSERT INTO items (note) SELECT 'returning' WHERE 1 / 0 = 1", "22012"),
        ("INSERT INTO no_such_table VALUES ('returning')", "42P01"),
    ],
    ids=["one-column", "two-columns", "no-rows", "remote-type-error", "remote-error"],
)
def test_resolve_rolls_back_a_statement_that_fails_or_returns_rows(
    installed: Conn, target: str, remote: Server, remote_db: str, statement: str, sqlstate: str
) -> None:
    ensure(installed, target)
    pid = raw_remote_pid(installed)
    error = error_of(exec_, installed, statement, resolve=True)
    assert error.sqlstate == sqlstate, error
    if sqlstate == "2F003":
        assert "nothing of it committed" in (error.diag.message_detail or "")
    assert rows(remote, remote_db, "returning") == 0
    # Same connection, no transaction left open on it.
    assert insert(installed, "next", resolve=True) == "INSERT 0 1"
    assert raw_remote_pid(installed) == pid
    states = [state for _, state in remote_sessions(remote, remote_db)]
    assert "idle in transaction" not in states
    assert "idle in transaction (aborted)" not in states


def test_resolve_returns_the_statement_s_own_tag(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    ensure(installed, target)
    remote.execute("INSERT INTO items (note) VALUES ('u'), ('u'), ('u')", remote_db)
    assert exec_(installed, "UPDATE items SET note = 'v' WHERE note = 'u'", resolve=True) == (
        "UPDATE 3"
    )
    assert exec_(installed, "DELETE FROM items WHERE note = 'v';", resolve=True) == "DELETE 3"
    statements = (
        "INSERT INTO items (note) VALUES ('w'); UPDATE items SET note = 'x' WHERE note = 'w'"
    )
    assert exec_(installed, statements, resolve=True) == "UPDATE 1"
    assert rows(remote, remote_db, "x") == 1
