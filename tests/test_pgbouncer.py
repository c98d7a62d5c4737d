"""The wrappers with their dblink connections going through a real PgBouncer.

Session pooling gives each dblink connection one server connection for its whole life:
PgBouncer's own recycling (server_lifetime, server_idle_timeout, RECONNECT) waits until the
client lets go, while KILL, a PgBouncer restart or a terminated backend close the client
connection, which the toolkit notices and replaces. Transaction pooling hands out a server
connection per transaction: recycling never reaches the client, and session state set by
one call (SET, temporary tables, prepared statements) is gone by a later one, or shows up
for another client. The toolkit's probe, retries and commit resolution use no session state.
"""

import re
import threading
import time
from collections.abc import Callable, Iterator

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
    remote_pid,
    rows,
    scalar,
)
from faults import finish, in_background, kill_when, on_database, running
from pgbouncer import PgBouncer, find_pgbouncer
from psycopg import sql
from servers import LocalCluster, Server, wait_for

Start = Callable[..., PgBouncer]

# Long enough to act on the remote while the statement runs; the faults below take ~50 ms.
_SLOW = "pg_sleep(1)"


@pytest.fixture
def bouncer(request: pytest.FixtureRequest, local: Server, remote: Server) -> Iterator[Start]:
    """Starts PgBouncer instances in front of the remote; all are stopped after the test.

    A failing test prints their logs.
    """
    if find_pgbouncer() is None:
        pytest.skip(
            "PgBouncer is not installed (apt-get install pgbouncer, or set "
            "PGDBLINK_SAFE_PGBOUNCER to its binary)"
        )
    if not isinstance(local, LocalCluster):
        pytest.skip(f"the {local.label} server cannot reach a PgBouncer on this host's loopback")
    started: list[PgBouncer] = []
    failed_before = request.session.testsfailed

    def start(pool_mode: str = "session", **settings: object) -> PgBouncer:
        instance = PgBouncer(remote, pool_mode, **settings)
        started.append(instance)
        return instance.start()

    try:
        yield start
    finally:
        try:
            if request.session.testsfailed > failed_before:
                for instance in started:
                    print(f"\n----- PgBouncer log (port {instance.port}) -----\n{instance.log()}")
        finally:
            for instance in started:
                instance.close()


def server_pids(bouncer: PgBouncer, dbname: str) -> list[int]:
    """The remote backends of PgBouncer's server connections to ``dbname`` (SHOW SERVERS)."""
    return sorted(int(row["remote_pid"]) for row in bouncer.servers(dbname))


# -- session pooling: PgBouncer's recycling waits for the client ----------------------------


def test_session_mode_server_lifetime_waits_for_the_client_to_let_go(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str
) -> None:
    pgb = bouncer("session", server_lifetime=1)
    target = pgb.conninfo(remote_db)
    ensure(installed, target)
    first = remote_pid(installed)
    time.sleep(1.3)
    # Past server_lifetime, but linked to the dblink connection: kept, nothing breaks.
    assert exec_(installed, "INSERT INTO items (note) VALUES ('kept')") == "INSERT 0 1"
    assert remote_pid(installed) == first
    assert server_pids(pgb, remote_db) == [first]
    assert listing(installed)["reconnects"] == 0
    # Released, it is closed at once rather than pooled, and the next client gets a new one.
    position = pgb.log_position()
    assert scalar(installed, "SELECT dblink_safe.safe_dblink_disconnect('r')") is True
    wait_for(lambda: first not in remote.backend_pids(remote_db), 10, "the old server to close")
    assert "closing because: server lifetime over" in pgb.log_since(position)
    assert ensure(installed, target) == "connected"
    assert remote_pid(installed) != first
    assert rows(remote, remote_db, "kept") == 1


def test_session_mode_recycling_needs_the_toolkits_max_lifetime(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str
) -> None:
    pgb = bouncer("session", server_lifetime=1)
    ensure(installed, pgb.conninfo(remote_db), max_lifetime="1 second")
    first = remote_pid(installed)
    time.sleep(1.2)
    # The toolkit replaces its connection before use; PgBouncer then retires the old server.
    assert exec_(installed, "INSERT INTO items (note) VALUES ('recycled')") == "INSERT 0 1"
    second = remote_pid(installed)
    assert second != first
    assert listing(installed)["reconnects"] == 1
    wait_for(lambda: first not in remote.backend_pids(remote_db), 10, "the old server to close")
    assert server_pids(pgb, remote_db) == [second]
    assert rows(remote, remote_db, "recycled") == 1


def test_session_mode_server_idle_timeout_applies_once_released(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str
) -> None:
    pgb = bouncer("session", server_idle_timeout=1)
    ensure(installed, pgb.conninfo(remote_db))
    first = remote_pid(installed)
    time.sleep(1.3)
    # The dblink connection was idle past server_idle_timeout: still linked, still there.
    assert exec_(installed, "INSERT INTO items (note) VALUES ('idle')") == "INSERT 0 1"
    assert remote_pid(installed) == first
    assert listing(installed)["reconnects"] == 0
    scalar(installed, "SELECT dblink_safe.safe_dblink_disconnect('r')")
    # Released: reset (DISCARD ALL) and pooled, then closed once idle for a second.
    wait_for(
        lambda: (
            [(r["remote_pid"], r["state"]) for r in pgb.servers(remote_db)] == [(first, "idle")]
        ),
        10,
        "the released server to be pooled",
    )
    wait_for(lambda: not pgb.servers(remote_db), 10, "PgBouncer to close the idle server")
    assert first not in remote.backend_pids(remote_db)
    assert rows(remote, remote_db, "idle") == 1


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_server_backend_terminated_behind_pgbouncer(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str, pool_mode: str
) -> None:
    pgb = bouncer(pool_mode)
    ensure(installed, pgb.conninfo(remote_db))
    first = remote_pid(installed)
    remote.terminate_backends(remote_db)
    assert exec_(installed, "INSERT INTO items (note) VALUES ('after')") == "INSERT 0 1"
    assert remote_pid(installed) != first
    # Session pooling closes the client with its server; transaction pooling hides it.
    assert listing(installed)["reconnects"] == (1 if pool_mode == "session" else 0)
    assert rows(remote, remote_db, "after") == 1


def test_a_target_with_options_is_refused_by_pgbouncer(
    installed: Conn, bouncer: Start, remote_db: str
) -> None:
    # PgBouncer accepts only the startup parameters it tracks (not "options", so no "-c").
    pgb = bouncer("session")
    target = pgb.conninfo(remote_db, options="-c synchronous_commit=on")
    err = error_of(ensure, installed, target)
    assert err.sqlstate == "08001"
    assert "unsupported startup parameter: options" in (err.diag.message_detail or "")
    # A refusal that no retry can change is reported at once, not retried for seconds.
    assert "(1 attempt(s) in" in (err.diag.message_detail or ""), err.diag.message_detail
    assert scalar(installed, "SELECT public.dblink_get_connections()") is None


# -- the admin console: RECONNECT and KILL ---------------------------------------------------


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_reconnect_command(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str, pool_mode: str
) -> None:
    pgb = bouncer(pool_mode)
    target = pgb.conninfo(remote_db)
    ensure(installed, target)
    first = remote_pid(installed)
    assert pgb.admin("RECONNECT") == []
    assert exec_(installed, "INSERT INTO items (note) VALUES ('reconnect')") == "INSERT 0 1"
    assert listing(installed)["reconnects"] == 0
    if pool_mode == "session":
        # Marked, and closed only when the client lets go of it.
        assert [(r["remote_pid"], r["close_needed"]) for r in pgb.servers(remote_db)] == [
            (first, 1)
        ]
        assert remote_pid(installed) == first
        scalar(installed, "SELECT dblink_safe.safe_dblink_disconnect('r')")
        ensure(installed, target)
    assert remote_pid(installed) != first
    wait_for(lambda: first not in remote.backend_pids(remote_db), 10, "the old server to close")
    assert rows(remote, remote_db, "reconnect") == 1


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_kill_between_calls_reconnects_once_resumed(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str, pool_mode: str
) -> None:
    pgb = bouncer(pool_mode)
    ensure(installed, pgb.conninfo(remote_db))
    first = remote_pid(installed)
    assert len(pgb.clients(remote_db)) == 1
    pgb.admin(on_database("KILL", remote_db))
    assert pgb.clients(remote_db) == [] and pgb.servers(remote_db) == []
    # New connections to a killed database wait for RESUME; the toolkit's connect waits too.
    resume = threading.Timer(0.5, pgb.admin, [on_database("RESUME", remote_db)])
    started = time.monotonic()
    resume.start()
    try:
        status = exec_(installed, "INSERT INTO items (note) VALUES ('after kill')")
    finally:
        resume.join()
    assert status == "INSERT 0 1"
    assert time.monotonic() - started >= 0.5
    assert remote_pid(installed) != first
    assert listing(installed)["reconnects"] == 1
    assert len(pgb.clients(remote_db)) == 1
    assert rows(remote, remote_db, "after kill") == 1


# -- restarts ------------------------------------------------------------------------------


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_restart_between_calls(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str, pool_mode: str
) -> None:
    pgb = bouncer(pool_mode)
    ensure(installed, pgb.conninfo(remote_db))
    first = remote_pid(installed)
    process = pgb.pid
    pgb.restart()
    assert pgb.pid != process
    assert exec_(installed, "INSERT INTO items (note) VALUES ('after restart')") == "INSERT 0 1"
    assert remote_pid(installed) != first
    assert listing(installed)["reconnects"] == 1
    assert rows(remote, remote_db, "after restart") == 1


def test_pgbouncer_down_for_a_while(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str
) -> None:
    pgb = bouncer("session")
    ensure(installed, pgb.conninfo(remote_db))
    pgb.stop()
    # Refused while it is down: attempts and time are bounded, then 08001 says what was tried.
    err = error_of(
        exec_,
        installed,
        "INSERT INTO items (note) VALUES ('refused')",
        max_attempts=3,
        retry_budget="1 second",
    )
    assert err.sqlstate == "08001"
    assert re.search(r"\([123] attempt\(s\) in ", err.diag.message_detail or "")
    assert f"port={pgb.port}" in (err.diag.message_hint or "")
    # A caller that expects restarts gives the attempts and the time to ride one out.
    back = threading.Timer(0.7, pgb.start)
    back.start()
    try:
        status = exec_(
            installed,
            "INSERT INTO items (note) VALUES ('back')",
            max_attempts=50,
            retry_budget="10 seconds",
        )
    finally:
        back.join()
    assert status == "INSERT 0 1"
    assert rows(remote, remote_db, "refused") == 0
    assert rows(remote, remote_db, "back") == 1


# -- a fault while the statement runs --------------------------------------------------------


def _fault(pgb: PgBouncer, fault: str, remote_db: str) -> None:
    if fault == "restart":
        pgb.restart()
    else:
        pgb.admin(on_database("KILL", remote_db))
        pgb.admin(on_database("RESUME", remote_db))


@pytest.mark.parametrize("kind", ["plain", "idempotent", "resolve"])
@pytest.mark.parametrize("fault", ["restart", "kill"])
@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_fault_while_a_statement_runs(
    installed: Conn,
    bouncer: Start,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    pool_mode: str,
    fault: str,
    kind: str,
) -> None:
    pgb = bouncer(pool_mode)
    target = pgb.conninfo(remote_db)
    note = f"{pool_mode} {fault} {kind}"
    statement = sql.SQL("INSERT INTO items (note) SELECT {} FROM {}").format(
        sql.Literal(note), sql.SQL(_SLOW)
    )
    options: dict[str, object] = {}
    if kind == "idempotent":
        # Idempotent even while the first attempt still runs: PgBouncer dropping the
        # connection does not stop the remote backend.
        remote.execute("CREATE UNIQUE INDEX items_note ON items (note)", remote_db)
        statement += sql.SQL(" ON CONFLICT (note) DO NOTHING")
        options["idempotent"] = True
    elif kind == "resolve":
        options["resolve"] = True

    def work(conn: Conn) -> str:
        ensure(conn, target)
        return exec_(conn, statement.as_string(conn), **options)

    outcome = in_background(local, local_db, work)
    wait_for(lambda: running(remote, remote_db, note), 15, "the statement to run")
    _fault(pgb, fault, remote_db)
    finish(outcome)
    # The first attempt's backend runs to its end: only then are the rows final.
    wait_for(lambda: not running(remote, remote_db, note), 15, "the remote statements to end")
    if kind == "plain":
        err = outcome.get("error")
        assert err is not None, outcome.get("result")
        assert err.sqlstate == "08007"
        assert "may or may not have been applied" in err.diag.message_primary
        assert "(SQLSTATE 08006)" in err.diag.message_detail
        # Rightly unknown: it was applied, after the caller's connection was gone.
        assert rows(remote, remote_db, note) == 1
    else:
        assert "error" not in outcome, outcome.get("error")
        expected = ("INSERT 0 0", "INSERT 0 1") if kind == "idempotent" else ("INSERT 0 1",)
        assert outcome["result"] in expected
        assert rows(remote, remote_db, note) == 1


def test_a_not_exists_guard_is_not_idempotent_across_a_restart(
    installed: Conn,
    bouncer: Start,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
) -> None:
    pgb = bouncer("session")
    target = pgb.conninfo(remote_db)
    # The retry's snapshot is taken before the first attempt commits, so both insert.
    statement = (
        "INSERT INTO items (note) SELECT 'guarded' FROM pg_sleep(2) "
        "WHERE NOT EXISTS (SELECT FROM items WHERE note = 'guarded')"
    )

    def work(conn: Conn) -> str:
        ensure(conn, target)
        return exec_(conn, statement, idempotent=True)

    outcome = in_background(local, local_db, work)
    wait_for(lambda: running(remote, remote_db, "'guarded'"), 15, "the statement to run")
    pgb.restart()
    assert finish(outcome).get("result") == "INSERT 0 1", outcome.get("error")
    wait_for(lambda: not running(remote, remote_db, "'guarded'"), 15, "the statements to end")
    assert rows(remote, remote_db, "guarded") == 2


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_lost_commit_reply_is_resolved_through_pgbouncer(
    installed: Conn,
    bouncer: Start,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    pool_mode: str,
) -> None:
    # PgBouncer passes no "options" startup parameter: the database carries the setting.
    remote.execute(
        sql.SQL("ALTER DATABASE {} SET synchronous_commit = on").format(sql.Identifier(remote_db))
    )
    pgb = bouncer(pool_mode)
    target = pgb.conninfo(remote_db)

    def work(conn: Conn) -> str:
        ensure(conn, target)
        return exec_(conn, "INSERT INTO items (note) VALUES ('resolved')", resolve=True)

    # COMMIT waits for a standby that never comes until its backend is terminated: it has
    # committed, and its reply is lost.
    with remote.settings(synchronous_standby_names="never_there"):
        outcome = in_background(local, local_db, work)
        kill_when(remote, remote_db, "wait_event = 'SyncRep'")
        finish(outcome)
    assert outcome.get("result") == "INSERT 0 1", outcome.get("error")
    assert rows(remote, remote_db, "resolved") == 1


# -- transaction pooling: session state does not follow the client ---------------------------


def test_transaction_pooling_loses_session_state(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str
) -> None:
    pgb = bouncer("transaction", server_idle_timeout=1)
    ensure(installed, pgb.conninfo(remote_db))
    first = remote_pid(installed)
    assert exec_(installed, "CREATE TEMPORARY TABLE scratch (x int)") == "CREATE TABLE"
    assert exec_(installed, "SET search_path = nowhere") == "SET"
    assert exec_(installed, "PREPARE ins AS INSERT INTO public.items (note) VALUES ($1)") == (
        "PREPARE"
    )
    # While PgBouncer keeps handing out the same server connection, it all seems to work.
    assert exec_(installed, "INSERT INTO scratch VALUES (1)") == "INSERT 0 1"
    assert exec_(installed, "EXECUTE ins('same server')") == "INSERT 0 1"
    assert query_value(installed, "SHOW search_path", "text") == "nowhere"
    # PgBouncer closes the idle server connection; the next call gets another one.
    wait_for(lambda: not pgb.servers(remote_db), 10, "PgBouncer to close the idle server")
    assert error_of(exec_, installed, "INSERT INTO scratch VALUES (2)").sqlstate == "42P01"
    assert error_of(exec_, installed, "EXECUTE ins('other server')").sqlstate == "26000"
    assert query_value(installed, "SHOW search_path", "text") == '"$user", public'
    assert remote_pid(installed) != first
    # Nothing the toolkit could see: its dblink connection never broke.
    assert listing(installed)["reconnects"] == 0
    assert rows(remote, remote_db, "same server") == 1
    assert rows(remote, remote_db, "other server") == 0


def test_transaction_pooling_shares_session_state_between_clients(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str
) -> None:
    pgb = bouncer("transaction", default_pool_size=1)
    target = pgb.conninfo(remote_db)
    ensure(installed, target, name="a")
    ensure(installed, target, name="b")
    assert remote_pid(installed, "a") == remote_pid(installed, "b")
    assert exec_(installed, "SET search_path = nowhere", name="a") == "SET"
    # Another client gets the state "a" left on the one server connection.
    err = error_of(exec_, installed, "INSERT INTO items (note) VALUES ('b')", "b")
    assert err.sqlstate == "42P01"
    # The toolkit's own statements name their schemas: probing every call and resolving the
    # commit work on that server connection all the same.
    status = exec_(
        installed,
        "INSERT INTO public.items (note) VALUES ('b qualified')",
        name="b",
        resolve=True,
        validation_window="0",
    )
    assert status == "INSERT 0 1"
    assert listing(installed, "b")["reconnects"] == 0
    assert rows(remote, remote_db, "b qualified") == 1


def test_transaction_pooling_probe_and_resolve_need_no_session(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str
) -> None:
    pgb = bouncer("transaction")
    ensure(installed, pgb.conninfo(remote_db))
    seen = set()
    for round_ in range(3):
        seen.add(remote_pid(installed))
        assert pgb.admin("RECONNECT") == []
        # Probed first (validation_window 0), then run in the toolkit's own remote
        # transaction: each may get another server connection, and neither cares.
        status = insert(installed, f"round {round_}", validation_window="0", resolve=True)
        assert status == "INSERT 0 1"
        assert listing(installed)["last_validation_ok"] is True
    assert len(seen) == 3
    assert listing(installed)["reconnects"] == 0
    assert [rows(remote, remote_db, f"round {n}") for n in range(3)] == [1, 1, 1]


def test_remote_tx_keeps_one_server_connection_in_transaction_mode(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str
) -> None:
    pgb = bouncer("transaction", default_pool_size=2)
    target = pgb.conninfo(remote_db)
    with installed.transaction():
        ensure(installed, target, scope="transaction", remote_tx=True)
        assert exec_(installed, "INSERT INTO items (note) VALUES ('tx 1')") == "INSERT 0 1"
        pinned = remote_pid(installed)
        assert exec_(installed, "INSERT INTO items (note) VALUES ('tx 2')") == "INSERT 0 1"
        assert remote_pid(installed) == pinned
        assert query_value(installed, "SHOW transaction_isolation", "text") == "repeatable read"
        # Linked to the dblink client for the whole remote transaction, not yet visible.
        assert [(r["remote_pid"], r["state"]) for r in pgb.servers(remote_db)] == [
            (pinned, "active")
        ]
        assert rows(remote, remote_db, "tx 1") == 0
    assert (rows(remote, remote_db, "tx 1"), rows(remote, remote_db, "tx 2")) == (1, 1)
    # Closed at commit: the server connection goes back to the pool.
    wait_for(
        lambda: (
            [(r["remote_pid"], r["state"]) for r in pgb.servers(remote_db)] == [(pinned, "idle")]
        ),
        10,
        "the server connection to be released",
    )

    with installed.transaction():
        ensure(installed, target, scope="transaction", remote_tx=True)
        assert exec_(installed, "INSERT INTO items (note) VALUES ('rolled back')") == "INSERT 0 1"
        raise psycopg.Rollback()
    # The next toolkit call closes the connection: PgBouncer drops the server it held.
    assert scalar(installed, "SELECT count(*) FROM dblink_safe.connections()") == 0
    wait_for(
        lambda: all(r["state"] == "idle" for r in pgb.servers(remote_db)),
        10,
        "no server connection left in the remote transaction",
    )
    assert rows(remote, remote_db, "rolled back") == 0


def test_remote_tx_backstop_stays_with_the_remote_transaction(
    installed: Conn, bouncer: Start, remote: Server, remote_db: str
) -> None:
    pgb = bouncer("transaction", default_pool_size=1)
    default = remote.execute("SHOW idle_in_transaction_session_timeout")[0][0]
    with installed.transaction():
        ensure(installed, pgb.conninfo(remote_db), scope="transaction", remote_tx=True)
        assert query_value(installed, "SHOW idle_in_transaction_session_timeout", "text") == "30s"
        assert exec_(installed, "INSERT INTO items (note) VALUES ('tx')") == "INSERT 0 1"
    assert rows(remote, remote_db, "tx") == 1
    # Any other client of the pool, e.g. an application connecting through PgBouncer.
    with pgb.connect(remote_db) as other:
        seen = scalar(other, "SHOW idle_in_transaction_session_timeout")
    assert seen == default


# -- two-phase commit through PgBouncer -----------------------------------------------------


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_two_phase_commit_through_pgbouncer(
    installed: Conn,
    bouncer: Start,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    pool_mode: str,
) -> None:
    """PREPARE on the server connection of the remote transaction, COMMIT PREPARED or
    ROLLBACK PREPARED on whichever one the pool hands out next: the GID is not session
    state. A killed session's GID is left to the resolver, which goes through the pool too."""
    pgb = bouncer(pool_mode, default_pool_size=2)
    target = pgb.conninfo(remote_db)
    installed.execute("CREATE TABLE parent (id int PRIMARY KEY)")
    installed.execute(
        "CREATE TABLE child (pid int REFERENCES parent DEFERRABLE INITIALLY DEFERRED)"
    )

    def unit(note: str, fail: bool = False) -> None:
        with installed.transaction():
            ensure(installed, target, scope="transaction", remote_tx=True, two_phase=True)
            insert(installed, note)
            if fail:
                installed.execute("INSERT INTO child VALUES (1)")

    prefix = "pgdblink_safe:%"
    prepared = f"SELECT count(*) FROM pg_prepared_xacts WHERE gid LIKE '{prefix}'"
    unit("2pc committed")
    assert remote.execute(prepared)[0][0] == 1
    installed.execute("CALL dblink_safe.finish_prepared()")
    assert error_of(unit, "2pc rolled back", fail=True).sqlstate == "23503"
    installed.execute("CALL dblink_safe.finish_prepared()")
    assert remote.execute(prepared)[0][0] == 0
    assert (
        rows(remote, remote_db, "2pc committed"),
        rows(remote, remote_db, "2pc rolled back"),
    ) == (
        1,
        0,
    )
    # A session that ends between its COMMIT and phase 2: the resolver commits its work.
    with local.connect(local_db) as other, other.transaction():
        ensure(other, target, scope="transaction", remote_tx=True, two_phase=True)
        insert(other, "2pc left")
    assert remote.execute(prepared)[0][0] == 1
    decided = installed.execute(
        "SELECT decision FROM dblink_safe.resolve_prepared('0 s') WHERE gid IS NOT NULL "
        "AND decision <> 'forgotten'"
    ).fetchall()
    assert decided == [("committed",)]
    assert remote.execute(prepared)[0][0] == 0
    assert rows(remote, remote_db, "2pc left") == 1
