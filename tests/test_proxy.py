"""The fault-injection TCP proxy, checked against the real remote server."""

import hashlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from proxy import TcpProxy
from psycopg import sql
from report import record
from servers import LocalCluster, Server, wait_for

# Bounds every wait below: long enough for a loaded machine, short enough to fail fast.
_PATIENCE = 10.0


@pytest.fixture
def proxy(remote: Server) -> Iterator[TcpProxy]:
    with TcpProxy(remote.host, remote.port) as running:
        yield running


def _through(proxy: TcpProxy, remote: Server, remote_db: str) -> str:
    return remote.conninfo(remote_db, host=proxy.host, port=str(proxy.port))


def _connect(proxy: TcpProxy, remote: Server, remote_db: str) -> psycopg.Connection[Any]:
    return psycopg.connect(_through(proxy, remote, remote_db), autocommit=True, connect_timeout=5)


class _Background(threading.Thread):
    """Runs ``work`` on its own thread, so the test can wait for it with a deadline."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._work = work
        self.result: Any = None
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            self.result = self._work()
        except Exception as exc:  # reported by the test, not lost on this thread
            self.error = exc


def _remote_queries(remote: Server, marker: str) -> list[Any]:
    return remote.execute(
        sql.SQL(
            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE {}"
        ).format(sql.Literal(f"%{marker}%"))
    )


def test_queries_pass_through_to_the_remote(
    proxy: TcpProxy, remote: Server, remote_db: str
) -> None:
    with _connect(proxy, remote, remote_db) as conn:
        proxy.wait_for_connections(1, _PATIENCE)
        row = conn.execute("SELECT current_database(), inet_server_port()").fetchone()
        assert row == (remote_db, remote.port)
        # Several megabytes each way cross the proxy's back-pressure limit unchanged.
        payload = os.urandom(3 << 20).hex()
        echoed = conn.execute("SELECT %s::text, md5(%s)", [payload, payload]).fetchone()
        assert echoed == (payload, hashlib.md5(payload.encode()).hexdigest())
        assert proxy.connections == 1
    wait_for(lambda: proxy.connections == 0, _PATIENCE, "the proxy to see the client leave")
    assert proxy.accepted == 1


def test_wait_for_connections_times_out(proxy: TcpProxy) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="0 connection"):
        proxy.wait_for_connections(1, timeout=0.2)
    assert time.monotonic() - started < 2


def test_stall_holds_a_query_until_resume(proxy: TcpProxy, remote: Server, remote_db: str) -> None:
    with _connect(proxy, remote, remote_db) as conn:
        proxy.stall()
        # statement_timeout could not bound this wait: the server never receives the query.
        query = _Background(lambda: conn.execute("SELECT 'stalled-marker', 6 * 7").fetchall())
        query.start()
        try:
            query.join(1.0)
            assert query.is_alive(), f"the query answered through a stall: {query.result}"
            assert _remote_queries(remote, "stalled-marker") == []
            assert proxy.connections == 1
            proxy.resume()
            query.join(_PATIENCE)
            assert not query.is_alive(), "the query did not finish after resume()"
        finally:
            if query.is_alive():  # a failure above: cut() unblocks the thread
                proxy.cut()
                query.join(_PATIENCE)
        assert query.error is None
        assert query.result == [("stalled-marker", 42)]


def test_stall_accepts_new_connections_but_does_not_answer(
    proxy: TcpProxy, remote: Server, remote_db: str
) -> None:
    proxy.stall()
    connecting = _Background(lambda: _connect(proxy, remote, remote_db))
    connecting.start()
    try:
        proxy.wait_for_connections(1, _PATIENCE)
        connecting.join(1.0)
        assert connecting.is_alive(), f"connected through a stall: {connecting.error}"
        assert proxy.accepted == 1
        # Only now does the proxy dial the remote and hand it the startup packet it held.
        proxy.resume()
        connecting.join(_PATIENCE)
        assert not connecting.is_alive(), "the connection did not complete after resume()"
    finally:
        if connecting.is_alive():  # a failure above: cut() unblocks the thread
            proxy.cut()
            connecting.join(_PATIENCE)
    assert connecting.error is None
    conn = connecting.result
    assert isinstance(conn, psycopg.Connection)
    with conn:
        assert conn.execute("SELECT current_database()").fetchone() == (remote_db,)


def test_cut_resets_both_sides_and_keeps_listening(
    proxy: TcpProxy, remote: Server, remote_db: str
) -> None:
    with _connect(proxy, remote, remote_db) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        backend = row[0]
        proxy.cut()
        assert proxy.connections == 0
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
        assert conn.broken
    # The remote backend saw the reset too and went away.
    wait_for(
        lambda: backend not in remote.backend_pids(remote_db),
        _PATIENCE,
        f"remote backend {backend} to exit",
    )
    with _connect(proxy, remote, remote_db) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_refuse_fails_connects_fast_and_accept_restores_the_same_port(
    proxy: TcpProxy, remote: Server, remote_db: str
) -> None:
    port = proxy.port
    with _connect(proxy, remote, remote_db) as open_conn:
        proxy.refuse()
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError, match=r"(?i)connection refused"):
            _connect(proxy, remote, remote_db).close()
        assert time.monotonic() - started < 2
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((proxy.host, port), timeout=2).close()
        # Connections made before refuse() are not touched by it.
        assert open_conn.execute("SELECT 2").fetchone() == (2,)
        proxy.accept()
        assert proxy.port == port
        with _connect(proxy, remote, remote_db) as conn:
            assert conn.execute("SELECT 3").fetchone() == (3,)
        assert proxy.accepted == 2


def test_close_resets_connections_and_stops_listening(remote: Server, remote_db: str) -> None:
    with TcpProxy(remote.host, remote.port) as proxy, _connect(proxy, remote, remote_db) as conn:
        port = proxy.port
        proxy.close()
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert not [t for t in threading.enumerate() if t.name == f"tcp-proxy-{port}"]
    with pytest.raises(RuntimeError, match="closed"):
        proxy.stall()


@pytest.fixture
def local_server(local: Server) -> Server:
    # A server in a container or elsewhere cannot reach this process's 127.0.0.1.
    if not isinstance(local, LocalCluster):
        pytest.skip("dblink through the proxy needs a local server on this host")
    return local


def test_dblink_from_the_local_server_goes_through_the_proxy(
    proxy: TcpProxy, local_server: Server, local_db: str, remote: Server, remote_db: str
) -> None:
    target = _through(proxy, remote, remote_db)
    with local_server.connect(local_db) as conn:
        rows = conn.execute(
            "SELECT * FROM public.dblink(%s, 'SELECT current_database()::text, "
            "inet_server_port()') AS t(db text, port int)",
            [target],
        ).fetchall()
        assert rows == [(remote_db, remote.port)]
        assert proxy.accepted == 1
        # A persistent dblink connection fails on its next use once the proxy cuts it.
        conn.execute("SELECT public.dblink_connect('through_proxy', %s)", [target])
        proxy.wait_for_connections(1, _PATIENCE)
        proxy.cut()
        # 08006; dblink(...) with libpq 14 or older (the one the server loads) fails the send
        # instead: XX000 "could not send query: server closed the connection unexpectedly".
        with pytest.raises(
            (psycopg.errors.ConnectionFailure, psycopg.errors.InternalError_),
            match="closed the connection",
        ):
            conn.execute("SELECT * FROM public.dblink('through_proxy', 'SELECT 1') AS t(x int)")
        # Only the dblink connection broke; the local session goes on.
        assert conn.execute("SELECT public.dblink_disconnect('through_proxy')").fetchone() == (
            "OK",
        )


def _round_trip(conn: psycopg.Connection[Any], query: str) -> float:
    started = time.monotonic()
    conn.execute(query).fetchall()
    return time.monotonic() - started


def test_latency_delays_each_direction(remote: Server, remote_db: str) -> None:
    one_way = 50
    with (
        TcpProxy(remote.host, remote.port, latency_ms=one_way) as proxy,
        _connect(proxy, remote, remote_db) as conn,
    ):
        # A round trip crosses the proxy twice: at least twice the one-way latency.
        samples = [_round_trip(conn, "SELECT 1") for _ in range(5)]
        record(
            f"latency: psycopg round trip through a {one_way} ms proxy: "
            f"min {min(samples) * 1000:.0f} ms, max {max(samples) * 1000:.0f} ms "
            f"(at least {2 * one_way} ms)"
        )
        assert min(samples) >= 2 * one_way / 1000
        # Many delayed chunks each way arrive whole and in order.
        payload = os.urandom(1 << 20).hex()
        echoed = conn.execute("SELECT %s::text, md5(%s)", [payload, payload]).fetchone()
        assert echoed == (payload, hashlib.md5(payload.encode()).hexdigest())
        # Lowering the latency while bytes are held back keeps them in order.
        lower = threading.Timer(0.05, proxy.set_latency, [0])
        proxy.set_latency(300)
        lower.start()
        try:
            echoed = conn.execute("SELECT %s::text, md5(%s)", [payload, payload]).fetchone()
        finally:
            lower.join(_PATIENCE)
        assert echoed == (payload, hashlib.md5(payload.encode()).hexdigest())
        assert conn.execute("SELECT 2").fetchone() == (2,)
    with pytest.raises(ValueError, match="latency_ms"):
        TcpProxy(remote.host, remote.port, latency_ms=-1)


def test_latency_slows_a_dblink_round_trip_from_the_local_server(
    local_server: Server, local_db: str, remote: Server, remote_db: str
) -> None:
    one_way = 50
    with (
        TcpProxy(remote.host, remote.port) as proxy,
        local_server.connect(local_db) as conn,
    ):
        conn.execute(
            "SELECT public.dblink_connect('slow', %s)", [_through(proxy, remote, remote_db)]
        )
        query = "SELECT * FROM public.dblink('slow', 'SELECT 1') AS t(x int)"
        direct = min(_round_trip(conn, query) for _ in range(3))
        proxy.set_latency(one_way)
        slowed = min(_round_trip(conn, query) for _ in range(3))
        record(
            f"latency: dblink round trip through a {one_way} ms proxy: {slowed * 1000:.0f} ms "
            f"(at least {2 * one_way} ms; {direct * 1000:.1f} ms without latency)"
        )
        assert slowed >= 2 * one_way / 1000
        conn.execute("SELECT public.dblink_disconnect('slow')")
