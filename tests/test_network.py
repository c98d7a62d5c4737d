"""Network faults between the local server and a remote one, measured against the promised bounds.

The remote runs in its own network namespace (``netns.py``), reached by dblink over a veth
pair; faults are firewall rules in that namespace: a black hole (packets dropped without a
word, as by a NAT that forgot a flow or a dead link) and a reset (a TCP RST). Each test
installs the toolkit with small libpq timeouts, measures how long a call takes to fail or
recover, and asserts that time against the bound computed from the settings it used, with
a generous margin (shared machines are noisy). Every figure is recorded (``report.py``).

The tests at the end add latency with the userspace proxy (``proxy.py``) instead: a slow
link that is alive must not be taken for a dead one.
"""

import dataclasses
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import netns
import psycopg
import pytest
from calls import Conn, ensure, exec_, insert, listing, raw_remote_pid, rows, scalar, timed
from faults import finish, in_background, running
from netns import NamespacedCluster, NetNamespace, stop_in_namespace, unavailable
from proxy import TcpProxy
from report import record
from servers import LocalCluster, Server, ServerError, wait_for

import pgdblink_safe

#: Small timeouts keep the tests short. tcp_user_timeout is not above connect_timeout, so a
#: connect attempt to a black hole ends by connect_timeout on every server version (see
#: test_connect_timeout_bounds_each_attempt for what happens otherwise).
SMALL = pgdblink_safe.Settings(
    validation_window_ms=200,
    connect_timeout_s=2,
    keepalives_idle_s=1,
    keepalives_interval_s=1,
    keepalives_count=2,
    tcp_user_timeout_ms=2000,
    max_attempts=2,
    retry_budget_ms=3000,
    backoff_base_ms=50,
    backoff_max_ms=200,
)

#: The longest first retransmission timeout (Linux's TCP_TIMEOUT_INIT).
_FIRST_RTO_S = 1.0

#: Allowance for a connect to a reachable server (milliseconds when measured).
_RECONNECT_S = 1.0

#: Past the validation window, so that the next call probes the connection first.
_IDLE_PAST = SMALL.validation_window_ms / 1000 + 0.2


def margin(bound: float) -> float:
    """The promised bound widened for a loaded machine: half as much again plus 2 s."""
    return bound * 1.5 + 2.0


def user_timeout(s: pgdblink_safe.Settings, server: Server) -> float:
    """The tcp_user_timeout (s) the toolkit gives its connections.

    From PostgreSQL 16 on it is capped at connect_timeout (migration 0006): there it is what
    bounds a connect, which dblink runs without libpq's connect_timeout.
    """
    if server.version_num >= 160000:
        return min(s.tcp_user_timeout_ms / 1000, s.connect_timeout_s)
    return s.tcp_user_timeout_ms / 1000


def probe_bound(s: pgdblink_safe.Settings, server: Server) -> float:
    """A probe sent into a black hole: the socket fails once tcp_user_timeout has passed.

    Linux counts that time from the first retransmission, one retransmission timeout after
    the send (200 ms at least, 1 s on a connection without a round-trip estimate).
    """
    return user_timeout(s, server) + _FIRST_RTO_S


def attempt_bound(s: pgdblink_safe.Settings) -> float:
    """One connect attempt to a black hole: connect_timeout, as configured."""
    return float(s.connect_timeout_s)


def reconnect_bound(s: pgdblink_safe.Settings) -> float:
    """All reconnect attempts: max_attempts of them, or as many as start within retry_budget.

    An attempt starts only while the budget lasts, after a backoff of at most backoff_max.
    """
    backoff = s.backoff_max_ms / 1000
    by_attempts = s.max_attempts * attempt_bound(s) + (s.max_attempts - 1) * backoff
    by_budget = s.retry_budget_ms / 1000 + backoff + attempt_bound(s)
    return min(by_attempts, by_budget)


def keepalive_bound(s: pgdblink_safe.Settings, server: Server) -> float:
    """A read waiting on a silent peer: keepalive probes, or tcp_user_timeout once they go out."""
    return (
        s.keepalives_idle_s
        + s.keepalives_interval_s * (s.keepalives_count + 1)
        + user_timeout(s, server)
    )


def described(s: pgdblink_safe.Settings) -> str:
    return (
        f"validation_window={s.validation_window_ms}ms connect_timeout={s.connect_timeout_s}s "
        f"tcp_user_timeout={s.tcp_user_timeout_ms}ms keepalives={s.keepalives_idle_s}/"
        f"{s.keepalives_interval_s}/{s.keepalives_count} attempts={s.max_attempts} "
        f"budget={s.retry_budget_ms}ms"
    )


# -- helpers ---------------------------------------------------------------------------------


def major(server: Server) -> int:
    return server.version_num // 10000


def wait_until_running(server: Server, dbname: str, marker: str) -> None:
    wait_for(lambda: running(server, dbname, marker), 15, f"remote statement {marker!r}")


def wait_until_idle(server: Server, dbname: str, marker: str) -> None:
    wait_for(lambda: not running(server, dbname, marker), 30, f"remote statement {marker!r} to end")


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ns_remote(local: Server) -> Iterator[NamespacedCluster]:
    """A remote server in its own network namespace, with the local server's binaries."""
    why = unavailable()
    if why:
        pytest.skip(why)
    if not isinstance(local, LocalCluster):
        pytest.skip(f"the {local.label} server has no binaries here to start a remote with")
    try:
        namespace = NetNamespace().create()
    except (ServerError, OSError) as exc:
        pytest.skip(f"cannot set up a network namespace with a veth pair and iptables: {exc}")
    cluster = NamespacedCluster(local.binaries, label="netns-remote", netns=namespace)
    try:
        cluster.start()
        yield cluster
    finally:
        stop_in_namespace(cluster)


@pytest.fixture
def net(ns_remote: NamespacedCluster, local_db: str) -> Iterator[NamespacedCluster]:
    """The namespaced remote, healed before and after the test.

    Set up after ``local_db``, so it heals before the local database is dropped.
    """
    ns_remote.netns.heal()
    try:
        yield ns_remote
    finally:
        ns_remote.netns.heal()


@pytest.fixture
def ns_db(net: NamespacedCluster) -> Iterator[str]:
    name = f"netdb_{time.monotonic_ns()}"
    net.create_database(name)
    net.execute(
        "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
        dbname=name,
    )
    yield name
    net.drop_database(name)


@pytest.fixture
def ns_target(net: NamespacedCluster, ns_db: str) -> str:
    """The remote database as dblink on the local server reaches it: over the veth."""
    return net.conninfo(ns_db)


def install(conn: Conn, settings: pgdblink_safe.Settings) -> pgdblink_safe.Settings:
    pgdblink_safe.install(conn, settings)
    return settings


def host_socket_open(net: NamespacedCluster, client_port: int) -> bool:
    """Whether the host still has the TCP socket of the local server's flow from ``client_port``."""
    listing = subprocess.run(
        ["ss", "-Htn", "src", f"{net.netns.host_ip}:{client_port}"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    return bool(listing.strip())


def only_flow(net: NamespacedCluster, dbname: str) -> int:
    """The client port of the one network connection to ``dbname`` (the toolkit's)."""
    ports = net.client_ports(dbname)
    assert len(ports) == 1, ports
    return ports[0]


# -- black holes -----------------------------------------------------------------------------


def test_the_namespace_is_a_separate_network(
    net: NamespacedCluster, conn: Conn, ns_target: str, ns_db: str
) -> None:
    # The local server reaches the remote over the veth, from the host end's address.
    assert net.host == net.netns.ns_ip
    got = conn.execute(
        "SELECT * FROM public.dblink(%s, 'SELECT host(inet_server_addr()), "
        "host(inet_client_addr())') AS t(server text, client text)",
        [ns_target],
    ).fetchone()
    assert got == (net.netns.ns_ip, net.netns.host_ip)
    # A black hole drops new connections as well: a plain connect runs into connect_timeout.
    net.netns.blackhole(net.port)
    elapsed, _, error = timed(
        lambda: psycopg.connect(net.conninfo(ns_db), connect_timeout=2).close()
    )
    assert isinstance(error, psycopg.OperationalError)
    assert elapsed >= 1.5
    assert net.netns.fault_packets() > 0
    # This process manages the server over its Unix socket, whatever the network does.
    assert net.execute("SELECT 1") == [(1,)]
    net.netns.heal()
    with psycopg.connect(net.conninfo(ns_db), connect_timeout=5) as direct:
        assert direct.execute("SELECT 1").fetchone() == (1,)


def test_idle_flow_dropped_is_detected_by_the_probe_and_replaced(
    net: NamespacedCluster, conn: Conn, ns_target: str, ns_db: str
) -> None:
    s = install(conn, SMALL)
    ensure(conn, ns_target)
    exec_(conn, "INSERT INTO items (note) VALUES ('before')")
    before = raw_remote_pid(conn)
    time.sleep(_IDLE_PAST)
    # A NAT forgets this one flow: the server and new connections to it are fine.
    net.netns.blackhole(net.port, client_port=only_flow(net, ns_db))
    elapsed, status, error = timed(exec_, conn, "INSERT INTO items (note) VALUES ('after')")
    bound = probe_bound(s, net) + attempt_bound(s)
    record(
        f"detect: PG{major(net)} idle flow black-holed, probe then reconnect: {elapsed:.2f}s "
        f"(bound {bound:.2f}s; {described(s)})"
    )
    assert error is None, error
    assert status == "INSERT 0 1"
    assert elapsed <= margin(bound)
    # Detected by the probe's retransmissions giving up, not by luck.
    assert elapsed >= user_timeout(s, net) * 0.9
    after = listing(conn)
    assert (after["reconnects"], after["last_validation_ok"]) == (1, False)
    assert raw_remote_pid(conn) != before
    assert rows(net, ns_db, "after") == 1


def test_idle_connection_to_a_black_hole_fails_08001_in_bound_then_heals(
    net: NamespacedCluster, conn: Conn, ns_target: str, ns_db: str
) -> None:
    s = install(conn, SMALL)
    ensure(conn, ns_target)
    exec_(conn, "INSERT INTO items (note) VALUES ('before')")
    before = raw_remote_pid(conn)
    time.sleep(_IDLE_PAST)
    net.netns.blackhole(net.port)
    elapsed, _, error = timed(exec_, conn, "INSERT INTO items (note) VALUES ('lost')")
    bound = probe_bound(s, net) + reconnect_bound(s)
    record(
        f"detect: PG{major(net)} idle connection, whole server black-holed, probe then "
        f"{s.max_attempts} connect attempts: 08001 after {elapsed:.2f}s (bound {bound:.2f}s; "
        f"{described(s)})"
    )
    assert error is not None and error.sqlstate == "08001", error
    assert error.diag.message_primary == 'could not open dblink connection "r"'
    assert f"{s.max_attempts} attempt(s) in" in (error.diag.message_detail or "")
    assert elapsed <= margin(bound)
    net.netns.heal()
    elapsed, status, error = timed(exec_, conn, "INSERT INTO items (note) VALUES ('back')")
    record(f"recover: PG{major(net)} first call after the black hole healed: {elapsed:.3f}s")
    assert error is None, error
    assert status == "INSERT 0 1"
    assert raw_remote_pid(conn) != before
    # Nothing was sent while the remote was unreachable; the call after healing ran once.
    assert (rows(net, ns_db, "lost"), rows(net, ns_db, "back")) == (0, 1)


def test_connecting_to_a_black_hole_is_08001_within_attempts_and_budget(
    net: NamespacedCluster, conn: Conn, ns_target: str
) -> None:
    s = install(conn, SMALL)
    net.netns.blackhole(net.port)
    elapsed, _, error = timed(ensure, conn, ns_target, name="fresh")
    bound = reconnect_bound(s)
    record(
        f"detect: PG{major(net)} ensure_dblink_conn to a black-holed address: 08001 after "
        f"{elapsed:.2f}s (bound {bound:.2f}s; {described(s)})"
    )
    assert error is not None and error.sqlstate == "08001", error
    assert "attempt(s) in" in (error.diag.message_detail or "")
    assert elapsed <= margin(bound)
    # Each attempt waited for its timeout: these were black-holed, not refused, connects.
    assert elapsed >= attempt_bound(s) * 0.9
    assert scalar(conn, "SELECT public.dblink_get_connections()") is None
    net.netns.heal()
    assert ensure(conn, ns_target, name="fresh") == "connected"


def test_connect_timeout_bounds_each_attempt(
    net: NamespacedCluster, conn: Conn, ns_target: str
) -> None:
    """connect_timeout bounds a connect attempt even with a longer tcp_user_timeout.

    On PostgreSQL 16+ dblink ignores libpq's connect_timeout (a black-holed connect lasted
    about 134 s here); migration 0006 caps tcp_user_timeout at connect_timeout there.
    """
    s = install(
        conn,
        pgdblink_safe.Settings(
            connect_timeout_s=2, tcp_user_timeout_ms=8000, max_attempts=1, retry_budget_ms=0
        ),
    )
    net.netns.blackhole(net.port)
    elapsed, _, error = timed(ensure, conn, ns_target)
    bound = reconnect_bound(s)
    record(
        f"detect: PG{major(net)} one connect attempt to a black hole, connect_timeout "
        f"{s.connect_timeout_s}s < tcp_user_timeout {s.tcp_user_timeout_ms}ms: 08001 after "
        f"{elapsed:.2f}s (bound {bound:.2f}s)"
    )
    assert error is not None and error.sqlstate == "08001", error
    assert elapsed <= margin(bound)


def test_idle_flow_dropped_is_found_by_keepalives_before_the_next_call(
    net: NamespacedCluster, conn: Conn, ns_target: str, ns_db: str
) -> None:
    # No probe (a long validation window) and no per-call timeout: keepalives alone find the
    # dead flow while it is idle, and the next call sees that before it sends anything.
    s = install(conn, dataclasses.replace(SMALL, validation_window_ms=60_000))
    ensure(conn, ns_target)
    exec_(conn, "INSERT INTO items (note) VALUES ('before')")
    before = raw_remote_pid(conn)
    flow = only_flow(net, ns_db)
    net.netns.blackhole(net.port, client_port=flow)
    holed = time.monotonic()
    bound = keepalive_bound(s, net)
    wait_for(lambda: not host_socket_open(net, flow), margin(bound), "keepalives to end the flow")
    found = time.monotonic() - holed
    elapsed, status, error = timed(exec_, conn, "INSERT INTO items (note) VALUES ('after')")
    record(
        f"detect: PG{major(net)} idle flow black-holed, keepalives only: socket closed "
        f"{found:.2f}s after the black hole (bound {bound:.2f}s; {described(s)}); next call "
        f"{elapsed * 1000:.1f} ms on a new connection"
    )
    assert found <= margin(bound)
    assert error is None, error
    assert status == "INSERT 0 1"
    assert elapsed < s.connect_timeout_s / 2
    assert raw_remote_pid(conn) != before
    assert rows(net, ns_db, "after") == 1


def test_validation_probe_of_a_dropped_idle_flow_ends_at_connect_timeout(
    net: NamespacedCluster, conn: Conn, ns_target: str, ns_db: str
) -> None:
    # tcp_user_timeout far beyond connect_timeout (on 16+ 0006 caps it at connect_timeout,
    # which ends the probe at the same time): the probe's own limit ends the wait.
    s = install(
        conn,
        pgdblink_safe.Settings(
            validation_window_ms=200, connect_timeout_s=2, tcp_user_timeout_ms=60000
        ),
    )
    ensure(conn, ns_target)
    exec_(conn, "INSERT INTO items (note) VALUES ('before')")
    time.sleep(_IDLE_PAST)
    net.netns.blackhole(net.port, client_port=only_flow(net, ns_db))
    elapsed, status, error = timed(
        exec_, conn, "INSERT INTO items (note) VALUES ('after')", timeout="0.5s"
    )
    # Only the old flow is dark, so the new connection is made in milliseconds.
    bound = s.connect_timeout_s + _RECONNECT_S
    record(
        f"detect: PG{major(net)} idle flow black-holed, probe limit connect_timeout="
        f"{s.connect_timeout_s}s: {'ok' if error is None else error.sqlstate} after "
        f"{elapsed:.2f}s (bound {bound:.2f}s; tcp_user_timeout={user_timeout(s, net):.0f}s)"
    )
    assert error is None, error
    assert status == "INSERT 0 1"
    assert s.connect_timeout_s - 0.5 <= elapsed <= margin(bound)
    net.netns.heal()
    assert rows(net, ns_db, "after") == 1


def test_black_hole_mid_statement_with_timeout_is_57014_and_applied_once(
    net: NamespacedCluster, local: Server, local_db: str, conn: Conn, ns_target: str, ns_db: str
) -> None:
    # Long keepalives: only the per-call timeout can end this wait early.
    install(conn, pgdblink_safe.Settings(connect_timeout_s=2))
    timeout = 1.0
    statement = "INSERT INTO items (note) SELECT 'mid timeout' FROM pg_sleep(4)"

    def work(other: Conn) -> tuple[float, Any, psycopg.Error | None]:
        ensure(other, ns_target)
        return timed(exec_, other, statement, timeout=f"{timeout}s")

    outcome = in_background(local, local_db, work)
    wait_until_running(net, ns_db, "mid timeout")
    net.netns.blackhole(net.port)
    elapsed, _, error = finish(outcome)["result"]
    record(
        f"detect: PG{major(net)} black hole mid-statement, timeout => {timeout}s: "
        f"{error.sqlstate if error else 'ok'} after {elapsed:.2f}s (bound {timeout + 1.5:.2f}s)"
    )
    assert error is not None and error.sqlstate == "57014", error
    assert "timed out after" in (error.diag.message_primary or "")
    assert timeout <= elapsed <= timeout + 1.5
    net.netns.heal()
    # The remote completes the statement it received; nothing ran it a second time.
    wait_until_idle(net, ns_db, "mid timeout")
    ensure(conn, ns_target)
    assert exec_(conn, "INSERT INTO items (note) VALUES ('next')") == "INSERT 0 1"
    assert (rows(net, ns_db, "mid timeout"), rows(net, ns_db, "next")) == (1, 1)


def test_black_hole_mid_statement_without_timeout_is_bounded_by_keepalives(
    net: NamespacedCluster, local: Server, local_db: str, conn: Conn, ns_target: str, ns_db: str
) -> None:
    s = install(conn, SMALL)
    statement = "INSERT INTO items (note) SELECT 'mid keepalive' FROM pg_sleep(3)"

    def work(other: Conn) -> tuple[float, Any, psycopg.Error | None]:
        ensure(other, ns_target)
        return timed(exec_, other, statement)

    outcome = in_background(local, local_db, work)
    wait_until_running(net, ns_db, "mid keepalive")
    net.netns.blackhole(net.port)
    holed = time.monotonic()
    result = finish(outcome)["result"]
    since_hole = time.monotonic() - holed
    elapsed, _, error = result
    bound = keepalive_bound(s, net)
    record(
        f"detect: PG{major(net)} black hole mid-statement, no timeout (keepalives, "
        f"tcp_user_timeout): {error.sqlstate if error else 'ok'} {since_hole:.2f}s after the "
        f"black hole, call {elapsed:.2f}s (bound {bound:.2f}s; {described(s)})"
    )
    # Lost after sending and not idempotent: the outcome is unknown, the handle closed.
    assert error is not None and error.sqlstate == "08007", error
    assert "SQLSTATE 08006" in (error.diag.message_detail or "")
    assert since_hole <= margin(bound)
    net.netns.heal()
    wait_until_idle(net, ns_db, "mid keepalive")
    ensure(conn, ns_target)
    assert exec_(conn, "INSERT INTO items (note) VALUES ('next')") == "INSERT 0 1"
    assert (rows(net, ns_db, "mid keepalive"), rows(net, ns_db, "next")) == (1, 1)


# -- resets ----------------------------------------------------------------------------------


def test_reset_idle_flow_is_replaced_at_once(
    net: NamespacedCluster, conn: Conn, ns_target: str, ns_db: str
) -> None:
    # The default (long) timeouts: a replacement that waited for one would take seconds.
    s = install(conn, pgdblink_safe.Settings(validation_window_ms=200))
    ensure(conn, ns_target)
    exec_(conn, "INSERT INTO items (note) VALUES ('before')")
    before = raw_remote_pid(conn)
    time.sleep(_IDLE_PAST)
    net.netns.reject(net.port, client_port=only_flow(net, ns_db))
    elapsed, status, error = timed(exec_, conn, "INSERT INTO items (note) VALUES ('after')")
    record(
        f"detect: PG{major(net)} idle flow reset, probe then reconnect: {elapsed * 1000:.1f} ms "
        f"(waits for no timeout: connect_timeout {s.connect_timeout_s}s)"
    )
    assert error is None, error
    assert status == "INSERT 0 1"
    assert elapsed < s.connect_timeout_s / 2
    assert net.netns.fault_packets() > 0
    assert raw_remote_pid(conn) != before
    assert listing(conn)["reconnects"] == 1
    assert rows(net, ns_db, "after") == 1


def test_reset_found_by_keepalive_is_replaced_before_sending(
    net: NamespacedCluster, conn: Conn, ns_target: str, ns_db: str
) -> None:
    # A long validation window: no probe. The keepalive meets the reset while idle, and the
    # next call reads the error before it sends anything, so even a write is safe to run.
    s = install(
        conn,
        pgdblink_safe.Settings(
            validation_window_ms=60_000, keepalives_idle_s=1, keepalives_interval_s=1
        ),
    )
    ensure(conn, ns_target)
    exec_(conn, "INSERT INTO items (note) VALUES ('before')")
    before = raw_remote_pid(conn)
    flow = only_flow(net, ns_db)
    net.netns.reject(net.port, client_port=flow)
    wait_for(
        lambda: not host_socket_open(net, flow),
        margin(s.keepalives_idle_s + s.keepalives_interval_s),
        "a keepalive probe to meet the reset",
    )
    net.netns.heal()
    elapsed, status, error = timed(exec_, conn, "INSERT INTO items (note) VALUES ('after')")
    record(
        f"recover: PG{major(net)} reset met by a keepalive while idle, then healed: next call "
        f"{elapsed * 1000:.1f} ms on a new connection"
    )
    assert error is None, error
    assert status == "INSERT 0 1"
    assert elapsed < s.connect_timeout_s / 2
    assert raw_remote_pid(conn) != before
    assert rows(net, ns_db, "after") == 1


@pytest.mark.parametrize("idempotent", [True, False], ids=["idempotent", "not-idempotent"])
def test_reset_on_the_hot_path(
    net: NamespacedCluster, conn: Conn, ns_target: str, ns_db: str, idempotent: bool
) -> None:
    # Within the validation window the statement itself meets the reset, after sending.
    s = install(conn, pgdblink_safe.Settings(validation_window_ms=60_000))
    ensure(conn, ns_target)
    exec_(conn, "INSERT INTO items (note) VALUES ('before')")
    net.netns.reject(net.port, client_port=only_flow(net, ns_db))
    note = f"hot {idempotent}"
    elapsed, status, error = timed(insert, conn, note, idempotent=idempotent)
    record(
        f"detect: PG{major(net)} reset on the hot path, idempotent={idempotent}: "
        f"{'ok' if error is None else error.sqlstate} after {elapsed * 1000:.1f} ms"
    )
    assert elapsed < s.connect_timeout_s / 2
    if idempotent:
        assert error is None, error
        assert status == "INSERT 0 1"
        assert rows(net, ns_db, note) == 1
    else:
        # The reset answered the packet that carried it, but the toolkit cannot know that.
        assert error is not None and error.sqlstate == "08007", error
        assert rows(net, ns_db, note) == 0
        net.netns.heal()
        assert exec_(conn, "INSERT INTO items (note) VALUES ('next')") == "INSERT 0 1"


def test_refused_then_healed(
    net: NamespacedCluster, conn: Conn, ns_target: str, ns_db: str
) -> None:
    s = install(
        conn, pgdblink_safe.Settings(validation_window_ms=200, max_attempts=3, backoff_max_ms=200)
    )
    ensure(conn, ns_target)
    exec_(conn, "INSERT INTO items (note) VALUES ('before')")
    before = raw_remote_pid(conn)
    time.sleep(_IDLE_PAST)
    net.netns.reject(net.port)
    elapsed, _, error = timed(exec_, conn, "INSERT INTO items (note) VALUES ('refused')")
    record(
        f"detect: PG{major(net)} every connection reset/refused: 08001 after "
        f"{elapsed * 1000:.0f} ms ({s.max_attempts} attempts, backoff up to {s.backoff_max_ms} ms)"
    )
    assert error is not None and error.sqlstate == "08001", error
    assert f"{s.max_attempts} attempt(s) in" in (error.diag.message_detail or "")
    assert elapsed < s.connect_timeout_s / 2
    net.netns.heal()
    elapsed, status, error = timed(exec_, conn, "INSERT INTO items (note) VALUES ('back')")
    record(f"recover: PG{major(net)} first call after the resets stopped: {elapsed * 1000:.1f} ms")
    assert error is None, error
    assert status == "INSERT 0 1"
    assert elapsed < s.connect_timeout_s / 2
    assert raw_remote_pid(conn) != before
    assert (rows(net, ns_db, "refused"), rows(net, ns_db, "back")) == (0, 1)


# -- latency (userspace proxy) ----------------------------------------------------------------


@pytest.fixture
def slow_link(local: Server, remote: Server) -> Iterator[TcpProxy]:
    if not isinstance(local, LocalCluster) or not isinstance(remote, LocalCluster):
        pytest.skip("dblink through the proxy needs both servers on this host")
    with TcpProxy(remote.host, remote.port) as proxy:
        yield proxy


def test_slow_but_alive_link_is_not_taken_for_dead(
    slow_link: TcpProxy, conn: Conn, remote: Server, remote_db: str
) -> None:
    one_way = 150
    s = install(conn, pgdblink_safe.Settings(validation_window_ms=100))
    ensure(conn, remote.conninfo(remote_db, host=slow_link.host, port=str(slow_link.port)))
    exec_(conn, "INSERT INTO items (note) VALUES ('fast')")
    before = raw_remote_pid(conn)
    slow_link.set_latency(one_way)
    rtt = 2 * one_way / 1000
    # Idle past the window: a probe and then the statement, each a round trip longer than
    # the window itself.
    time.sleep(s.validation_window_ms / 1000 + 0.1)
    elapsed, status, error = timed(exec_, conn, "INSERT INTO items (note) VALUES ('slow')")
    record(
        f"latency: PG{major(remote)} probe + statement through {one_way} ms one-way: "
        f"{elapsed:.2f}s (at least {2 * rtt:.2f}s), validation window {s.validation_window_ms} ms"
    )
    assert error is None, error
    assert status == "INSERT 0 1"
    assert elapsed >= 2 * rtt
    # A statement that runs longer than the window, with a per-call timeout above the RTT.
    elapsed, status, error = timed(
        exec_, conn, "DO $$BEGIN PERFORM pg_sleep(0.3); END$$", timeout="10s"
    )
    record(
        f"latency: PG{major(remote)} 0.3 s statement with timeout => 10s through {one_way} ms "
        f"one-way: {elapsed:.2f}s (at least {0.3 + rtt:.2f}s)"
    )
    assert error is None, error
    assert elapsed >= 0.3 + rtt
    state = listing(conn)
    assert (state["reconnects"], state["last_validation_ok"]) == (0, True)
    assert raw_remote_pid(conn) == before
    assert rows(remote, remote_db, "slow") == 1


def test_per_call_timeout_bounds_a_call_on_a_slow_link(
    slow_link: TcpProxy, conn: Conn, remote: Server, remote_db: str
) -> None:
    one_way = 100
    install(conn, pgdblink_safe.Settings(validation_window_ms=100))
    ensure(conn, remote.conninfo(remote_db, host=slow_link.host, port=str(slow_link.port)))
    slow_link.set_latency(one_way)
    timeout = 1.0
    elapsed, _, error = timed(
        exec_, conn, "DO $$BEGIN PERFORM pg_sleep(5); END$$", timeout=f"{timeout}s"
    )
    record(
        f"latency: PG{major(remote)} timeout => {timeout}s on a 5 s statement through "
        f"{one_way} ms one-way: {error.sqlstate if error else 'ok'} after {elapsed:.2f}s"
    )
    assert error is not None and error.sqlstate == "57014", error
    assert elapsed >= timeout
    # Ended by the timeout, long before the statement could have answered.
    assert elapsed < timeout + 2.0
    assert exec_(conn, "INSERT INTO items (note) VALUES ('after')", timeout="10s") == "INSERT 0 1"
    assert rows(remote, remote_db, "after") == 1


def test_a_crashed_run_leaves_nothing_behind(ns_remote: NamespacedCluster) -> None:
    """A namespace left by a process that is gone is deleted by the next run's set-up."""
    child = subprocess.Popen(["true"])
    child.wait(10)
    stale = NetNamespace(pid=child.pid).create()
    # What a crashed run leaves running in its namespace (its server) is ended too.
    leftover = subprocess.Popen(stale.exec_args("sleep", "60"))
    try:
        wait_for(lambda: netns.namespace_pids(stale.name), 10, "a process in the namespace")
        assert stale.name in netns.namespaces()
        assert netns.cleanup_stale() == [stale.name]
        assert leftover.wait(10) != 0
        assert stale.name not in netns.namespaces()
        assert not netns.link_exists(stale.host_if)
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait(10)
        stale.delete()
    # This run's namespace stays.
    assert ns_remote.netns.name in netns.namespaces()
