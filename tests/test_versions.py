"""What differs between PostgreSQL versions, and what the toolkit does about it.

- Up to 15 dblink connects with libpq's blocking call, which honours connect_timeout; it
  cannot be interrupted. From 16 on the connect can be interrupted (a cancel, the caller's
  statement_timeout), but connect_timeout is not applied: migration 0006 caps
  tcp_user_timeout at connect_timeout there, which bounds a connect to a host that drops
  packets (see test_network.py). A peer that accepts the connection and then says nothing
  is bounded on 16+ only by the caller's statement_timeout.
- A dblink call waiting for a result can be cancelled (statement_timeout, pg_cancel_backend)
  on 17+ and on the minor releases 14.18, 15.13 and 16.9 and later. The toolkit's own
  per-call timeout polls instead, so it bounds the call on every version.

A stalled TCP proxy plays the silent peer: it accepts connections and forwards nothing.
"""

from collections.abc import Iterator

import pytest
from calls import Conn, ensure, exec_, rows, timed
from proxy import TcpProxy
from servers import Server

import pgdblink_safe
from pgdblink_safe.settings import Settings

CONNECT_TIMEOUT_S = 2


@pytest.fixture
def quick(conn: Conn) -> Conn:
    """The toolkit installed with a 2 s connect_timeout."""
    pgdblink_safe.install(conn, Settings(connect_timeout_s=CONNECT_TIMEOUT_S))
    return conn


@pytest.fixture
def proxy(remote: Server) -> Iterator[TcpProxy]:
    with TcpProxy(remote.host, remote.port) as running:
        yield running


def through(proxy: TcpProxy, remote: Server, remote_db: str) -> str:
    return remote.conninfo(remote_db, host=proxy.host, port=str(proxy.port))


@pytest.mark.pg(max=15, reason="dblink connects with libpq's blocking call")
def test_connect_to_a_silent_peer_ends_at_connect_timeout(
    quick: Conn, proxy: TcpProxy, remote: Server, remote_db: str
) -> None:
    proxy.stall()
    elapsed, _, error = timed(ensure, quick, through(proxy, remote, remote_db), max_attempts=1)
    assert error is not None and error.sqlstate == "08001", error
    assert "timeout expired" in (error.diag.message_detail or ""), error.diag.message_detail
    print(f"connect to a silent peer: 08001 after {elapsed:.2f}s (connect_timeout 2s)")
    assert CONNECT_TIMEOUT_S - 0.5 <= elapsed < CONNECT_TIMEOUT_S + 8


@pytest.mark.pg(min=16, reason="dblink connects without blocking and applies no connect_timeout")
def test_connect_to_a_silent_peer_waits_for_the_callers_statement_timeout(
    quick: Conn, proxy: TcpProxy, remote: Server, remote_db: str
) -> None:
    proxy.stall()
    quick.execute("SET statement_timeout = '3s'")
    elapsed, _, error = timed(ensure, quick, through(proxy, remote, remote_db), max_attempts=1)
    quick.execute("RESET statement_timeout")
    # Still connecting after connect_timeout; the caller's statement_timeout ended it.
    assert error is not None and error.sqlstate == "57014", error
    print(f"connect to a silent peer: 57014 after {elapsed:.2f}s (statement_timeout 3s)")
    assert elapsed >= CONNECT_TIMEOUT_S + 0.5
    proxy.resume()
    target = through(proxy, remote, remote_db)
    assert (
        quick.execute("SELECT dblink_safe.ensure_dblink_conn('r', %s)", [target]).fetchone()
        is not None
    )
    assert exec_(quick, "INSERT INTO items (note) VALUES ('x')") == "INSERT 0 1"


def _cancellable(local: Server) -> bool:
    """Whether a dblink call waiting for its result reacts to a cancel on this release."""
    num = local.version_num
    fixed_in = {14: 140018, 15: 150013, 16: 160009}
    return num >= 170000 or num >= fixed_in.get(num // 10000, 10**9)


def test_cancel_of_a_wrapper_call_waiting_without_timeout(
    local: Server, quick: Conn, proxy: TcpProxy, remote: Server, remote_db: str
) -> None:
    if not _cancellable(local):
        pytest.skip("a waiting dblink call ignores cancels before 14.18, 15.13, 16.9 and 17")
    target = through(proxy, remote, remote_db)
    ensure(quick, target)
    proxy.stall()
    quick.execute("SET statement_timeout = '1500ms'")
    elapsed, _, error = timed(exec_, quick, "SELECT 1", idempotent=True)
    quick.execute("RESET statement_timeout")
    assert error is not None and error.sqlstate == "57014", error
    assert elapsed < 1.5 + 8
    proxy.resume()
    # The cancelled call left its result uncollected: the next call replaces the connection.
    assert exec_(quick, "INSERT INTO items (note) VALUES ('after')") == "INSERT 0 1"
    assert rows(remote, remote_db, "after") == 1


def test_per_call_timeout_bounds_a_silent_peer_on_every_version(
    quick: Conn, proxy: TcpProxy, remote: Server, remote_db: str
) -> None:
    target = through(proxy, remote, remote_db)
    ensure(quick, target)
    proxy.stall()
    elapsed, _, error = timed(exec_, quick, "SELECT 1", timeout="1 second")
    assert error is not None and error.sqlstate == "57014", error
    assert 1.0 <= elapsed < 1.0 + 8
