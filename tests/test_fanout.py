"""Fan-out against real nodes: databases on two clusters, a stalling proxy, PgBouncer, kills."""

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from calls import Conn, ensure, scalar
from faults import finish, in_background, kill_when, running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pgbouncer import PgBouncer, find_pgbouncer
from proxy import TcpProxy
from psycopg import sql
from report import record
from servers import LocalCluster, Server, wait_for

#: The statement every node runs: it sleeps and fails as the node's ``knob`` row says.
WORK = (
    "DO $$BEGIN PERFORM pg_sleep((SELECT delay FROM knob)); "
    "IF (SELECT fail FROM knob) THEN PERFORM 1 / 0; END IF; END$$"
)
#: What a call may take beyond its deadline: the documented grace (0.5 s) and scheduling.
GRACE = 0.5
SLACK = 0.4

_counter = itertools.count()


@dataclass
class Node:
    name: str
    server: Server
    dbname: str
    target: str

    def knob(self, delay: float = 0, fail: bool = False) -> None:
        self.server.execute(
            sql.SQL("UPDATE knob SET delay = {}, fail = {}").format(
                sql.Literal(delay), sql.Literal(fail)
            ),
            self.dbname,
        )

    def busy(self) -> list[int]:
        """Backends of this node's database still running the fan-out's statement."""
        return running(self.server, self.dbname, "knob")


def _make_db(server: Server) -> str:
    name = f"node_{os.getpid()}_{next(_counter)}"
    server.create_database(name)
    server.execute(
        "CREATE TABLE knob (delay float8 NOT NULL, fail boolean NOT NULL);"
        "INSERT INTO knob VALUES (0, false);"
        "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
        name,
    )
    return name


@pytest.fixture
def make_nodes(
    installed: Conn, local: Server, remote: Server
) -> Iterator[Callable[[int], list[Node]]]:
    """``make_nodes(n)``: n databases, alternately on the remote and the local cluster, each
    with a connection s1, s2, ... opened by ensure_dblink_conn."""
    made: list[tuple[Server, str]] = []

    def make(count: int) -> list[Node]:
        nodes = []
        for _ in range(count):
            index = len(made) + 1
            server = remote if index % 2 else local
            dbname = _make_db(server)
            made.append((server, dbname))
            node = Node(f"s{index}", server, dbname, server.conninfo(dbname))
            ensure(installed, node.target, name=node.name)
            nodes.append(node)
        return nodes

    yield make
    installed.execute("SELECT dblink_safe.safe_dblink_disconnect_all()")
    for server, dbname in made:
        server.drop_database(dbname)


def names(nodes: list[Node]) -> list[str]:
    return [n.name for n in nodes]


def fanout_exec(conn: Conn, nodes: list[str], statement: str = WORK, **options: object) -> dict:
    """Each node's (sqlstate, message, status), and the call's duration in seconds."""
    args = [sql.Placeholder(), sql.Placeholder()]
    named = [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder()) for k in options]
    query = sql.SQL(
        "SELECT conn_name, sqlstate, message, status FROM dblink_safe.fanout_exec({})"
    ).format(sql.SQL(", ").join(args + named))
    started = time.monotonic()
    result = conn.execute(query, [nodes, statement, *options.values()]).fetchall()
    seconds = time.monotonic() - started
    outcome = {row[0]: row[1:] for row in result}
    assert len(outcome) == len(result), f"a node appears twice: {result}"
    return {"nodes": outcome, "seconds": seconds}


def idle_and_usable(conn: Conn, nodes: list[Node]) -> None:
    """No node runs the statement any more and every connection works, unbusy."""
    for node in nodes:
        assert wait_for(lambda n=node: not n.busy(), 5, f"{node.name} idle")
        node.knob(0, False)
    again = fanout_exec(conn, names(nodes), deadline="10 s")
    assert again["nodes"] == {n.name: (None, None, "DO") for n in nodes}
    busy = conn.execute(
        "SELECT n FROM unnest(public.dblink_get_connections()) n WHERE public.dblink_is_busy(n) = 1"
    ).fetchall()
    assert busy == []


def test_nodes_run_in_parallel(installed: Conn, make_nodes: Callable[[int], list[Node]]) -> None:
    nodes = make_nodes(4)
    for node in nodes:
        node.knob(1.0)
    result = fanout_exec(installed, names(nodes), deadline="10 s")
    assert result["nodes"] == {n.name: (None, None, "DO") for n in nodes}
    record(
        f"fan-out parallelism: 4 nodes each sleeping 1 s took {result['seconds']:.3f} s "
        f"(one after another: 4 s)"
    )
    assert result["seconds"] < 1.6


def test_rows_typed_and_one_remote_error(
    installed: Conn, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(3)
    nodes[1].knob(fail=True)
    installed.execute("CREATE TYPE shard_row AS (db text, n int)")
    got = installed.execute(
        "SELECT conn_name, sqlstate, message, (value).db, (value).n, elapsed "
        "FROM dblink_safe.fanout(%s, %s, NULL::shard_row) ORDER BY conn_name, (value).n",
        [
            names(nodes),
            "SELECT current_database()::text, g FROM knob, generate_series(1, 2) g "
            "WHERE 1 / (NOT fail)::int = 1",
        ],
    ).fetchall()
    assert [row[:5] for row in got] == [
        ("s1", None, None, nodes[0].dbname, 1),
        ("s1", None, None, nodes[0].dbname, 2),
        ("s2", "22012", "division by zero", None, None),
        ("s3", None, None, nodes[2].dbname, 1),
        ("s3", None, None, nodes[2].dbname, 2),
    ]
    assert all(row[5] is not None and row[5].total_seconds() < 5 for row in got)
    scalars = installed.execute(
        "SELECT conn_name, value FROM dblink_safe.fanout(%s, 'SELECT 41 + 1', NULL::int)",
        [names(nodes)],
    ).fetchall()
    assert sorted(scalars) == [("s1", 42), ("s2", 42), ("s3", 42)]
    idle_and_usable(installed, nodes)


def test_deadline_against_a_slow_node(
    installed: Conn, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(3)
    nodes[2].knob(30)
    result = fanout_exec(installed, names(nodes), deadline="500 ms")
    assert result["nodes"]["s1"] == (None, None, "DO")
    assert result["nodes"]["s2"] == (None, None, "DO")
    state, message, status = result["nodes"]["s3"]
    assert (state, status) == ("57014", None)
    assert "deadline" in message
    overshoot = result["seconds"] - 0.5
    record(
        f"fan-out deadline: 500 ms against a node sleeping 30 s returned after "
        f"{result['seconds'] * 1000:.0f} ms (overshoot {overshoot * 1000:.0f} ms)"
    )
    assert result["seconds"] < 0.5 + GRACE + SLACK
    # Cancelled on the remote, not abandoned there.
    assert nodes[2].busy() == []
    idle_and_usable(installed, nodes)


def test_deadline_against_a_stalled_network(
    installed: Conn, remote: Server, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(2)
    with TcpProxy(remote.host, remote.port) as proxy:
        behind = Node(
            "stalled",
            remote,
            nodes[0].dbname,
            remote.conninfo(nodes[0].dbname, host=proxy.host, port=str(proxy.port)),
        )
        ensure(installed, behind.target, name=behind.name)
        proxy.stall()
        everyone = [*names(nodes), behind.name]
        result = fanout_exec(installed, everyone, deadline="500 ms")
        record(
            f"fan-out deadline: 500 ms with a stalled network to one node returned after "
            f"{result['seconds'] * 1000:.0f} ms (grace 500 ms)"
        )
        assert result["seconds"] < 0.5 + GRACE + SLACK
        state, message, _ = result["nodes"]["stalled"]
        assert state == "57014" and "connection closed" in message
        assert [result["nodes"][n][0] for n in names(nodes)] == [None, None]
        assert (
            scalar(installed, "SELECT 'stalled' = ANY (public.dblink_get_connections())") is False
        )
        proxy.resume()
        # Closed at the deadline, reconnected on next use.
        again = fanout_exec(installed, everyone, deadline="10 s")
        assert again["nodes"]["stalled"] == (None, None, "DO")
    idle_and_usable(installed, nodes)


def test_a_cancelled_call_leaves_nothing_running_past_the_deadline(
    installed: Conn, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(2)
    for node in nodes:
        node.knob(30)
    installed.execute("SET statement_timeout = '300ms'")
    with pytest.raises(psycopg.errors.QueryCanceled):
        fanout_exec(installed, names(nodes), deadline="1 s")
    installed.execute("RESET statement_timeout")
    # Still running on the remote until the deadline, which ends them there.
    assert all(node.busy() for node in nodes)
    for node in nodes:
        assert wait_for(lambda n=node: not n.busy(), 5, f"{node.name} stopped at the deadline")
    idle_and_usable(installed, nodes)


def test_a_node_that_refuses_connections(
    installed: Conn, remote: Server, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(2)
    with TcpProxy(remote.host, remote.port) as proxy:
        gone = Node(
            "gone",
            remote,
            nodes[0].dbname,
            remote.conninfo(nodes[0].dbname, host=proxy.host, port=str(proxy.port)),
        )
        ensure(installed, gone.target, name=gone.name)
        # The server behind it went away: the connection is reset, new ones are refused.
        proxy.refuse()
        proxy.cut()
        result = fanout_exec(installed, [*names(nodes), gone.name], deadline="2 s")
        # The promise: the deadline plus the 0.5 s grace. Reconnect attempts to the refusing
        # node may use the whole deadline.
        assert result["seconds"] < 2.5
        state, message, status = result["nodes"]["gone"]
        assert (state, status) == ("08001", None)
        assert "could not open dblink connection" in message
        assert [result["nodes"][n] for n in names(nodes)] == [(None, None, "DO")] * 2
    idle_and_usable(installed, nodes)


@pytest.mark.parametrize("idempotent", [False, True])
def test_node_killed_mid_query(
    installed: Conn,
    local: Server,
    local_db: str,
    make_nodes: Callable[[int], list[Node]],
    idempotent: bool,
) -> None:
    nodes = make_nodes(2)
    nodes[0].knob(2)

    def work(conn: Conn) -> dict:
        for node in nodes:
            ensure(conn, node.target, name=node.name)
        return fanout_exec(conn, names(nodes), deadline="20 s", idempotent=idempotent)

    outcome = in_background(local, local_db, work)
    kill_when(nodes[0].server, nodes[0].dbname, "query LIKE '%knob%' AND state = 'active'")
    # Sent again, the statement sleeps again: faster this time.
    nodes[0].knob(0.2)
    result = finish(outcome)["result"]
    assert result["nodes"]["s2"] == (None, None, "DO")
    state, message, status = result["nodes"]["s1"]
    if idempotent:
        assert (state, status) == (None, "DO")
    else:
        assert state == "08007" and status is None
        assert "was lost while running a statement" in message
    idle_and_usable(installed, nodes)


def test_min_ok_cancels_the_rest(installed: Conn, make_nodes: Callable[[int], list[Node]]) -> None:
    nodes = make_nodes(3)
    # Long enough for the others to have started when it succeeds.
    nodes[0].knob(0.3)
    for node in nodes[1:]:
        node.knob(30)
    result = fanout_exec(installed, names(nodes), deadline="20 s", min_ok=1)
    assert result["nodes"]["s1"] == (None, None, "DO")
    for name in ("s2", "s3"):
        state, message, _ = result["nodes"][name]
        assert state == "57014" and message == "cancelled: min_ok (1) nodes had succeeded"
    assert result["seconds"] < 0.3 + GRACE + SLACK
    for node in nodes:
        assert node.busy() == []
    idle_and_usable(installed, nodes)


def test_min_ok_leaves_later_nodes_unstarted(
    installed: Conn, remote: Server, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(2)
    nodes[0].knob(0.3)
    # A node whose turn comes after a slow reconnect (a latency of 150 ms each way): the first
    # node, sleeping 0.3 s, succeeds meanwhile, so the one after it is never started.
    with TcpProxy(remote.host, remote.port, latency_ms=150) as proxy:
        slow = Node(
            "slow",
            remote,
            nodes[0].dbname,
            remote.conninfo(nodes[0].dbname, host=proxy.host, port=str(proxy.port)),
        )
        ensure(installed, slow.target, name=slow.name)
        installed.execute("SELECT public.dblink_disconnect('slow')")
        result = fanout_exec(installed, ["s1", "slow", "s2"], deadline="20 s", min_ok=1)
    assert result["nodes"]["s1"] == (None, None, "DO")
    assert result["nodes"]["slow"][0] in ("57014", None)
    state, message, status = result["nodes"]["s2"]
    assert (state, status) == ("02000", None)
    assert message == "not started: min_ok (1) nodes had succeeded"
    assert rows_of(nodes[1]) == 0
    idle_and_usable(installed, nodes)


def rows_of(node: Node) -> int:
    return int(node.server.execute("SELECT count(*) FROM items", node.dbname)[0][0])


BAD = [
    ("NULL::text[]", "'SELECT 1'", "", "22004", "conn_names"),
    ("'{}'::text[]", "'SELECT 1'", "", "22023", "conn_names"),
    ("ARRAY['s1', NULL]", "'SELECT 1'", "", "22004", "conn_names"),
    ("'{s1,s2,s1}'", "'SELECT 1'", "", "22023", "conn_names"),
    ("'{s1,nowhere}'", "'SELECT 1'", "", "08003", "nowhere"),
    ("'{s1,tx:s2}'", "'SELECT 1'", "", "22023", "tx:"),
    ("'{s1,s2}'", "NULL", "", "22004", "sql"),
    ("'{s1,s2}'", "' ; '", "", "22023", "sql"),
    ("'{s1,s2}'", "'SELECT 1'", ", min_ok => 0", "22023", "min_ok"),
    ("'{s1,s2}'", "'SELECT 1'", ", min_ok => 3", "22023", "min_ok"),
    ("'{s1,s2}'", "'SELECT 1'", ", deadline => '0 s'", "22023", "deadline"),
    ("'{s1,s2}'", "'SELECT 1'", ", deadline => '2 days'", "22023", "deadline"),
    ("'{s1,s2}'", "'SELECT 1'", ", deadline => NULL", "22004", "deadline"),
    ("'{s1,s2}'", "'SELECT 1'", ", idempotent => NULL", "22004", "idempotent"),
    ("'{s1,s2}'", "'INSERT INTO items (note) VALUES (1); COMMIT'", "", "0A000", "transaction"),
]


@pytest.mark.parametrize(("conn_names", "statement", "extra", "sqlstate", "word"), BAD)
def test_bad_arguments_are_refused_before_anything_is_sent(
    installed: Conn,
    make_nodes: Callable[[int], list[Node]],
    conn_names: str,
    statement: str,
    extra: str,
    sqlstate: str,
    word: str,
) -> None:
    nodes = make_nodes(2)
    for function, row_type in (("fanout_exec", ""), ("fanout", ", NULL::int")):
        query = f"SELECT * FROM dblink_safe.{function}({conn_names}, {statement}{row_type}{extra})"
        with pytest.raises(psycopg.Error) as info:
            installed.execute(query)
        assert info.value.sqlstate == sqlstate, info.value
        assert word in str(info.value)
    assert [rows_of(n) for n in nodes] == [0, 0]


def test_transaction_scope_and_remote_tx(
    installed: Conn, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(2)
    insert = "INSERT INTO items (note) VALUES ('tx')"
    installed.execute("SELECT dblink_safe.safe_dblink_disconnect_all()")
    for outcome in ("rollback", "commit"):
        with installed.transaction(force_rollback=outcome == "rollback"):
            for node in nodes:
                ensure(installed, node.target, name=node.name, scope="transaction", remote_tx=True)
            result = fanout_exec(installed, names(nodes), insert)
            assert result["nodes"] == {n.name: (None, None, "INSERT 0 1") for n in nodes}
            # Inside the remote transaction: not visible from outside yet.
            assert [rows_of(n) for n in nodes] == [0, 0]
        expected = 0 if outcome == "rollback" else 1
        assert [rows_of(n) for n in nodes] == [expected, expected]
    assert scalar(installed, "SELECT public.dblink_get_connections()") is None


def test_remote_tx_node_past_the_deadline_fails_the_commit(
    installed: Conn, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(2)
    nodes[1].knob(30)
    installed.execute("SELECT dblink_safe.safe_dblink_disconnect_all()")
    result: dict = {}
    with pytest.raises(psycopg.errors.TransactionRollback) as info, installed.transaction():
        for node in nodes:
            ensure(installed, node.target, name=node.name, scope="transaction", remote_tx=True)
        result = fanout_exec(installed, names(nodes), WORK, deadline="300 ms")
    assert result["nodes"]["s1"] == (None, None, "DO")
    assert result["nodes"]["s2"][0] == "57014"
    # The cancelled statement failed the remote transaction: the local commit fails too, and
    # the other node's work is rolled back with it.
    assert info.value.sqlstate == "40000"
    assert [n.busy() for n in nodes] == [[], []]


def test_remote_tx_node_closed_at_the_deadline_fails_the_call(
    installed: Conn, remote: Server, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(1)
    installed.execute("SELECT dblink_safe.safe_dblink_disconnect_all()")
    with TcpProxy(remote.host, remote.port) as proxy:
        behind = remote.conninfo(nodes[0].dbname, host=proxy.host, port=str(proxy.port))
        with pytest.raises(psycopg.errors.TransactionResolutionUnknown) as info:  # noqa: SIM117
            with installed.transaction():
                ensure(installed, behind, name="tx", scope="transaction", remote_tx=True)
                proxy.stall()
                fanout_exec(installed, ["tx"], deadline="300 ms")
        proxy.resume()
    assert info.value.sqlstate == "08007"
    assert "lost the open remote transaction of dblink connection(s) tx" in str(info.value)
    assert scalar(installed, "SELECT public.dblink_get_connections()") is None


def test_begin_through_fanout_exec_is_tracked(
    installed: Conn, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(2)
    assert fanout_exec(installed, names(nodes), "BEGIN")["nodes"] == {
        n.name: (None, None, "BEGIN") for n in nodes
    }
    opened = installed.execute(
        "SELECT conn_name, remote_transaction FROM dblink_safe.connections() ORDER BY 1"
    ).fetchall()
    assert opened == [(n.name, True) for n in nodes]
    insert = "INSERT INTO items (note) VALUES ('in tx')"
    assert fanout_exec(installed, names(nodes), insert)["nodes"] == {
        n.name: (None, None, "INSERT 0 1") for n in nodes
    }
    assert [rows_of(n) for n in nodes] == [0, 0]
    for node in nodes:
        assert scalar(installed, "SELECT dblink_safe.safe_dblink_exec(%s, 'COMMIT')", node.name)
    assert [rows_of(n) for n in nodes] == [1, 1]


@pytest.mark.parametrize("pool_mode", ["session", "transaction"])
def test_through_pgbouncer(
    installed: Conn,
    remote: Server,
    local: Server,
    make_nodes: Callable[[int], list[Node]],
    pool_mode: str,
) -> None:
    if find_pgbouncer() is None:
        pytest.skip("PgBouncer is not installed")
    if not isinstance(local, LocalCluster):
        pytest.skip(f"the {local.label} server cannot reach a PgBouncer on this host's loopback")
    nodes = make_nodes(1)
    dbs = [nodes[0].dbname, _make_db(remote)]
    try:
        with PgBouncer(remote, pool_mode) as bouncer:
            pooled = [Node(f"p{i}", remote, db, bouncer.conninfo(db)) for i, db in enumerate(dbs)]
            for node in pooled:
                ensure(installed, node.target, name=node.name)
            pooled[1].knob(30)
            result = fanout_exec(installed, names(pooled), deadline="500 ms")
            assert result["nodes"]["p0"] == (None, None, "DO")
            assert result["nodes"]["p1"][0] == "57014"
            assert result["seconds"] < 0.5 + GRACE + SLACK
            assert pooled[1].busy() == []
            pooled[1].knob(0)
            again = fanout_exec(installed, names(pooled), deadline="10 s")
            assert again["nodes"] == {"p0": (None, None, "DO"), "p1": (None, None, "DO")}
            # The statement_timeout the fan-out set ended with its statement.
            timeouts = [
                scalar(
                    installed,
                    "SELECT * FROM dblink_safe.safe_dblink_query(%s, 'SHOW statement_timeout', "
                    "NULL::text)",
                    node.name,
                )
                for node in pooled
            ]
            assert timeouts == ["0", "0"]
    finally:
        installed.execute("SELECT dblink_safe.safe_dblink_disconnect_all()")
        remote.drop_database(dbs[1])


KINDS = st.sampled_from(["fast", "slow-ok", "error", "past-deadline", "killed-before"])
DELAY = {"fast": 0, "slow-ok": 0.1, "error": 0, "past-deadline": 5, "killed-before": 0}
#: What each kind of node may end with (None: success); min_ok adds cancelled and not started.
ALLOWED = {
    "fast": {None},
    "slow-ok": {None},
    "error": {"22012"},
    "past-deadline": {"57014"},
    "killed-before": {None},
}


def test_each_node_has_exactly_one_allowed_outcome(
    installed: Conn, make_nodes: Callable[[int], list[Node]]
) -> None:
    nodes = make_nodes(3)

    @settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(kinds=st.lists(KINDS, min_size=3, max_size=3), min_ok=st.sampled_from([None, 1, 2]))
    def check(kinds: list[str], min_ok: int | None) -> None:
        for node, kind in zip(nodes, kinds, strict=True):
            node.knob(delay=DELAY[kind], fail=kind == "error")
            if kind == "killed-before":
                node.server.terminate_backends(node.dbname)
        result = fanout_exec(installed, names(nodes), deadline="400 ms", min_ok=min_ok)
        assert set(result["nodes"]) == set(names(nodes))
        assert result["seconds"] < 0.4 + GRACE + SLACK
        stopped_early = False
        for node, kind in zip(nodes, kinds, strict=True):
            state, message, status = result["nodes"][node.name]
            allowed = ALLOWED[kind]
            if min_ok is not None:
                allowed = allowed | {"57014", "02000"}
            assert state in allowed, (kind, result)
            assert (status == "DO") == (state is None), (kind, result)
            stopped_early |= "min_ok" in (message or "")
        successes = sum(state is None for state, _, _ in result["nodes"].values())
        if stopped_early:
            assert min_ok is not None and successes >= min_ok, result
        for node in nodes:
            assert wait_for(lambda n=node: not n.busy(), 5, f"{node.name} idle")
        busy = installed.execute(
            "SELECT n FROM unnest(public.dblink_get_connections()) n "
            "WHERE public.dblink_is_busy(n) = 1"
        ).fetchall()
        assert busy == []

    check()


def test_fanout_output_for_the_readme(
    installed: Conn, make_nodes: Callable[[int], list[Node]]
) -> None:
    """Kept runnable: the README's example, three nodes, one slow and one failing."""
    nodes = make_nodes(3)
    nodes[1].knob(60)
    nodes[2].knob(fail=True)
    got = installed.execute(
        "SELECT conn_name, sqlstate, message, status FROM dblink_safe.fanout_exec("
        "'{s1,s2,s3}', %s, deadline => '2 seconds') ORDER BY conn_name",
        [WORK],
    ).fetchall()
    assert [(r[0], r[1], r[3]) for r in got] == [
        ("s1", None, "DO"),
        ("s2", "57014", None),
        ("s3", "22012", None),
    ]
