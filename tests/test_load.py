"""Eight sessions under load while remote backends are killed, the remote restarts and PgBouncer
is recycled: no idempotent call fails, no write lands twice, nothing hangs, nothing leaks.

The same run measures throughput four ways: raw dblink; the wrappers called as raw dblink
is (no timeout, no resolution); the wrappers with a per-call timeout and ``resolve => true``
for the insert (three round trips instead of one); and those under chaos. Each phase's
figures are printed (``pytest -s``) and kept in the report file named by
$PGDBLINK_SAFE_REPORT. The duration of a phase is $PGDBLINK_SAFE_LOAD_SECONDS
(12 by default).
"""

import collections
import os
import random
from typing import Any

import psycopg
import pytest
from faults import on_database
from load import Chaos, PhaseResult, prepare_remote, run_phase
from pgbouncer import PgBouncer, find_pgbouncer
from psycopg import sql
from report import record
from servers import LocalCluster, Server, wait_for

from pgdblink_safe.settings import Settings

SESSIONS = 8
CALL_TIMEOUT_S = 5.0
SECONDS = float(os.environ.get("PGDBLINK_SAFE_LOAD_SECONDS", "12"))


def hang_bound(settings: Settings) -> float:
    """The longest one call may take with these settings: every wait the toolkit bounds.

    Reconnect attempts stop once the retry budget is spent, but the attempt under way
    finishes: a connect (connect_timeout), one backoff sleep, the statement (the per-call
    timeout), and resolving a lost COMMIT (resolve_wait_ms).
    """
    return (
        settings.retry_budget_ms / 1000
        + settings.backoff_max_ms / 1000
        + settings.connect_timeout_s
        + CALL_TIMEOUT_S
        + settings.resolve_wait_ms / 1000
    )


@pytest.fixture
def bouncer(remote: Server) -> Any:
    if find_pgbouncer() is None:
        pytest.skip("PgBouncer is not installed (Debian package pgbouncer; CI installs it)")
    with PgBouncer(remote, pool_mode="session") as running:
        yield running.start()


def remote_rows(remote: Server, dbname: str, phase: str) -> tuple[Any, dict[int, int]]:
    with remote.connect(dbname) as conn:
        ledger = collections.Counter(
            (session, seq)
            for session, seq in conn.execute(
                "SELECT session, seq FROM ledger WHERE phase = %s", [phase]
            )
        )
        kv = dict(conn.execute("SELECT session, v FROM kv WHERE phase = %s", [phase]).fetchall())
    return ledger, kv


def check_phase(result: PhaseResult, remote: Server, dbname: str, bound: float) -> list[str]:
    """Everything the phase must satisfy; returns the failures, one line each."""
    failures: list[str] = []
    ledger, kv = remote_rows(remote, dbname, result.phase)
    expected: set[tuple[int, int]] = set()
    for s in result.sessions:
        if s.crashed:
            failures.append(f"session {s.index} crashed: {s.crashed}")
        failures += [
            f"session {s.index} {what} #{seq} failed: {state} {message}"
            for seq, what, state, message in s.errors
        ]
        failures += [
            f"session {s.index} read #{seq} saw {seen} rows, {known} inserts had succeeded"
            for seq, seen, known in s.mismatches
        ]
        for seq in s.inserts_ok:
            expected.add((s.index, seq))
            if ledger.get((s.index, seq), 0) != 1:
                failures.append(
                    f"session {s.index} insert #{seq} succeeded; "
                    f"{ledger.get((s.index, seq), 0)} remote rows"
                )
        for seq, state in s.inserts_failed.items():
            if ledger.get((s.index, seq), 0) != 0:
                failures.append(
                    f"session {s.index} insert #{seq} failed ({state}); "
                    f"{ledger[(s.index, seq)]} remote rows"
                )
        if s.upserts_ok and kv.get(s.index) != s.last_upsert:
            failures.append(
                f"session {s.index}: kv holds {kv.get(s.index)}, last upsert was {s.last_upsert}"
            )
        if s.open_names != ["w"]:
            failures.append(f"session {s.index} had dblink connections {s.open_names}")
        if s.max_latency > bound:
            failures.append(
                f"session {s.index}: {s.slowest} took {s.max_latency:.1f}s (bound {bound:.0f}s)"
            )
    failed = {(s.index, seq) for s in result.sessions for seq in s.inserts_failed}
    strays = set(ledger) - expected - failed
    if strays:
        failures.append(f"remote rows no call made: {sorted(strays)[:10]}")
    return failures


def summary(result: PhaseResult) -> str:
    inserts_ok = sum(len(s.inserts_ok) for s in result.sessions)
    failed = collections.Counter(
        state for s in result.sessions for state in s.inserts_failed.values()
    )
    failed_text = ", ".join(f"{n} {state}" for state, n in sorted(failed.items())) or "none"
    return (
        f"{result.calls} calls in {result.seconds:.1f}s = {result.rate:.0f} calls/s; "
        f"inserts {inserts_ok} ok (one remote row each), failed: {failed_text}; "
        f"max call {result.max_latency:.2f}s"
    )


def test_eight_sessions_under_chaos(
    local: Server,
    remote: Server,
    local_db: str,
    remote_db: str,
    installed: psycopg.Connection[Any],
    bouncer: PgBouncer,
) -> None:
    if not isinstance(remote, LocalCluster):
        pytest.skip("the chaos loop restarts the remote server: needs a server the tests own")
    prepare_remote(remote, remote_db)
    targets = [
        remote.conninfo(remote_db, application_name=f"load_direct_{i}")
        if i % 2 == 0
        else bouncer.conninfo(remote_db, application_name=f"load_bouncer_{i}")
        for i in range(SESSIONS)
    ]
    direct = SESSIONS // 2 + SESSIONS % 2
    via_bouncer = SESSIONS - direct
    bound = hang_bound(Settings())

    by_application = sql.SQL(
        "SELECT application_name, count(*) FROM pg_stat_activity "
        "WHERE datname = {} AND pid <> pg_backend_pid() "
        "AND backend_type = 'client backend' GROUP BY 1"
    ).format(sql.Literal(remote_db))
    direct_left = sql.SQL(
        "SELECT 1 FROM pg_stat_activity "
        "WHERE datname = {} AND application_name LIKE 'load_direct_%'"
    ).format(sql.Literal(remote_db))

    def probe() -> dict[str, Any]:
        rows = remote.execute(by_application)
        return {
            "backends": dict(rows),
            "bouncer_servers": len(bouncer.servers(remote_db)),
            "bouncer_clients": len(bouncer.clients(remote_db)),
        }

    def phase(mode: str, name: str, chaos: Chaos | None = None) -> PhaseResult:
        result = run_phase(
            local, local_db, targets, mode, name, SECONDS, CALL_TIMEOUT_S, bound, probe, chaos
        )
        # Nothing leaked while every session still held its connection: at most one remote
        # backend per direct session, no PgBouncer client beyond one per session, and every
        # other backend of the database is one of PgBouncer's server connections.
        backends = result.probe["backends"]
        direct_backends = {k: v for k, v in backends.items() if k.startswith("load_direct_")}
        assert all(n == 1 for n in direct_backends.values()), backends
        assert len(direct_backends) <= direct, backends
        assert result.probe["bouncer_clients"] <= via_bouncer, result.probe
        others = sum(n for k, n in backends.items() if not k.startswith("load_direct_"))
        assert others <= result.probe["bouncer_servers"], result.probe
        # Once the sessions have ended, their remote backends go too.
        wait_for(
            lambda: not remote.execute(direct_left) and not bouncer.clients(remote_db),
            15,
            "the sessions' remote connections to close",
        )
        return result

    raw = phase("raw", "raw")
    lean = phase("lean", "lean")
    safe = phase("safe", "safe")
    for quiet in (raw, lean, safe):
        failures = check_phase(quiet, remote, remote_db, bound)
        failures += [
            f"{quiet.phase}: session {s.index} insert #{seq} failed ({state}) with no fault"
            for s in quiet.sessions
            for seq, state in s.inserts_failed.items()
        ]
        assert not failures, "\n".join(failures[:30])

    def kill_and_resume() -> None:
        bouncer.admin(on_database("KILL", remote_db))
        bouncer.admin(on_database("RESUME", remote_db))

    seed = int(os.environ.get("PGDBLINK_SAFE_CHAOS_SEED", random.randrange(1 << 30)))
    chaos = Chaos(
        {
            "terminate remote backends": lambda: remote.terminate_backends(remote_db),
            "restart remote": lambda: remote.restart("fast"),
            "PgBouncer RECONNECT": lambda: bouncer.admin("RECONNECT"),
            "PgBouncer KILL": kill_and_resume,
            "PgBouncer restart": bouncer.restart,
        },
        seed,
    )
    stormy = phase("safe", "chaos", chaos)
    failures = check_phase(stormy, remote, remote_db, bound)
    if chaos.error:
        failures.append(f"the chaos loop failed: {chaos.error}")

    faults = ", ".join(f"{name} {n}" for name, n in sorted(stormy.chaos.items()))
    reconnects = sum(s.reconnects for s in stormy.sessions)
    record(f"load: {SESSIONS} sessions, {SECONDS:g}s a phase, chaos seed {seed}")
    record(f"load: raw dblink, no faults:             {summary(raw)}")
    record(f"load: wrappers, plain calls, no faults:  {summary(lean)}")
    record(f"load: wrappers, timeout+resolve, no faults: {summary(safe)}")
    record(f"load: wrappers, timeout+resolve, chaos:  {summary(stormy)}")
    record(f"load: faults injected: {faults}; connections the wrappers replaced: {reconnects}")
    for message in [m for s in stormy.sessions for m in s.failure_messages][:5]:
        record(f"load: a failed insert said: {message}")
    record(
        f"load: throughput ratios: plain wrappers/raw {lean.rate / raw.rate:.2f}, "
        f"timeout+resolve/raw {safe.rate / raw.rate:.2f}, "
        f"chaos/no faults {stormy.rate / safe.rate:.2f}, chaos/raw {stormy.rate / raw.rate:.2f}"
    )
    assert not failures, "\n".join(failures[:30])
    # The faults reached the sessions: the wrappers replaced connections, and every kind of
    # fault ran at least once.
    assert reconnects > 0
    assert sum(stormy.chaos.values()) >= len(stormy.chaos), stormy.chaos
