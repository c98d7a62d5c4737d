"""Two-phase commit: every participant ends as the local transaction did, whatever fails when.

The unit of work writes a note to a local ledger and the same note to ``items`` on each
participant (databases of the remote cluster, so that a participant can restart without the
local server). After each scenario, and after ``resolve_prepared``, every participant must
hold the note exactly as often as the ledger does, and no toolkit GID may be left.
"""

import contextlib
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from calls import Conn, ensure, error_of, exec_, foreign_server, insert, rows, scalar, user_mapping
from faults import finish, in_background
from proxy import TcpProxy
from psycopg import sql
from report import record
from servers import LocalCluster, Server, wait_for

import pgdblink_safe

#: A local deferred trigger queued after the toolkit's, so that it fires after PREPARE and
#: before the local commit: it waits there, for an advisory lock the test holds, while the
#: test kills or crashes the session.
_PAUSE_LOCK = 4242
_PAUSE = f"""
CREATE TABLE ledger (note text NOT NULL);
CREATE TABLE pause_after_prepare (x int);
CREATE FUNCTION pause() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_advisory_xact_lock({_PAUSE_LOCK}); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER pause AFTER INSERT ON pause_after_prepare
DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION pause();
CREATE TABLE parent (id int PRIMARY KEY);
CREATE TABLE child (pid int REFERENCES parent DEFERRABLE INITIALLY DEFERRED);
"""


@pytest.fixture
def ledger(installed: Conn) -> Conn:
    installed.execute(_PAUSE)
    return installed


@pytest.fixture
def participants(remote: Server, remote_db: str) -> Iterator[list[str]]:
    """Two participant databases on the remote cluster, each with ``items``. A test that
    fails may leave prepared transactions, which would keep the databases from being
    dropped: they are rolled back first."""
    second = f"{remote_db}_b"
    remote.create_database(second)
    remote.execute(
        "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
        dbname=second,
    )
    yield [remote_db, second]
    for db in (remote_db, second):
        for (gid,) in remote.execute(
            sql.SQL("SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE database = {}").format(
                sql.Literal(db)
            ),
            db,
        ):
            remote.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)), db)
    remote.drop_database(second)


def toolkit_gids(remote: Server) -> list[str]:
    return [
        row[0]
        for row in remote.execute(
            "SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE gid LIKE 'pgdblink_safe:%'"
        )
    ]


def unit(
    conn: Conn,
    targets: list[str],
    note: str,
    then: Callable[[Conn], object] | None = None,
) -> str:
    """The unit of work: the note on every participant and in the local ledger, committed."""
    with conn.transaction():
        for i, target in enumerate(targets):
            ensure(conn, target, f"p{i}", scope="transaction", remote_tx=True, two_phase=True)
            insert(conn, note, f"p{i}")
        conn.execute("INSERT INTO ledger (note) VALUES (%s)", [note])
        if then is not None:
            then(conn)
    return "committed"


def resolve(local: Server, local_db: str, min_age: str = "0 s") -> list[tuple[Any, ...]]:
    with local.connect(local_db) as conn:
        return list(
            conn.execute(
                "SELECT * FROM dblink_safe.resolve_prepared(%s::interval)", [min_age]
            ).fetchall()
        )


def ledger_rows(local: Server, local_db: str, note: str) -> int:
    query = sql.SQL("SELECT count(*) FROM ledger WHERE note = {}").format(sql.Literal(note))
    return int(local.execute(query, local_db)[0][0])


def assert_atomic(local: Server, local_db: str, remote: Server, dbs: list[str], note: str) -> int:
    """Each participant holds the note as often as the ledger (0 or 1); returns that count."""
    expected = ledger_rows(local, local_db, note)
    assert expected in (0, 1)
    found = [rows(remote, db, note) for db in dbs]
    assert found == [expected] * len(dbs), (note, expected, found)
    return expected


def records(local: Server, local_db: str) -> int:
    return int(local.execute("SELECT count(*) FROM dblink_safe.prepared_xacts", local_db)[0][0])


def pause_after_prepare(conn: Conn) -> None:
    conn.execute("INSERT INTO pause_after_prepare VALUES (1)")


@contextlib.contextmanager
def pausing(local: Server, local_db: str) -> Iterator[None]:
    """Units of work that insert into pause_after_prepare wait at commit, after PREPARE,
    while this holds the lock (a crash of the local server releases it too)."""
    holder = local.connect(local_db)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", [_PAUSE_LOCK])
        yield
    finally:
        with contextlib.suppress(psycopg.Error):
            holder.close()


def paused_backend(local: Server, local_db: str) -> int:
    """The session waiting in pause(): its PREPAREs are done, its local commit is not."""
    query = sql.SQL(
        "SELECT pid FROM pg_stat_activity WHERE datname = {} "
        "AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
    ).format(sql.Literal(local_db))
    return int(wait_for(lambda: local.execute(query), 30, "the commit to pause")[0][0])


@contextlib.contextmanager
def paused_after_prepare(
    local: Server, local_db: str, targets: list[str], note: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """A unit of work in a session of its own, held between its PREPAREs and its local
    commit: yields that session's backend and the outcome, which is complete once the block
    (which must kill, crash or cancel it) is left."""
    with pausing(local, local_db):
        outcome = in_background(
            local, local_db, lambda c: unit(c, targets, note, pause_after_prepare)
        )
        yield paused_backend(local, local_db), outcome
        finish(outcome)


def terminate(server: Server, pid: int) -> None:
    server.execute(sql.SQL("SELECT pg_terminate_backend({})").format(sql.Literal(pid)))


def restartable(*servers: Server) -> None:
    for server in servers:
        if not isinstance(server, LocalCluster):
            pytest.skip(f"the {server.label} server cannot be restarted by this provider")


# --- the ordinary paths ------------------------------------------------------------------


def test_commit_prepares_every_participant_and_the_next_call_finishes_them(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    targets = [remote.conninfo(db) for db in participants]
    assert unit(ledger, targets, "commit") == "committed"
    # Phase 1 done, phase 2 not yet: the remote work is prepared, not visible, and recorded.
    assert len(toolkit_gids(remote)) == 2
    assert [rows(remote, db, "commit") for db in participants] == [0, 0]
    assert records(local, local_db) == 2
    # The session's next toolkit call finishes phase 2 and removes the records.
    assert ensure(ledger, targets[0], "other") == "connected"
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants, "commit") == 1
    assert records(local, local_db) == 0


def test_finish_prepared_right_after_commit(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    targets = [remote.conninfo(db) for db in participants]
    unit(ledger, targets, "finished")
    ledger.execute("CALL dblink_safe.finish_prepared()")
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants, "finished") == 1
    assert records(local, local_db) == 0
    # Nothing left to do: a second call changes nothing.
    ledger.execute("CALL dblink_safe.finish_prepared()")
    assert resolve(local, local_db) == []


def test_a_deferred_foreign_key_of_the_caller_fails_after_prepare(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    targets = [remote.conninfo(db) for db in participants]
    error = error_of(
        unit, ledger, targets, "fk", lambda c: c.execute("INSERT INTO child VALUES (1)")
    )
    assert error.sqlstate == "23503"
    # Prepared before the foreign key fired: rolled back by the session's next call.
    assert len(toolkit_gids(remote)) == 2
    ledger.execute("CALL dblink_safe.finish_prepared()")
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants, "fk") == 0
    assert records(local, local_db) == 0


def test_the_remote_refuses_to_prepare_a_failed_transaction(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    """A remote statement failed and the caller went on: PREPARE answers ROLLBACK, the local
    commit fails with 40000, and the other participant, already prepared, is rolled back."""
    targets = [remote.conninfo(db) for db in participants]

    def fail_on_second(conn: Conn) -> None:
        with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
            exec_(conn, "SELECT 1/0", "p1")

    error = error_of(unit, ledger, targets, "refused", fail_on_second)
    assert error.sqlstate == "40000", error
    assert "p1" in (error.diag.message_primary or "")
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants, "refused") == 0


def test_a_remote_without_prepared_transactions_is_refused_before_any_work(
    local: Server, local_db: str, ledger: Conn, remote: Server, remote_db: str
) -> None:
    restartable(remote)
    assert isinstance(remote, LocalCluster)
    (before,) = remote.execute("SHOW max_prepared_transactions")[0]
    remote.execute("ALTER SYSTEM SET max_prepared_transactions = 0")
    remote.restart()
    try:
        with ledger.transaction():
            error = error_of(
                ensure,
                ledger,
                remote.conninfo(remote_db),
                "p0",
                scope="transaction",
                remote_tx=True,
                two_phase=True,
            )
        assert error.sqlstate == "55000"
        assert "max_prepared_transactions" in (error.diag.message_detail or "")
        assert "p0" in (error.diag.message_primary or "")
    finally:
        remote.execute(
            sql.SQL("ALTER SYSTEM SET max_prepared_transactions = {}").format(sql.Literal(before))
        )
        remote.restart()


def test_use_after_prepare_is_refused(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    """SET CONSTRAINTS ALL IMMEDIATE fires the commit hook early; a statement sent on the
    connection after that would autocommit outside the unit of work."""
    target = remote.conninfo(participants[0])
    with ledger.transaction():
        ensure(ledger, target, "p0", scope="transaction", remote_tx=True, two_phase=True)
        insert(ledger, "early", "p0")
        ledger.execute("SET CONSTRAINTS ALL IMMEDIATE")
        assert len(toolkit_gids(remote)) == 1
        for call in (
            lambda: insert(ledger, "after prepare", "p0"),
            lambda: ensure(
                ledger, target, "p0", scope="transaction", remote_tx=True, two_phase=True
            ),
            lambda: scalar(ledger, "SELECT dblink_safe.safe_dblink_disconnect('p0')"),
        ):
            with pytest.raises(psycopg.Error) as info, ledger.transaction():
                call()
            error = info.value
            assert error.sqlstate == "25000", error
            assert "prepared" in (error.diag.message_primary or "")
        ledger.execute("INSERT INTO ledger (note) VALUES ('early')")
    ledger.execute("CALL dblink_safe.finish_prepared()")
    assert rows(remote, participants[0], "after prepare") == 0
    assert rows(remote, participants[0], "early") == 1
    assert toolkit_gids(remote) == []


def test_set_constraints_immediate_then_a_local_rollback(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    target = remote.conninfo(participants[0])
    with ledger.transaction():
        ensure(ledger, target, "p0", scope="transaction", remote_tx=True, two_phase=True)
        insert(ledger, "immediate", "p0")
        ledger.execute("SET CONSTRAINTS ALL IMMEDIATE")
        assert len(toolkit_gids(remote)) == 1
        raise psycopg.Rollback()
    # Rolled back locally, so the next call rolls the prepared work back.
    ensure(ledger, target, "other")
    assert toolkit_gids(remote) == []
    assert rows(remote, participants[0], "immediate") == 0


def test_set_constraints_immediate_in_a_savepoint_prepares_nothing_until_the_commit(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    """Prepared from a subtransaction, the commit record could be rolled back with it while
    the transaction commits: refused (0A000), and the commit itself prepares it later."""
    target = remote.conninfo(participants[0])
    with ledger.transaction():
        ensure(ledger, target, "p0", scope="transaction", remote_tx=True, two_phase=True)
        insert(ledger, "savepoint", "p0")
        with pytest.raises(psycopg.Error) as info, ledger.transaction():
            ledger.execute("SET CONSTRAINTS ALL IMMEDIATE")
        assert info.value.sqlstate == "0A000", info.value
        assert "subtransaction" in (info.value.diag.message_primary or "")
        assert toolkit_gids(remote) == []
        ledger.execute("INSERT INTO ledger (note) VALUES ('savepoint')")
    assert len(toolkit_gids(remote)) == 1
    ledger.execute("CALL dblink_safe.finish_prepared()")
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants[:1], "savepoint") == 1
    assert records(local, local_db) == 0


def test_a_read_only_transaction_is_refused(ledger: Conn, remote: Server, remote_db: str) -> None:
    with ledger.transaction():
        ledger.execute("SET TRANSACTION READ ONLY")
        error = error_of(
            ensure,
            ledger,
            remote.conninfo(remote_db),
            "a",
            scope="transaction",
            remote_tx=True,
            two_phase=True,
        )
    assert error.sqlstate == "25006", error


def test_arguments_and_targets_two_phase_refuses(
    ledger: Conn, remote: Server, remote_db: str
) -> None:
    with ledger.transaction():
        error = error_of(
            ensure, ledger, remote.conninfo(remote_db), "a", scope="transaction", two_phase=True
        )
    assert error.sqlstate == "22023"
    assert "remote_tx" in (error.diag.message_primary or "")
    secret = "pw'With\\Odd Chars"
    with ledger.transaction():
        error = error_of(
            ensure,
            ledger,
            remote.conninfo(remote_db, password=secret),
            "a",
            scope="transaction",
            remote_tx=True,
            two_phase=True,
        )
    assert error.sqlstate == "22023"
    assert "password" in (error.diag.message_primary or "")
    assert "Odd" not in str(error) and "Odd" not in (error.diag.message_hint or "")
    with ledger.transaction():
        ensure(ledger, remote.conninfo(remote_db), "a", scope="transaction", remote_tx=True)
        error = error_of(
            ensure,
            ledger,
            remote.conninfo(remote_db),
            "a",
            scope="transaction",
            remote_tx=True,
            two_phase=True,
        )
    assert error.sqlstate == "22023"


# --- crashes and faults ------------------------------------------------------------------


def test_local_backend_killed_after_prepare(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    targets = [remote.conninfo(db) for db in participants]
    with paused_after_prepare(local, local_db, targets, "killed") as (pid, outcome):
        assert len(toolkit_gids(remote)) == 2
        terminate(local, pid)
    assert "error" in outcome
    # No session is left to finish them: the resolver does, from the missing commit record.
    decided = resolve(local, local_db)
    assert sorted(row[3] for row in decided) == ["rolled back", "rolled back"], decided
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants, "killed") == 0


def test_resolve_leaves_young_and_running_transactions_alone(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    targets = [remote.conninfo(db) for db in participants[:1]]
    with paused_after_prepare(local, local_db, targets, "running") as (pid, outcome):
        try:
            assert [row[3] for row in resolve(local, local_db, "1 hour")] == ["too young"]
            assert [row[3] for row in resolve(local, local_db)] == ["in progress"]
            assert len(toolkit_gids(remote)) == 1
        finally:
            local.execute(sql.SQL("SELECT pg_cancel_backend({})").format(sql.Literal(pid)))
    assert outcome["error"].sqlstate == "57014"
    assert [row[3] for row in resolve(local, local_db)] == ["rolled back"]
    assert toolkit_gids(remote) == []


@pytest.mark.parametrize("when", ["after prepare", "after commit"])
def test_local_immediate_crash(
    when: str,
    local: Server,
    local_db: str,
    ledger: Conn,
    remote: Server,
    participants: list[str],
) -> None:
    """The local server stops with -m immediate after PREPARE (the local transaction is lost:
    roll back) or after the local COMMIT returned, before phase 2 (commit)."""
    restartable(local)
    assert isinstance(local, LocalCluster)
    targets = [remote.conninfo(db) for db in participants]
    note = f"crash {when}"
    if when == "after prepare":
        with paused_after_prepare(local, local_db, targets, note) as (_, outcome):
            local.stop_server("immediate")
        assert "error" in outcome
    else:
        with local.connect(local_db) as session:
            unit(session, targets, note)
            local.stop_server("immediate")
    local.start_server()
    assert len(toolkit_gids(remote)) == 2
    decided = sorted(row[3] for row in resolve(local, local_db))
    expected = "rolled back" if when == "after prepare" else "committed"
    assert decided[:2] == [expected, expected], decided
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants, note) == (
        0 if when == "after prepare" else 1
    )
    assert records(local, local_db) == 0


def test_participant_restart_between_phases(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    restartable(remote)
    assert isinstance(remote, LocalCluster)
    targets = [remote.conninfo(db) for db in participants]
    unit(ledger, targets, "restart")
    remote.stop_server("immediate")
    remote.start_server()
    # Prepared transactions survive the crash; the session's connections do not, so phase 2
    # fails with a warning and is left to the resolver.
    assert len(toolkit_gids(remote)) == 2
    ledger.execute("CALL dblink_safe.finish_prepared()")
    decided = resolve(local, local_db)
    assert sorted(row[3] for row in decided if row[1] is not None)[:2] == ["committed"] * 2
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants, "restart") == 1
    assert records(local, local_db) == 0


def test_network_cut_during_phase_2(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    with TcpProxy(remote.host, remote.port) as proxy:
        targets = [
            remote.conninfo(db, host=proxy.host, port=str(proxy.port)) for db in participants
        ]
        unit(ledger, targets, "cut")
        proxy.cut()
        proxy.refuse()
        ledger.execute("CALL dblink_safe.finish_prepared()")
        # Unreachable: the resolver reports it and leaves the GIDs as they are.
        decided = resolve(local, local_db)
        assert {row[3] for row in decided} == {"unreachable"}, decided
        assert len(toolkit_gids(remote)) == 2
        proxy.accept()
        decided = resolve(local, local_db)
        assert sorted(row[3] for row in decided if row[1] is not None)[:2] == ["committed"] * 2
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants, "cut") == 1


def test_a_prepare_whose_reply_is_lost(
    local: Server,
    local_db: str,
    ledger: Conn,
    remote: Server,
    remote_db: str,
    commit_reply_lost: str,
) -> None:
    """The remote wrote the PREPARE, then its backend was terminated while it waited for a
    synchronous standby: the local commit fails (08006), the GID stays prepared with no
    commit record, and the resolver rolls it back."""
    outcome = in_background(local, local_db, lambda c: unit(c, [commit_reply_lost], "reply lost"))
    query = sql.SQL(
        "SELECT pid FROM pg_stat_activity WHERE datname = {} AND wait_event = 'SyncRep'"
    ).format(sql.Literal(remote_db))
    pid = int(wait_for(lambda: remote.execute(query), 30, "the PREPARE to wait")[0][0])
    terminate(remote, pid)
    error = finish(outcome)["error"]
    assert error.sqlstate == "08006", error
    assert "resolve_prepared" in (error.diag.message_detail or "")
    assert len(toolkit_gids(remote)) == 1
    # The standby trouble over (the resolver's ROLLBACK PREPARED would wait for it too).
    remote.execute("ALTER SYSTEM RESET synchronous_standby_names")
    remote.execute("SELECT pg_reload_conf()")
    wait_for(
        lambda: remote.execute("SHOW synchronous_standby_names") == [("",)],
        10,
        "the reload",
    )
    assert [row[3] for row in resolve(local, local_db)] == ["rolled back"]
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, [remote_db], "reply lost") == 0


@pytest.mark.parametrize("fault", ["terminated", "immediate restart"])
def test_a_participant_lost_before_prepare_is_sent(
    fault: str, local: Server, local_db: str, ledger: Conn, remote: Server, remote_db: str
) -> None:
    """The participant's backend goes away between the last statement and the local COMMIT:
    PREPARE cannot be sent, the local commit fails with 08006, and nothing is left."""
    if fault == "immediate restart":
        restartable(remote)
    assert isinstance(remote, LocalCluster) or fault == "terminated"
    target = remote.conninfo(remote_db)

    def lose(conn: Conn) -> None:
        pid = int(
            scalar(conn, "SELECT p FROM dblink('tx:p0', 'SELECT pg_backend_pid()') AS t(p int)")
        )
        if fault == "terminated":
            terminate(remote, pid)
            wait_for(
                lambda: (
                    not remote.execute(
                        sql.SQL("SELECT 1 FROM pg_stat_activity WHERE pid = {}").format(
                            sql.Literal(pid)
                        )
                    )
                ),
                10,
                "the backend to end",
            )
        else:
            assert isinstance(remote, LocalCluster)
            # The test servers commit asynchronously: the table must survive the stop.
            remote.execute("CHECKPOINT")
            remote.stop_server("immediate")
            remote.start_server()

    error = error_of(unit, ledger, [target], f"lost {fault}", lose)
    assert error.sqlstate == "08006", error
    assert "p0" in (error.diag.message_primary or "")
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, [remote_db], f"lost {fault}") == 0
    assert records(local, local_db) == 0
    assert resolve(local, local_db) == []


def test_a_commit_prepared_whose_reply_is_lost(
    local: Server, local_db: str, ledger: Conn, remote: Server, remote_db: str
) -> None:
    """Phase 2's COMMIT PREPARED is written, then its backend is terminated while it waits
    for a synchronous standby: the session warns and carries on, the row is there, and the
    resolver only removes the commit record."""
    target = remote.conninfo(remote_db, options="-c synchronous_commit=on")
    unit(ledger, [target], "phase 2 lost")
    assert len(toolkit_gids(remote)) == 1
    with remote.settings(synchronous_standby_names="never_there"):
        wait_for(
            lambda: remote.execute("SHOW synchronous_standby_names") == [("never_there",)],
            10,
            "the reload",
        )
        warnings: list[str] = []
        ledger.add_notice_handler(lambda d: warnings.append(str(d.message_primary)))
        query = sql.SQL(
            "SELECT pid FROM pg_stat_activity WHERE datname = {} AND wait_event = 'SyncRep'"
        ).format(sql.Literal(remote_db))
        finishing = threading.Thread(
            target=lambda: ledger.execute("CALL dblink_safe.finish_prepared()")
        )
        finishing.start()
        pid = int(wait_for(lambda: remote.execute(query), 30, "COMMIT PREPARED to wait")[0][0])
        terminate(remote, pid)
        finishing.join(60)
        assert not finishing.is_alive()
    assert any("phase 2" in w for w in warnings), warnings
    assert toolkit_gids(remote) == []
    assert rows(remote, remote_db, "phase 2 lost") == 1
    assert records(local, local_db) == 1
    assert [row[3] for row in resolve(local, local_db)] == ["forgotten"]
    assert records(local, local_db) == 0


def test_resolve_twice_changes_nothing_the_second_time(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    targets = [remote.conninfo(db) for db in participants]
    with paused_after_prepare(local, local_db, targets, "twice") as (pid, _):
        terminate(local, pid)
    unit(ledger, targets, "twice committed")
    local.execute("SELECT 1")
    # The killed unit's two GIDs are rolled back, the committed one's two committed.
    first = resolve(local, local_db)
    assert sorted(row[3] for row in first if row[3] != "forgotten") == (
        ["committed"] * 2 + ["rolled back"] * 2
    ), first
    assert resolve(local, local_db) == []
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants, "twice") == 0
    assert assert_atomic(local, local_db, remote, participants, "twice committed") == 1
    assert records(local, local_db) == 0
    # The session's own phase 2 then finds them finished (42704) and carries on.
    ledger.execute("CALL dblink_safe.finish_prepared()")


def test_resolvers_racing_the_sessions_that_prepared(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    """Sessions commit and finish phase 2 while two resolvers with min_age 0 run in a loop:
    whoever gets to a GID first finishes it, and nothing ends unlike its local transaction."""
    targets = [remote.conninfo(db) for db in participants]
    stop = threading.Event()
    refused: list[str] = []

    def resolver() -> None:
        with local.connect(local_db) as conn:
            while not stop.is_set():
                try:
                    conn.execute("SELECT * FROM dblink_safe.resolve_prepared('0 s')").fetchall()
                except psycopg.Error as exc:
                    refused.append(str(exc.sqlstate))

    def sessions(conn: Conn) -> int:
        for n in range(25):
            then = (lambda c: c.execute("INSERT INTO child VALUES (1)")) if n % 3 == 0 else None
            try:
                unit(conn, targets, f"race {n}", then)
            except psycopg.Error as exc:
                assert exc.sqlstate == "23503", exc
        conn.execute("CALL dblink_safe.finish_prepared()")
        return 25

    threads = [threading.Thread(target=resolver) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        outcome = finish(in_background(local, local_db, sessions))
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
    assert outcome.get("result") == 25, outcome
    assert set(refused) <= {"55P03"}, refused
    resolve(local, local_db)
    assert toolkit_gids(remote) == []
    committed = sum(
        assert_atomic(local, local_db, remote, participants, f"race {n}") for n in range(25)
    )
    assert committed == 16
    assert records(local, local_db) == 0


def test_a_target_that_leads_elsewhere_keeps_its_commit_records(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    """A foreign server re-pointed to another database between phases: the GID is not there,
    which says nothing of it. Forgetting its commit record would make the resolver roll back
    a committed transaction once the server points back."""
    foreign_server(ledger, "moving", remote, participants[0])
    user_mapping(ledger, "moving", None, user=remote.user)
    unit(ledger, ["moving"], "moved")
    with local.connect(local_db) as admin:
        admin.execute(
            sql.SQL("ALTER SERVER moving OPTIONS (SET dbname {})").format(
                sql.Literal(participants[1])
            )
        )
        decided = resolve(local, local_db)
        assert [(row[3], row[4]) for row in decided] == [("elsewhere", "55000")], decided
        assert participants[0] in decided[0][5] and participants[1] in decided[0][5]
        assert records(local, local_db) == 1
        admin.execute(
            sql.SQL("ALTER SERVER moving OPTIONS (SET dbname {})").format(
                sql.Literal(participants[0])
            )
        )
    decided = resolve(local, local_db)
    assert [row[3] for row in decided if row[3] != "forgotten"] == ["committed"], decided
    assert toolkit_gids(remote) == []
    assert assert_atomic(local, local_db, remote, participants[:1], "moved") == 1
    assert records(local, local_db) == 0


# --- roles -------------------------------------------------------------------------------


def test_a_role_through_a_foreign_server_and_what_it_may_do(
    local: Server, local_db: str, ledger: Conn, remote: Server, remote_db: str
) -> None:
    """An ordinary role reaches the participant through a foreign server whose user mapping
    holds a scram password. It records the target once, commits, and finishes phase 2; it
    cannot plant a commit record, nor run the resolver, which sees only its own records."""
    restartable(remote)
    assert isinstance(remote, LocalCluster)
    role = f"app2pc_{os.getpid()}"
    secret = "Pw 2pc'x\\y"
    ident = sql.Identifier(role)
    remote.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(ident, sql.Literal(secret)))
    remote.execute(sql.SQL("GRANT INSERT, SELECT ON items TO {}").format(ident), remote_db)
    hba = remote.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + original)
    remote.execute("SELECT pg_catalog.pg_reload_conf()")
    try:
        ledger.execute(sql.SQL("CREATE ROLE {} LOGIN").format(ident))
        pgdblink_safe.install(ledger, grant=[role])
        foreign_server(ledger, "participant", remote, remote_db)
        user_mapping(ledger, "participant", role, user=role, password=secret)
        user_mapping(ledger, "participant", None, user=remote.user)
        ledger.execute(sql.SQL("GRANT USAGE ON FOREIGN SERVER participant TO {}").format(ident))
        ledger.execute(sql.SQL("GRANT INSERT, SELECT ON ledger, child TO {}").format(ident))
        with local.connect(local_db, user=role) as app:
            # The first use records the target in a transaction of its own, which this role
            # cannot open without a password: the error says what to run instead.
            error = error_of(unit, app, ["participant"], "as app")
            assert error.sqlstate == "55000", error
            assert "two_phase_targets" in (error.diag.message_hint or "")
            app.execute("INSERT INTO dblink_safe.two_phase_targets (target) VALUES ('participant')")
            unit(app, ["participant"], "as app")
            # A commit record for another transaction cannot be planted.
            error = error_of(
                app.execute,
                "INSERT INTO dblink_safe.prepared_xacts "
                "(gid, target, conn_name, participant, local_xid) "
                "VALUES ('x', 'participant', 'x', 'x', '1')",
            )
            assert error.sqlstate == "42501"
            error = error_of(app.execute, "SELECT * FROM dblink_safe.resolve_prepared()")
            assert error.sqlstate == "42501"
            assert secret not in str(error)
            app.execute("CALL dblink_safe.finish_prepared()")
        assert rows(remote, remote_db, "as app") == 1
        assert toolkit_gids(remote) == []
        # The resolver, as the owner, finishes what the role left behind.
        with local.connect(local_db, user=role) as app:
            unit(app, ["participant"], "left")
        assert [row[3] for row in resolve(local, local_db)][:1] == ["committed"]
        assert rows(remote, remote_db, "left") == 1
        assert toolkit_gids(remote) == []
    finally:
        hba.write_text(original)
        remote.execute("SELECT pg_catalog.pg_reload_conf()")
        ledger.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        ledger.execute(sql.SQL("DROP ROLE {}").format(ident))
        remote.execute(sql.SQL("DROP OWNED BY {}").format(ident), remote_db)
        remote.execute(sql.SQL("DROP ROLE {}").format(ident))


# --- the randomized crash-point run --------------------------------------------------------

#: Where the fault strikes; each point is tried this many times, in a random order.
_POINTS = (
    "commit",
    "deferred fk",
    "remote failure",
    "backend killed after prepare",
    "immediate crash after prepare",
    "immediate crash after commit",
    "participant restart between phases",
    "network cut during phase 2",
    "resolver before phase 2",
    "participant crash during prepare",
)
_RUNS_PER_POINT = 25

#: On each participant, a deferred trigger that holds the PREPARE of a unit whose note starts
#: with 'hold ' until the test lets go of an advisory lock (deferred triggers fire at PREPARE).
_HOLD_LOCK = 4343
_HOLD = f"""
CREATE FUNCTION hold() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN PERFORM pg_advisory_xact_lock({_HOLD_LOCK}); RETURN NULL; END $$;
CREATE CONSTRAINT TRIGGER hold AFTER INSERT ON items DEFERRABLE INITIALLY DEFERRED
FOR EACH ROW WHEN (NEW.note LIKE 'hold %') EXECUTE FUNCTION hold();
"""


def test_randomized_crash_points(
    local: Server, local_db: str, ledger: Conn, remote: Server, participants: list[str]
) -> None:
    """At least 200 units of work, each with a fault at a random point; after each, once the
    resolver has run, every participant matches the local outcome and no GID is left."""
    restartable(local, remote)
    assert isinstance(local, LocalCluster) and isinstance(remote, LocalCluster)
    for db in participants:
        remote.execute(_HOLD, db)
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    plan = [point for point in _POINTS for _ in range(_RUNS_PER_POINT)]
    rng.shuffle(plan)
    runs = len(plan)
    seen: dict[str, int] = dict.fromkeys(_POINTS, 0)
    outcomes = {0: 0, 1: 0}
    started = time.monotonic()
    with TcpProxy(remote.host, remote.port) as proxy:
        through = [
            remote.conninfo(db, host=proxy.host, port=str(proxy.port)) for db in participants
        ]
        for n, point in enumerate(plan):
            seen[point] += 1
            count = rng.choice([1, 2])
            targets = through[:count]
            note = f"hold {n}" if point == "participant crash during prepare" else f"run {n}"
            _run_point(point, local, local_db, remote, participants, proxy, targets, note)
            proxy.accept()
            left = resolve(local, local_db)
            assert all(row[3] not in ("failed", "unknown") for row in left), (seed, n, left)
            assert toolkit_gids(remote) == [], (seed, n, point, left)
            outcomes[assert_atomic(local, local_db, remote, participants[:count], note)] += 1
            assert records(local, local_db) == 0, (seed, n, point)
    elapsed = time.monotonic() - started
    record(
        f"two-phase crash points: {runs} runs in {elapsed:.0f} s (seed {seed}): "
        + ", ".join(f"{point} {count}" for point, count in seen.items())
        + f"; committed {outcomes[1]}, rolled back {outcomes[0]}; "
        "participants unlike the local outcome 0, GIDs left after resolve 0"
    )
    assert outcomes[1] > 0 and outcomes[0] > 0


def _run_point(
    point: str,
    local: LocalCluster,
    local_db: str,
    remote: LocalCluster,
    participants: list[str],
    proxy: TcpProxy,
    targets: list[str],
    note: str,
) -> None:
    if point == "participant crash during prepare":
        # The participants stop while their PREPAREs wait: the local commit fails, and
        # whatever the remote wrote of them before the stop decides nothing.
        holders = [remote.connect(db) for db in participants]
        try:
            for holder in holders:
                holder.execute("SELECT pg_advisory_lock(%s)", [_HOLD_LOCK])
            outcome = in_background(local, local_db, lambda c: unit(c, targets, note))
            query = sql.SQL(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'advisory' "
                "AND query LIKE 'PREPARE TRANSACTION%'"
            )
            wait_for(lambda: remote.execute(query), 30, "a PREPARE to wait")
            remote.stop_server("immediate")
            error = finish(outcome)["error"]
            assert error.sqlstate in ("08006", "57014"), error
        finally:
            for holder in holders:
                with contextlib.suppress(psycopg.Error):
                    holder.close()
        remote.start_server()
        return
    if point in ("backend killed after prepare", "immediate crash after prepare"):
        with paused_after_prepare(local, local_db, targets, note) as (pid, _):
            if point == "backend killed after prepare":
                terminate(local, pid)
            else:
                local.stop_server("immediate")
        if point == "immediate crash after prepare":
            local.start_server()
        return
    with local.connect(local_db) as session:
        if point == "deferred fk":
            error = error_of(
                unit, session, targets, note, lambda c: c.execute("INSERT INTO child VALUES (1)")
            )
            assert error.sqlstate == "23503"
            session.execute("CALL dblink_safe.finish_prepared()")
        elif point == "remote failure":

            def fail_last(conn: Conn) -> None:
                with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
                    exec_(conn, "SELECT 1/0", f"p{len(targets) - 1}")

            assert error_of(unit, session, targets, note, fail_last).sqlstate == "40000"
        else:
            unit(session, targets, note)
            if point == "commit":
                session.execute("CALL dblink_safe.finish_prepared()")
            elif point == "immediate crash after commit":
                local.stop_server("immediate")
                local.start_server()
            elif point == "participant restart between phases":
                remote.stop_server("immediate")
                remote.start_server()
                session.execute("CALL dblink_safe.finish_prepared()")
            elif point == "network cut during phase 2":
                proxy.cut()
                proxy.refuse()
                session.execute("CALL dblink_safe.finish_prepared()")
            elif point == "resolver before phase 2":
                resolve(local, local_db)
                session.execute("CALL dblink_safe.finish_prepared()")
