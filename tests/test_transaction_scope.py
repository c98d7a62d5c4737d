"""Connections, and optionally remote work, that follow the local transaction."""

import time

import psycopg
import pytest
from calls import Conn, ensure, error_of, exec_, insert, query_value, rows, scalar
from faults import finish, in_background, kill_when
from psycopg import sql
from servers import LocalCluster, Server, wait_for

import pgdblink_safe


def ensure_tx(conn: Conn, target: str, remote_tx: bool = False, name: str = "r") -> str:
    """``ensure`` with ``scope => 'transaction'``."""
    return ensure(conn, target, name, scope="transaction", remote_tx=remote_tx)


def links(conn: Conn) -> list[str]:
    return list(scalar(conn, "SELECT public.dblink_get_connections()") or [])


def remote_sessions(remote: Server, remote_db: str) -> list[tuple[int, str]]:
    query = sql.SQL(
        "SELECT pid, state FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid()"
    ).format(sql.Literal(remote_db))
    return [(int(pid), str(state)) for pid, state in remote.execute(query)]


def wait_gone(remote: Server, remote_db: str, timeout: float = 15) -> None:
    wait_for(lambda: not remote_sessions(remote, remote_db), timeout, "remote sessions to end")


def test_commit_closes_the_connection(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    with installed.transaction():
        assert ensure_tx(installed, target) == "connected"
        assert ensure_tx(installed, target) == "reused"
        assert insert(installed, "c") == "INSERT 0 1"
        assert links(installed) == ["tx:r"]
        listed = installed.execute(
            "SELECT conn_name, scope, is_open, uses FROM dblink_safe.connections()"
        ).fetchall()
        assert listed == [("r", "transaction", True, 1)]
    assert links(installed) == []
    assert scalar(installed, "SELECT count(*) FROM dblink_safe.connections()") == 0
    wait_gone(remote, remote_db)
    assert rows(remote, remote_db, "c") == 1
    # The name is free again: outside a transaction scope it is unknown.
    with pytest.raises(psycopg.Error) as info:
        insert(installed, "after")
    assert info.value.sqlstate == "08003"


def test_rollback_never_reuses_and_the_next_call_closes_it(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    with pytest.raises(psycopg.errors.RaiseException), installed.transaction():
        ensure_tx(installed, target)
        assert insert(installed, "rb") == "INSERT 0 1"
        installed.execute("DO $$BEGIN RAISE EXCEPTION 'local failure'; END$$")
    # dblink's list ignores the rollback; the toolkit's mapping does not.
    assert links(installed) == ["tx:r"]
    with pytest.raises(psycopg.Error) as info:
        insert(installed, "reused?")
    assert info.value.sqlstate == "08003"
    assert links(installed) == []
    wait_gone(remote, remote_db)
    # Without remote_tx the remote statement was autocommitted: one row, never two.
    assert rows(remote, remote_db, "rb") == 1
    assert rows(remote, remote_db, "reused?") == 0


def test_the_reserved_dblink_name_cannot_be_used_directly(installed: Conn, target: str) -> None:
    with installed.transaction():
        ensure_tx(installed, target)
        err = error_of(exec_, installed, "SET x.y = 1", "tx:r")
        assert err.sqlstate == "22023"
        assert "reserved" in str(err)


def test_scope_clashes_and_bad_values(installed: Conn, target: str) -> None:
    def err(scope: str | None, remote_tx: bool | None) -> psycopg.Error:
        return error_of(ensure, installed, target, scope=scope, remote_tx=remote_tx)

    assert err("bogus", False).sqlstate == "22023"
    assert err(None, False).sqlstate == "22004"
    assert err("transaction", None).sqlstate == "22004"
    assert err("session", True).sqlstate == "22023"
    long_name = "n" * 61
    e = error_of(ensure, installed, target, long_name, scope="transaction")
    assert e.sqlstate == "22023" and "60 bytes" in str(e)
    # A session connection and a transaction-scoped one never share a name.
    ensure(installed, target)
    assert err("transaction", False).sqlstate == "22023"
    scalar(installed, "SELECT dblink_safe.safe_dblink_disconnect('r')")
    with installed.transaction():
        ensure_tx(installed, target)
        e = error_of(ensure, installed, target)
        assert e.sqlstate == "22023" and "scope transaction" in str(e)
    # The error aborted that transaction: its connection goes at the next toolkit call.
    assert links(installed) == ["tx:r"]
    assert scalar(installed, "SELECT count(*) FROM dblink_safe.connections()") == 0
    assert links(installed) == []


def test_exception_block_that_rolls_back_the_ensure(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    installed.execute("CREATE TABLE outcome (what text)")
    block = sql.SQL(
        """
        DO $do$
        BEGIN
            BEGIN
                PERFORM dblink_safe.ensure_dblink_conn('r', {}, scope => 'transaction');
                PERFORM dblink_safe.safe_dblink_exec('r',
                    'INSERT INTO items (note) VALUES (''sub'')');
                RAISE EXCEPTION 'undo the subtransaction';
            EXCEPTION WHEN raise_exception THEN
                INSERT INTO outcome VALUES ('caught');
            END;
            -- The ensure was rolled back with the subtransaction: the name is unknown here.
            BEGIN
                PERFORM dblink_safe.safe_dblink_exec('r', 'SELECT 1');
            EXCEPTION WHEN connection_does_not_exist THEN
                INSERT INTO outcome VALUES ('08003 after');
            END;
            INSERT INTO outcome SELECT count(*)::text FROM pg_catalog.unnest(
                COALESCE(public.dblink_get_connections(), '{{}}'));
        END
        $do$
        """
    )
    installed.execute(block.format(sql.Literal(target)))
    assert [r[0] for r in installed.execute("SELECT what FROM outcome").fetchall()] == [
        "caught",
        "08003 after",
        "0",
    ]
    wait_gone(remote, remote_db)
    assert rows(remote, remote_db, "sub") == 1


def test_exception_block_inside_a_transaction_keeps_the_connection(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    with installed.transaction():
        ensure_tx(installed, target)
        installed.execute(
            """
            DO $do$
            BEGIN
                BEGIN
                    PERFORM dblink_safe.safe_dblink_exec('r', 'SELECT 1/0');
                EXCEPTION WHEN division_by_zero THEN
                    NULL;
                END;
                PERFORM dblink_safe.safe_dblink_exec('r',
                    'INSERT INTO items (note) VALUES (''kept'')');
            END
            $do$
            """
        )
        assert links(installed) == ["tx:r"]
    assert links(installed) == []
    assert rows(remote, remote_db, "kept") == 1


def test_procedure_that_commits_in_a_loop(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    installed.execute("CREATE TABLE pids (pid integer, open_links integer)")
    installed.execute(
        """
        CREATE PROCEDURE batches(target text) LANGUAGE plpgsql AS $$
        BEGIN
            FOR i IN 1..3 LOOP
                PERFORM dblink_safe.ensure_dblink_conn('r', target, scope => 'transaction');
                PERFORM dblink_safe.safe_dblink_exec('r',
                    format('INSERT INTO items (note) VALUES (%L)', 'batch'));
                INSERT INTO pids
                SELECT p, pg_catalog.cardinality(public.dblink_get_connections())
                FROM dblink_safe.safe_dblink_query('r', 'SELECT pg_backend_pid()', NULL::int) p;
                COMMIT;
            END LOOP;
        END $$
        """
    )
    installed.execute("CALL batches(%s)", [target])
    recorded = installed.execute("SELECT pid, open_links FROM pids").fetchall()
    assert len(recorded) == 3
    assert len({pid for pid, _ in recorded}) == 3  # a new connection in each transaction
    assert {n for _, n in recorded} == {1}  # never more than the current one open
    assert links(installed) == []
    assert rows(remote, remote_db, "batch") == 3


def test_procedure_that_rolls_back_some_iterations(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    installed.execute(
        """
        CREATE PROCEDURE some_batches(target text) LANGUAGE plpgsql AS $$
        BEGIN
            FOR i IN 1..3 LOOP
                PERFORM dblink_safe.ensure_dblink_conn('r', target,
                    scope => 'transaction', remote_tx => true);
                PERFORM dblink_safe.safe_dblink_exec('r',
                    format('INSERT INTO items (note) VALUES (%L)', 'iteration ' || i));
                IF i = 2 THEN
                    ROLLBACK;
                ELSE
                    COMMIT;
                END IF;
            END LOOP;
        END $$
        """
    )
    installed.execute("CALL some_batches(%s)", [target])
    assert links(installed) == []
    wait_gone(remote, remote_db)
    assert rows(remote, remote_db, "iteration 1") == 1
    assert rows(remote, remote_db, "iteration 2") == 0
    assert rows(remote, remote_db, "iteration 3") == 1


def test_functions_calling_functions_share_the_transaction(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    installed.execute(
        "CREATE FUNCTION open_it(t text) RETURNS text LANGUAGE sql AS "
        "$$SELECT dblink_safe.ensure_dblink_conn('r', t, scope => 'transaction')$$"
    )
    installed.execute(
        "CREATE FUNCTION use_it() RETURNS text LANGUAGE plpgsql AS $$BEGIN "
        "RETURN dblink_safe.safe_dblink_exec('r', 'INSERT INTO items (note) VALUES (''f'')'); "
        "END$$"
    )
    with installed.transaction():
        assert scalar(installed, "SELECT open_it(%s)", target) == "connected"
        assert scalar(installed, "SELECT use_it()") == "INSERT 0 1"
        assert scalar(installed, "SELECT use_it()") == "INSERT 0 1"
    assert links(installed) == []
    assert rows(remote, remote_db, "f") == 2


def test_read_only_transactions(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    # No commit hook yet in this session, and a read-only transaction cannot create one:
    # the connection is closed by the next toolkit call instead, and remote_tx is refused.
    installed.execute("BEGIN READ ONLY")
    assert ensure_tx(installed, target) == "connected"
    assert insert(installed, "ro") == "INSERT 0 1"
    with pytest.raises(psycopg.Error) as info:
        ensure_tx(installed, target, remote_tx=True, name="w")
    assert info.value.sqlstate == "25006"
    installed.execute("ROLLBACK")
    installed.execute("BEGIN READ ONLY")
    ensure_tx(installed, target)
    installed.execute("COMMIT")
    assert links(installed) == ["tx:r"]
    assert scalar(installed, "SELECT count(*) FROM dblink_safe.connections()") == 0
    assert links(installed) == []
    # Once a read-write transaction created the hook, read-only ones close at commit too,
    # and may use remote_tx (the remote transaction is read-only as well).
    with installed.transaction():
        ensure_tx(installed, target)
    installed.execute("BEGIN READ ONLY")
    ensure_tx(installed, target, remote_tx=True)
    with pytest.raises(psycopg.Error) as info:
        insert(installed, "ro-remote")
    assert info.value.sqlstate == "25006"  # the remote transaction is read-only
    installed.execute("ROLLBACK")
    installed.execute("BEGIN READ ONLY")
    ensure_tx(installed, target, remote_tx=True)
    assert (
        scalar(
            installed,
            "SELECT count(*) FROM dblink_safe.safe_dblink_query('r', 'SELECT 1', NULL::int)",
        )
        == 1
    )
    installed.execute("COMMIT")
    assert links(installed) == []
    assert rows(remote, remote_db, "ro") == 1
    assert rows(remote, remote_db, "ro-remote") == 0


def test_two_sessions_at_once(
    installed: Conn, local: Server, local_db: str, target: str, remote: Server, remote_db: str
) -> None:
    with local.connect(local_db) as other:
        with installed.transaction(), other.transaction():
            ensure_tx(installed, target)
            ensure_tx(other, target, remote_tx=True)
            insert(installed, "one")
            insert(other, "two")
            assert links(installed) == ["tx:r"] and links(other) == ["tx:r"]
            assert len(remote_sessions(remote, remote_db)) == 2
            with pytest.raises(psycopg.errors.RaiseException), other.transaction():
                other.execute("DO $$BEGIN RAISE EXCEPTION 'inner'; END$$")
        assert links(installed) == [] and links(other) == []
    wait_gone(remote, remote_db)
    assert rows(remote, remote_db, "one") == 1
    assert rows(remote, remote_db, "two") == 1


def test_remote_tx_commits_with_the_local_transaction(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    installed.execute("CREATE TABLE local_rows (note text)")
    with installed.transaction():
        assert ensure_tx(installed, target, remote_tx=True) == "connected"
        insert(installed, "rt")
        insert(installed, "rt")
        installed.execute("INSERT INTO local_rows VALUES ('rt')")
        # Not visible remotely before the local commit.
        assert rows(remote, remote_db, "rt") == 0
        # The session that counted the rows may linger a moment after it closed.
        wait_for(
            lambda: (
                {state for _, state in remote_sessions(remote, remote_db)}
                == {"idle in transaction"}
            ),
            10,
            "the remote transaction to be the only remote session",
        )
        listed = installed.execute(
            "SELECT scope, remote_transaction FROM dblink_safe.connections()"
        ).fetchall()
        assert listed == [("transaction", True)]
    assert rows(remote, remote_db, "rt") == 2
    assert scalar(installed, "SELECT count(*) FROM local_rows") == 1
    assert links(installed) == []


def test_remote_tx_isolation_mirrors_the_local_one(installed: Conn, target: str) -> None:
    for local_level, remote_level in (
        ("READ COMMITTED", "repeatable read"),
        ("REPEATABLE READ", "repeatable read"),
        ("SERIALIZABLE", "serializable"),
    ):
        installed.execute(sql.SQL("BEGIN ISOLATION LEVEL {}").format(sql.SQL(local_level)))
        ensure_tx(installed, target, remote_tx=True)
        seen = query_value(installed, "SHOW transaction_isolation", "text")
        installed.execute("COMMIT")
        assert seen == remote_level


def test_remote_tx_rolls_back_with_the_local_transaction(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    with pytest.raises(psycopg.errors.RaiseException), installed.transaction():
        ensure_tx(installed, target, remote_tx=True)
        insert(installed, "gone")
        installed.execute("DO $$BEGIN RAISE EXCEPTION 'local failure'; END$$")
    rolled_back = time.monotonic()
    # Open but uncommitted until the next toolkit call in this session.
    assert {state for _, state in remote_sessions(remote, remote_db)} == {"idle in transaction"}
    assert scalar(installed, "SELECT count(*) FROM dblink_safe.connections()") == 0
    wait_gone(remote, remote_db)
    window = time.monotonic() - rolled_back
    print(f"rolled-back remote work stayed open for {window * 1000:.1f} ms (next toolkit call)")
    assert rows(remote, remote_db, "gone") == 0


def test_remote_tx_backstop_ends_an_abandoned_remote_transaction(
    conn: Conn, target: str, remote: Server, remote_db: str
) -> None:
    pgdblink_safe.install(conn, pgdblink_safe.Settings(remote_tx_idle_timeout_ms=1000))
    with pytest.raises(psycopg.errors.RaiseException), conn.transaction():
        ensure_tx(conn, target, remote_tx=True)
        insert(conn, "abandoned")
        conn.execute("DO $$BEGIN RAISE EXCEPTION 'local failure'; END$$")
    rolled_back = time.monotonic()
    # No further toolkit call: the remote server's own timeout ends it.
    wait_gone(remote, remote_db, timeout=30)
    window = time.monotonic() - rolled_back
    print(f"rolled-back remote work stayed open for {window * 1000:.0f} ms (1 s backstop)")
    assert rows(remote, remote_db, "abandoned") == 0
    assert window >= 0.5  # it was the backstop, not something else, that ended it


def test_remote_commit_refused_fails_the_local_commit(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    remote.execute(
        "ALTER TABLE items ADD CONSTRAINT one_note UNIQUE (note) DEFERRABLE INITIALLY DEFERRED",
        remote_db,
    )
    installed.execute("CREATE TABLE local_rows (note text)")
    with pytest.raises(psycopg.Error) as info, installed.transaction():
        ensure_tx(installed, target, remote_tx=True)
        insert(installed, "dup")
        insert(installed, "dup")  # allowed until the remote commit checks it
        installed.execute("INSERT INTO local_rows VALUES ('dup')")
    assert info.value.sqlstate == "23505"
    assert "did not commit" in str(info.value)
    assert scalar(installed, "SELECT count(*) FROM local_rows") == 0
    assert rows(remote, remote_db, "dup") == 0
    assert links(installed) == []


def test_remote_tx_lost_commit_reply_is_resolved(
    installed: Conn,
    commit_reply_lost: str,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
) -> None:
    def work(conn: Conn) -> int:
        conn.execute("CREATE TABLE IF NOT EXISTS local_rows (note text)")
        with conn.transaction():
            ensure_tx(conn, commit_reply_lost, remote_tx=True)
            insert(conn, "resolved")
            conn.execute("INSERT INTO local_rows VALUES ('resolved')")
        return int(scalar(conn, "SELECT count(*) FROM local_rows"))

    outcome = in_background(local, local_db, work)
    kill_when(remote, remote_db, "wait_event = 'SyncRep'")
    assert finish(outcome).get("result") == 1, outcome.get("error")
    assert rows(remote, remote_db, "resolved") == 1


def test_remote_tx_connection_lost_before_commit_fails_the_local_commit(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    installed.execute("CREATE TABLE local_rows (note text)")
    with pytest.raises(psycopg.Error) as info, installed.transaction():
        ensure_tx(installed, target, remote_tx=True)
        insert(installed, "lost")
        installed.execute("INSERT INTO local_rows VALUES ('lost')")
        remote.terminate_backends(remote_db)
    assert info.value.sqlstate == "08006"
    assert "lost" in str(info.value)
    assert scalar(installed, "SELECT count(*) FROM local_rows") == 0
    assert rows(remote, remote_db, "lost") == 0
    assert links(installed) == []


def test_on_a_hot_standby_connections_close_at_the_next_call(
    installed: Conn, local: Server, local_db: str, target: str, remote: Server, remote_db: str
) -> None:
    if not isinstance(local, LocalCluster):
        pytest.skip(f"needs a local server this process can copy; {local.label} is not one")
    standby = LocalCluster(binaries=local.binaries, label="standby")
    try:
        standby.start_standby(local)
        with standby.connect(local_db) as conn:
            assert scalar(conn, "SELECT pg_is_in_recovery()") is True
            # Session scope works as anywhere else.
            assert ensure(conn, target, "s") == "connected"
            assert insert(conn, "from standby", name="s") == "INSERT 0 1"
            # Transaction scope without a commit hook: closed by the next toolkit call.
            with conn.transaction():
                assert ensure_tx(conn, target) == "connected"
                assert insert(conn, "from standby") == "INSERT 0 1"
            assert sorted(links(conn)) == ["s", "tx:r"]
            scopes = conn.execute(
                "SELECT conn_name, scope FROM dblink_safe.connections()"
            ).fetchall()
            assert scopes == [("s", "session")]
            assert links(conn) == ["s"]
            # remote_tx cannot be had: nothing would commit it at local commit.
            with pytest.raises(psycopg.Error) as info, conn.transaction():
                ensure_tx(conn, target, remote_tx=True)
            assert info.value.sqlstate == "25006"
            assert "commit hook" in str(info.value)
        assert rows(remote, remote_db, "from standby") == 2
    finally:
        standby.stop()
