"""A TCP proxy for tests that can stall, cut or refuse the connections it carries on demand,
and add latency to them."""

import contextlib
import errno
import os
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

_CHUNK = 65536
# Stop reading from a side once this much is queued for the other, so a slow reader
# pushes back on a fast writer instead of growing the proxy's memory.
_HIGH_WATER = 1 << 20
_CALL_TIMEOUT = 10.0
_LINGER_RESET = struct.pack("ii", 1, 0)
_WAKE = object()
_LISTEN = object()


def _reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN, as a crashed host or a middlebox would."""
    # The peer may have reset the socket already; closing is all that is left then.
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


class _Delayed:
    """Bytes read from one side and held back until they are due for the other, in order."""

    def __init__(self) -> None:
        self.chunks: deque[tuple[float, bytes]] = deque()
        self.size = 0

    def put(self, due: float, data: bytes) -> None:
        # Never due before what is already queued: a lowered latency must not reorder bytes.
        if self.chunks:
            due = max(due, self.chunks[-1][0])
        self.chunks.append((due, data))
        self.size += len(data)

    def next_due(self) -> float | None:
        return self.chunks[0][0] if self.chunks else None

    def release(self, now: float, into: bytearray) -> bool:
        """Move what is due by ``now`` to ``into``; whether anything moved."""
        moved = False
        while self.chunks and self.chunks[0][0] <= now:
            data = self.chunks.popleft()[1]
            self.size -= len(data)
            into += data
            moved = True
        return moved


class _Pipe:
    """One client connection, its upstream twin and the bytes in flight each way."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.connecting = False
        self.to_upstream = bytearray()
        self.to_client = bytearray()
        # Read but not yet due (with an added latency), then appended to the buffers above.
        self.delayed_up = _Delayed()
        self.delayed_down = _Delayed()
        self.client_eof = False
        self.upstream_eof = False
        self.upstream_shut = False
        self.client_shut = False

    def sockets(self) -> list[socket.socket]:
        return [self.client] if self.upstream is None else [self.client, self.upstream]

    @property
    def finished(self) -> bool:
        return self.client_shut and self.upstream_shut


class _Call:
    """A control function for the loop thread to run, and the caller's wait for it."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except Exception as exc:  # handed to the calling thread, which raises it
            self.error = exc
        finally:
            self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


class TcpProxy:
    """Forward TCP connections from ``host:port`` to a target, with faults injected on demand.

    It listens from construction on; use it as a context manager or call ``close()``. One
    selector thread does all socket work and the controls hand it a function and wait until
    it ran, so the fault is in place when ``stall()``, ``cut()`` and the others return.

    ``latency_ms`` (or ``set_latency()``) delays every chunk read from either side by that
    much before it is forwarded, in order: a round trip through the proxy takes at least
    twice as long. A FIN follows the data read before it.
    """

    def __init__(
        self, target_host: str, target_port: int, host: str = "127.0.0.1", latency_ms: float = 0
    ) -> None:
        _check_latency(latency_ms)
        # Resolved once here so the loop thread never blocks on name lookups.
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            target_host, target_port, type=socket.SOCK_STREAM
        )[0]
        self._target: tuple[socket.AddressFamily, socket.SocketKind, int, Any] = (
            family,
            kind,
            proto,
            sockaddr,
        )
        self._host = host
        self._port = 0
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[_Call] = []
        self._loop_finished = False
        self._open = 0
        self._accepted = 0
        self._error: BaseException | None = None
        self._closed = False
        # Touched only by the loop thread once it runs.
        self._pipes: set[_Pipe] = set()
        self._masks: dict[socket.socket, int] = {}
        self._stalled = False
        self._latency = latency_ms / 1000.0
        self._stopping = False
        self._listener: socket.socket | None = None
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        try:
            self._wake_r.setblocking(False)
            self._wake_w.setblocking(False)
            self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
            self._listen()
        except BaseException:
            self._release()
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"tcp-proxy-{self._port}", daemon=True
        )
        self._thread.start()

    # -- the test thread's side -------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def connections(self) -> int:
        """Client connections open now (accepted and not yet closed by either side or ``cut``)."""
        with self._lock:
            return self._open

    @property
    def accepted(self) -> int:
        """Client connections accepted since the proxy started."""
        with self._lock:
            return self._accepted

    def wait_for_connections(self, count: int, timeout: float = 10.0) -> None:
        """Block until at least ``count`` connections are open; TimeoutError after ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._open >= count, timeout):
                raise TimeoutError(
                    f"{self._open} connection(s) open through the proxy after {timeout:g}s, "
                    f"wanted {count}"
                )

    def set_latency(self, latency_ms: float) -> None:
        """Delay each chunk by ``latency_ms`` from now on; bytes already held keep their order."""
        _check_latency(latency_ms)
        self._call(lambda: setattr(self, "_latency", latency_ms / 1000.0))

    def stall(self) -> None:
        """Keep every connection open but forward nothing either way, new ones included."""
        self._call(self._do_stall)

    def resume(self) -> None:
        """Forward again, starting with whatever waited during the stall."""
        self._call(self._do_resume)

    def cut(self) -> None:
        """Reset every open connection on both sides; new connections are still accepted."""
        self._call(self._do_cut)

    def refuse(self) -> None:
        """Close the listening socket so connects are refused; open connections carry on."""
        self._call(self._do_refuse)

    def accept(self) -> None:
        """Listen again, on the same port, after ``refuse()``."""
        self._call(self._do_accept)

    def close(self) -> None:
        """Reset every connection, stop listening and join the loop thread; safe to repeat."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop is gone already
                self._call(self._do_stop)
            self._thread.join(_CALL_TIMEOUT)
            if self._thread.is_alive():
                raise RuntimeError(f"the proxy loop did not stop within {_CALL_TIMEOUT:g}s")
        self._release()
        if self._error is not None:
            raise RuntimeError("the proxy loop failed") from self._error

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, fn: Callable[[], None]) -> None:
        call = _Call(fn)
        with self._lock:
            if self._loop_finished:
                raise RuntimeError("the proxy is closed")
            self._calls.append(call)
        with contextlib.suppress(BlockingIOError):  # a full pipe means a wake-up is pending
            self._wake_w.send(b"\0")
        if not call.done.wait(_CALL_TIMEOUT):
            raise RuntimeError(f"the proxy loop did not answer within {_CALL_TIMEOUT:g}s")
        if call.error is not None:
            raise call.error

    def _release(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- the loop thread's side -------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stopping:
                for key, mask in self._selector.select(self._until_due()):
                    self._dispatch(key, mask)
                self._release_due()
        except BaseException as exc:  # kept for close() to raise: a bug here must fail the test
            self._error = exc
        finally:
            with self._lock:
                self._loop_finished = True
                calls, self._calls = self._calls, []
            for call in calls:
                call.fail(RuntimeError("the proxy is closed"))
            for pipe in list(self._pipes):
                self._drop(pipe, reset=True)
            self._do_refuse()

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data is _WAKE:
            self._on_wake()
        elif key.data is _LISTEN:
            self._on_accept()
        elif isinstance(key.data, _Pipe) and key.fileobj in self._masks:
            # The membership test skips events of a pipe dropped earlier in the same batch.
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            self._on_pipe(key.data, sock, mask)

    def _on_wake(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while self._wake_r.recv(4096):
                pass
        with self._lock:
            calls, self._calls = self._calls, []
        for call in calls:
            call.run()

    def _until_due(self) -> float | None:
        """How long the selector may sleep before a delayed chunk is due (None: no limit)."""
        dues = [
            due
            for pipe in self._pipes
            for due in (pipe.delayed_up.next_due(), pipe.delayed_down.next_due())
            if due is not None
        ]
        return max(0.0, min(dues) - time.monotonic()) if dues else None

    def _release_due(self) -> None:
        now = time.monotonic()
        for pipe in list(self._pipes):
            up = pipe.delayed_up.release(now, pipe.to_upstream)
            down = pipe.delayed_down.release(now, pipe.to_client)
            if (up or down) and pipe.upstream is not None and not pipe.connecting:
                try:
                    self._pass_on_eof(pipe)
                except OSError:
                    self._drop(pipe, reset=True)
                    continue
                self._update(pipe)

    def _listen(self) -> None:
        # create_server sets SO_REUSEADDR, which accept() needs to take the same port back
        # while connections accepted on it are still open or in TIME_WAIT.
        listener = socket.create_server((self._host, self._port), backlog=64)
        try:
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, _LISTEN)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        self._port = listener.getsockname()[1]

    def _on_accept(self) -> None:
        assert self._listener is not None
        while True:
            try:
                client, _ = self._listener.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            client.setblocking(False)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pipe = _Pipe(client)
            self._pipes.add(pipe)
            with self._changed:
                self._open += 1
                self._accepted += 1
                self._changed.notify_all()
            if self._stalled:
                # Connected upstream only on resume: an idle upstream would time out meanwhile.
                self._update(pipe)
            else:
                self._connect(pipe)

    def _connect(self, pipe: _Pipe) -> None:
        family, kind, proto, sockaddr = self._target
        try:
            upstream = socket.socket(family, kind, proto)
            pipe.upstream = upstream
            upstream.setblocking(False)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = upstream.connect_ex(sockaddr)
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
        except OSError:
            # The client sees the unreachable target as a reset, which is what it would get
            # from a middlebox in front of a dead server.
            self._drop(pipe, reset=True)
            return
        pipe.connecting = err != 0
        self._update(pipe)

    def _on_pipe(self, pipe: _Pipe, sock: socket.socket, mask: int) -> None:
        try:
            if pipe.connecting:
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                pipe.connecting = False
            else:
                if mask & selectors.EVENT_WRITE:
                    self._send(pipe, sock)
                if mask & selectors.EVENT_READ:
                    self._receive(pipe, sock)
                self._pass_on_eof(pipe)
        except OSError:
            # A reset (or refused) peer: pass it on to the other side the same way.
            self._drop(pipe, reset=True)
            return
        if pipe.finished:
            self._drop(pipe, reset=False)
        else:
            self._update(pipe)

    def _send(self, pipe: _Pipe, sock: socket.socket) -> None:
        buffer = pipe.to_client if sock is pipe.client else pipe.to_upstream
        with contextlib.suppress(BlockingIOError):
            del buffer[: sock.send(buffer)]

    def _receive(self, pipe: _Pipe, sock: socket.socket) -> None:
        try:
            data = sock.recv(_CHUNK)
        except BlockingIOError:
            return
        if sock is pipe.client:
            self._forward(pipe.delayed_up, pipe.to_upstream, data)
            pipe.client_eof = not data
        else:
            self._forward(pipe.delayed_down, pipe.to_client, data)
            pipe.upstream_eof = not data

    def _forward(self, delayed: _Delayed, buffer: bytearray, data: bytes) -> None:
        if not data:
            return
        if self._latency > 0 or delayed.chunks:
            delayed.put(time.monotonic() + self._latency, data)
        else:
            buffer += data

    def _pass_on_eof(self, pipe: _Pipe) -> None:
        """Half-close a side once the other side's FIN and every byte before it got there."""
        assert pipe.upstream is not None
        if (
            pipe.client_eof
            and not pipe.to_upstream
            and not pipe.delayed_up.chunks
            and not pipe.upstream_shut
        ):
            pipe.upstream.shutdown(socket.SHUT_WR)
            pipe.upstream_shut = True
        if (
            pipe.upstream_eof
            and not pipe.to_client
            and not pipe.delayed_down.chunks
            and not pipe.client_shut
        ):
            pipe.client.shutdown(socket.SHUT_WR)
            pipe.client_shut = True

    def _update(self, pipe: _Pipe) -> None:
        """Watch each socket of ``pipe`` for what it can do now."""
        client = upstream = 0
        if pipe.upstream is None:
            pass
        elif pipe.connecting:
            upstream = selectors.EVENT_WRITE
        elif not self._stalled:
            if not pipe.client_eof and len(pipe.to_upstream) + pipe.delayed_up.size < _HIGH_WATER:
                client |= selectors.EVENT_READ
            if pipe.to_client:
                client |= selectors.EVENT_WRITE
            if not pipe.upstream_eof and len(pipe.to_client) + pipe.delayed_down.size < _HIGH_WATER:
                upstream |= selectors.EVENT_READ
            if pipe.to_upstream:
                upstream |= selectors.EVENT_WRITE
        self._watch(pipe.client, client, pipe)
        if pipe.upstream is not None:
            self._watch(pipe.upstream, upstream, pipe)

    def _watch(self, sock: socket.socket, mask: int, pipe: _Pipe) -> None:
        old = self._masks.get(sock, 0)
        if mask == old:
            return
        if not old:
            self._selector.register(sock, mask, pipe)
        elif not mask:
            self._selector.unregister(sock)
        else:
            self._selector.modify(sock, mask, pipe)
        if mask:
            self._masks[sock] = mask
        else:
            del self._masks[sock]

    def _forget(self, sock: socket.socket) -> None:
        # Unregistered before closing: epoll would keep a closed descriptor's stale entry.
        if self._masks.pop(sock, 0):
            self._selector.unregister(sock)

    def _drop(self, pipe: _Pipe, reset: bool) -> None:
        for sock in pipe.sockets():
            self._forget(sock)
            if reset:
                _reset(sock)
            else:
                sock.close()
        if pipe in self._pipes:
            self._pipes.remove(pipe)
            with self._changed:
                self._open -= 1
                self._changed.notify_all()

    def _do_stall(self) -> None:
        self._stalled = True
        for pipe in self._pipes:
            self._update(pipe)

    def _do_resume(self) -> None:
        self._stalled = False
        for pipe in list(self._pipes):
            if pipe.upstream is None:
                self._connect(pipe)
            else:
                self._update(pipe)

    def _do_cut(self) -> None:
        for pipe in list(self._pipes):
            self._drop(pipe, reset=True)

    def _do_refuse(self) -> None:
        if self._listener is not None:
            self._selector.unregister(self._listener)
            self._listener.close()
            self._listener = None

    def _do_accept(self) -> None:
        if self._listener is None:
            self._listen()

    def _do_stop(self) -> None:
        self._stopping = True


def _check_latency(latency_ms: float) -> None:
    if isinstance(latency_ms, bool) or not 0 <= latency_ms <= 60_000:
        raise ValueError(f"latency_ms must be from 0 to 60000, not {latency_ms!r}")
