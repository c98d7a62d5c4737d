"""A bounded load driver: sessions calling dblink through the wrappers (or raw) for a fixed time.

Each session is a thread with its own connection to the local server and one dblink
connection named ``w``. It cycles through three calls and keeps what it saw:

- an idempotent upsert of its own key in ``kv`` (the value is the call's sequence number);
- a non-idempotent insert into ``ledger`` of (phase, session, seq), with ``resolve => true``;
- an idempotent read of its own ``ledger`` count, which must equal the inserts that succeeded.

A chaos thread meanwhile breaks connections the way production does. Afterwards the remote
tables are compared with what the sessions saw.
"""

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
from calls import Conn, ensure, exec_, query_value
from psycopg import sql
from servers import Server

#: Remote tables the driver writes to (created by ``prepare_remote``).
REMOTE_SCHEMA = """
CREATE TABLE ledger (phase text NOT NULL, session integer NOT NULL, seq integer NOT NULL);
CREATE TABLE kv (phase text NOT NULL, session integer NOT NULL, v integer NOT NULL,
                 PRIMARY KEY (phase, session));
"""


def prepare_remote(remote: Server, dbname: str) -> None:
    with remote.connect(dbname) as conn:
        conn.execute(REMOTE_SCHEMA)


@dataclass
class SessionResult:
    """What one session did and saw."""

    index: int
    calls: int = 0
    upserts_ok: int = 0
    last_upsert: int = 0
    inserts_ok: list[int] = field(default_factory=list)
    inserts_failed: dict[int, str] = field(default_factory=dict)
    failure_messages: list[str] = field(default_factory=list)
    reads_ok: int = 0
    #: Unexpected errors of calls that must not fail: (seq, what, SQLSTATE, message).
    errors: list[tuple[int, str, str, str]] = field(default_factory=list)
    #: Reads whose count differed from the inserts known to have succeeded: (seq, seen, known).
    mismatches: list[tuple[int, int, int]] = field(default_factory=list)
    max_latency: float = 0.0
    slowest: str = ""
    #: dblink_get_connections() of the session when the run ended.
    open_names: list[str] = field(default_factory=list)
    #: Connections the wrappers replaced (connections().reconnects) by the end.
    reconnects: int = 0
    crashed: str = ""


class Session(threading.Thread):
    """One local session running the workload until ``deadline``, then parking until released.

    ``mode`` is ``safe`` (the wrappers with a per-call timeout, the insert with
    ``resolve => true``), ``lean`` (the wrappers with neither, as raw dblink runs them) or
    ``raw`` (plain dblink_exec/dblink on a connection opened once with dblink_connect).
    Parking keeps the dblink connection open so that the caller can count remote sessions;
    ``release`` lets the session close.
    """

    def __init__(
        self,
        local: Server,
        local_db: str,
        index: int,
        target: str,
        mode: str,
        phase: str,
        deadline: float,
        call_timeout_s: float,
        parked: threading.Semaphore,
        release: threading.Event,
    ) -> None:
        super().__init__(name=f"load-{phase}-{index}", daemon=True)
        self.local = local
        self.local_db = local_db
        self.target = target
        self.mode = mode
        self.phase = phase
        self.deadline = deadline
        self.call_timeout = f"{call_timeout_s} s"
        self.parked = parked
        self.release = release
        self.result = SessionResult(index)

    def run(self) -> None:
        try:
            with self.local.connect(self.local_db) as conn:
                self._open(conn)
                seq = 0
                while time.monotonic() < self.deadline:
                    seq += 1
                    self._call(conn, seq)
                self.result.open_names = sorted(
                    row[0] for row in conn.execute("SELECT unnest(dblink_get_connections())")
                )
                if self.mode != "raw":
                    row = conn.execute(
                        "SELECT coalesce(sum(reconnects), 0)::int FROM dblink_safe.connections()"
                    ).fetchone()
                    self.result.reconnects = row[0] if row else 0
                self.parked.release()
                self.release.wait(120)
        except Exception as exc:  # reported by the test with the session's index
            self.result.crashed = f"{type(exc).__name__}: {exc}"
            self.parked.release()

    def _open(self, conn: Conn) -> None:
        if self.mode != "raw":
            ensure(conn, self.target, "w")
        else:
            conn.execute("SELECT dblink_connect('w', %s)", [self.target])

    def _call(self, conn: Conn, seq: int) -> None:
        result = self.result
        kind = ("upsert", "insert", "read")[seq % 3]
        phase, session = sql.Literal(self.phase), sql.Literal(result.index)
        if kind == "upsert":
            statement = sql.SQL(
                "INSERT INTO kv VALUES ({}, {}, {}) "
                "ON CONFLICT (phase, session) DO UPDATE SET v = excluded.v"
            ).format(phase, session, sql.Literal(seq))
        elif kind == "insert":
            statement = sql.SQL("INSERT INTO ledger VALUES ({}, {}, {})").format(
                phase, session, sql.Literal(seq)
            )
        else:
            statement = sql.SQL(
                "SELECT count(*) FROM ledger WHERE phase = {} AND session = {}"
            ).format(phase, session)
        remote_sql = statement.as_string(conn)
        started = time.monotonic()
        try:
            value = self._run(conn, kind, remote_sql)
        except psycopg.Error as exc:
            state = exc.sqlstate or "?????"
            if kind == "insert":
                result.inserts_failed[seq] = state
                detail = exc.diag.message_detail or ""
                result.failure_messages.append(f"{state} {exc.diag.message_primary} {detail}")
            else:
                detail = exc.diag.message_detail or ""
                result.errors.append((seq, kind, state, f"{exc.diag.message_primary} {detail}"))
        else:
            if kind == "upsert":
                result.upserts_ok += 1
                result.last_upsert = seq
            elif kind == "insert":
                result.inserts_ok.append(seq)
            else:
                result.reads_ok += 1
                if value != len(result.inserts_ok):
                    result.mismatches.append((seq, int(value), len(result.inserts_ok)))
        finally:
            elapsed = time.monotonic() - started
            result.calls += 1
            if elapsed > result.max_latency:
                result.max_latency = elapsed
                result.slowest = f"{kind} #{seq}"

    def _run(self, conn: Conn, kind: str, remote_sql: str) -> Any:
        if self.mode == "raw":
            if kind == "read":
                query = "SELECT n FROM dblink('w', %s) AS t(n bigint)"
            else:
                query = "SELECT dblink_exec('w', %s)"
            row = conn.execute(query, [remote_sql]).fetchone()
            assert row is not None
            return row[0]
        # "lean" calls the wrappers with raw dblink's semantics: no per-call timeout, no
        # resolution; "safe" adds both.
        timeout = {} if self.mode == "lean" else {"timeout": self.call_timeout}
        if kind == "read":
            return query_value(conn, remote_sql, "bigint", "w", idempotent=True, **timeout)
        if kind == "upsert":
            return exec_(conn, remote_sql, "w", idempotent=True, **timeout)
        if self.mode == "lean":
            return exec_(conn, remote_sql, "w")
        return exec_(conn, remote_sql, "w", resolve=True, **timeout)


@dataclass
class PhaseResult:
    phase: str
    mode: str
    seconds: float
    sessions: list[SessionResult]
    chaos: dict[str, int]
    #: Remote backends of the database while every session was parked, by the caller's probe.
    probe: dict[str, Any]

    @property
    def calls(self) -> int:
        return sum(s.calls for s in self.sessions)

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    @property
    def max_latency(self) -> float:
        return max(s.max_latency for s in self.sessions)


class Chaos(threading.Thread):
    """Runs a random fault from ``actions`` every ``low``..``high`` seconds until stopped."""

    def __init__(
        self,
        actions: dict[str, Callable[[], None]],
        seed: int,
        low: float = 0.4,
        high: float = 1.6,
    ) -> None:
        super().__init__(name="chaos", daemon=True)
        self.actions = actions
        self.random = random.Random(seed)
        self.low, self.high = low, high
        self.stop_event = threading.Event()
        self.counts = dict.fromkeys(actions, 0)
        self.error = ""

    def run(self) -> None:
        # Rounds of every action in a random order: each kind of fault happens once before
        # any happens twice.
        queue: list[str] = []
        try:
            while not self.stop_event.wait(self.random.uniform(self.low, self.high)):
                if not queue:
                    queue = sorted(self.actions)
                    self.random.shuffle(queue)
                name = queue.pop()
                self.actions[name]()
                self.counts[name] += 1
        except Exception as exc:  # reported by the test
            self.error = f"{type(exc).__name__}: {exc}"

    def stop(self) -> None:
        self.stop_event.set()
        self.join(120)


def run_phase(
    local: Server,
    local_db: str,
    targets: list[str],
    mode: str,
    phase: str,
    seconds: float,
    call_timeout_s: float,
    hang_bound_s: float,
    probe: Callable[[], dict[str, Any]],
    chaos: Chaos | None = None,
) -> PhaseResult:
    """Run one session per target for ``seconds``; ``probe`` runs while they are all parked."""
    parked = threading.Semaphore(0)
    release = threading.Event()
    started = time.monotonic()
    deadline = started + seconds
    sessions = [
        Session(local, local_db, i, target, mode, phase, deadline, call_timeout_s, parked, release)
        for i, target in enumerate(targets)
    ]
    for session in sessions:
        session.start()
    if chaos is not None:
        chaos.start()
    try:
        # A session parks after its last call; one that never parks has hung.
        for _ in sessions:
            if not parked.acquire(timeout=max(0.0, deadline - time.monotonic()) + hang_bound_s):
                raise AssertionError(
                    f"{phase}: a session did not finish within {hang_bound_s:g}s of the end"
                )
        elapsed = time.monotonic() - started
    finally:
        if chaos is not None:
            chaos.stop()
    try:
        seen = probe()
    finally:
        release.set()
        for session in sessions:
            session.join(60)
    return PhaseResult(
        phase,
        mode,
        elapsed,
        [s.result for s in sessions],
        dict(chaos.counts) if chaos else {},
        seen,
    )
