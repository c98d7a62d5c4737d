"""Measure the wrappers' overhead against raw dblink, server-side, on one connection."""

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from pgdblink_safe.errors import BenchError, NotInstalledError
from pgdblink_safe.installer import find_dblink_schema, status

Progress = Callable[[str], None]

#: A statement every dblink_exec accepts that reaches the remote and leaves nothing behind
#: once the connection closes.
STATEMENT = "SET application_name = 'pgdblink_safe_bench'"
WARMUP_CALLS = 200
WARMUP_ROUNDS = 1
#: How long a terminated remote backend may take to leave pg_stat_activity.
KILL_TIMEOUT_S = 10.0
#: A backend leaves pg_stat_activity a moment before its socket closes; a statement sent in
#: between is lost after sending (08007) instead of finding the connection dead before it,
#: which is not what the recovery figures are about. Without this wait about one round in
#: sixteen hit that on a loopback; such a round is run again.
SETTLE_S = 0.01

_SAFE = "pgdblink_safe_bench"
_PLAIN = "pgdblink_safe_bench_plain"
_CONTROL = "pgdblink_safe_bench_control"
_NAMES = (_SAFE, _PLAIN, _CONTROL)


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class Latency:
    """Per-call latency of one function, in microseconds."""

    median_us: float
    p99_us: float


@dataclass(frozen=True)
class Recovery:
    """Time to get a statement through after the remote backend was terminated, in ms."""

    median_ms: float
    max_ms: float


@dataclass(frozen=True)
class BenchResult:
    server_version: str
    server_version_num: int
    schema: str
    installed_version: int
    validation_window_ms: int
    calls: int
    warmup_calls: int
    rounds: int
    warmup_rounds: int
    raw: Latency
    #: A minimal wrapper: pinned search_path and an exception block around dblink_exec.
    floor: Latency
    safe: Latency
    safe_recovery: Recovery
    plain_recovery: Recovery
    #: False when the toolkit replaced the connection during the latency run (a short
    #: max lifetime, say), so the two functions did not share one remote backend throughout.
    same_remote_backend: bool
    #: Recovery rounds run again because the statement was lost after sending (SETTLE_S).
    repeated_rounds: int = 0

    @property
    def median_ratio(self) -> float | None:
        return _ratio(self.safe.median_us, self.raw.median_us)

    @property
    def p99_ratio(self) -> float | None:
        return _ratio(self.safe.p99_us, self.raw.p99_us)

    @property
    def floor_median_ratio(self) -> float | None:
        return _ratio(self.floor.median_us, self.raw.median_us)

    @property
    def floor_p99_ratio(self) -> float | None:
        return _ratio(self.floor.p99_us, self.raw.p99_us)

    def as_dict(self) -> dict[str, Any]:
        """The figures for JSON, rounded well below the clock's one-microsecond resolution."""

        def ratio(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "server_version": self.server_version,
            "server_version_num": self.server_version_num,
            "schema": self.schema,
            "installed_version": self.installed_version,
            "validation_window_ms": self.validation_window_ms,
            "statement": STATEMENT,
            "calls": self.calls,
            "warmup_calls": self.warmup_calls,
            "same_remote_backend": self.same_remote_backend,
            "latency_us": {
                "raw": {"median": round(self.raw.median_us, 2), "p99": round(self.raw.p99_us, 2)},
                "floor": {
                    "median": round(self.floor.median_us, 2),
                    "p99": round(self.floor.p99_us, 2),
                },
                "safe": {
                    "median": round(self.safe.median_us, 2),
                    "p99": round(self.safe.p99_us, 2),
                },
                "ratio": {"median": ratio(self.median_ratio), "p99": ratio(self.p99_ratio)},
                "floor_ratio": {
                    "median": ratio(self.floor_median_ratio),
                    "p99": ratio(self.floor_p99_ratio),
                },
            },
            "rounds": self.rounds,
            "warmup_rounds": self.warmup_rounds,
            "repeated_rounds": self.repeated_rounds,
            "recovery_ms": {
                side: {"median": round(r.median_ms, 3), "max": round(r.max_ms, 3)}
                for side, r in (("safe", self.safe_recovery), ("plain", self.plain_recovery))
            },
        }


def _ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator > 0 else None


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks, as percentile_cont does."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def default_target(conn: psycopg.Connection[Any], password: str | None = None) -> str:
    """A connection string for the server and database ``conn`` is connected to."""
    return psycopg.conninfo.make_conninfo(
        "",
        host=conn.info.host,
        port=conn.info.port,
        user=conn.info.user,
        dbname=conn.info.dbname,
        password=password or None,
    )


# Bodies of the pg_temp helpers; {dblink} and {toolkit} become quoted schema names. Both
# functions are called the same way (an assignment, plpgsql's cheapest call) so that the
# difference between them is the wrapper alone.
_LATENCY = """
DECLARE
    t0 timestamptz;
    t1 timestamptz;
    t2 timestamptz;
    t3 timestamptz;
    status text;
BEGIN
    raw_us := ARRAY[]::double precision[];
    floor_us := ARRAY[]::double precision[];
    safe_us := ARRAY[]::double precision[];
    FOR i IN 1..calls LOOP
        t0 := pg_catalog.clock_timestamp();
        status := {dblink}.dblink_exec(conn_name, stmt);
        t1 := pg_catalog.clock_timestamp();
        status := pg_temp.pgdblink_safe_bench_floor(conn_name, stmt);
        t2 := pg_catalog.clock_timestamp();
        status := {toolkit}.safe_dblink_exec(conn_name, stmt);
        t3 := pg_catalog.clock_timestamp();
        raw_us[i] := pg_catalog.date_part('epoch', t1 - t0) * 1000000;
        floor_us[i] := pg_catalog.date_part('epoch', t2 - t1) * 1000000;
        safe_us[i] := pg_catalog.date_part('epoch', t3 - t2) * 1000000;
    END LOOP;
END;
"""

# The least any wrapper that keeps the promises must do: a function with a pinned
# search_path (so that nothing in the caller's path can capture a call) and an exception
# block around the remote call (so that a connection lost after sending can be told from a
# remote error). Measured next to the others, it shows what the toolkit's checks and
# bookkeeping cost on top.
_FLOOR = """
BEGIN
    BEGIN
        RETURN {dblink}.dblink_exec(conn_name, stmt);
    EXCEPTION WHEN OTHERS THEN
        RAISE;
    END;
END;
"""

_KILL = """
DECLARE
    pid integer;
    signalled boolean;
    gone boolean;
    deadline timestamptz := pg_catalog.clock_timestamp()
        + pg_catalog.make_interval(secs => timeout_s);
BEGIN
    SELECT r.p INTO pid
    FROM {dblink}.dblink(conn_name, 'SELECT pg_catalog.pg_backend_pid()') AS r(p integer);
    SELECT r.t INTO signalled
    FROM {dblink}.dblink(control_name,
        pg_catalog.format('SELECT pg_catalog.pg_terminate_backend(%s)', pid)) AS r(t boolean);
    IF signalled IS NOT TRUE THEN
        RAISE EXCEPTION 'pg_terminate_backend(%) failed on the remote server', pid;
    END IF;
    LOOP
        SELECT r.g INTO gone
        FROM {dblink}.dblink(control_name, pg_catalog.format(
            'SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity WHERE pid = %s)',
            pid)) AS r(g boolean);
        EXIT WHEN gone;
        IF pg_catalog.clock_timestamp() > deadline THEN
            RAISE EXCEPTION 'remote backend % still runs % s after pg_terminate_backend',
                pid, timeout_s;
        END IF;
        PERFORM pg_catalog.pg_sleep(0.001);
    END LOOP;
    PERFORM pg_catalog.pg_sleep(settle_s);
    RETURN pid;
END;
"""

_SAFE_ROUND = """
DECLARE
    old_pid integer;
    new_pid integer;
    t0 timestamptz;
    t1 timestamptz;
    status text;
BEGIN
    PERFORM {toolkit}.ensure_dblink_conn(conn_name, target);
    old_pid := pg_temp.pgdblink_safe_bench_kill(conn_name, control_name, timeout_s, settle_s);
    BEGIN
        t0 := pg_catalog.clock_timestamp();
        status := {toolkit}.safe_dblink_exec(conn_name, stmt);
        t1 := pg_catalog.clock_timestamp();
    EXCEPTION WHEN SQLSTATE '08007' THEN
        -- The socket closed only after the statement was sent (see SETTLE_S): not the
        -- failure this round measures, so the caller runs it again.
        RETURN NULL;
    END;
    SELECT r.p INTO new_pid
    FROM {dblink}.dblink(conn_name, 'SELECT pg_catalog.pg_backend_pid()') AS r(p integer);
    IF new_pid = old_pid THEN
        RAISE EXCEPTION 'safe_dblink_exec still uses terminated remote backend %', old_pid;
    END IF;
    RETURN pg_catalog.date_part('epoch', t1 - t0) * 1000;
END;
"""

# What a caller without the toolkit has to write to survive the same failure.
_PLAIN_ROUND = """
DECLARE
    t0 timestamptz;
    t1 timestamptz;
    status text;
    failed boolean := false;
BEGIN
    PERFORM pg_temp.pgdblink_safe_bench_kill(conn_name, control_name, timeout_s, settle_s);
    t0 := pg_catalog.clock_timestamp();
    BEGIN
        status := {dblink}.dblink_exec(conn_name, stmt);
    EXCEPTION WHEN OTHERS THEN
        failed := true;
        PERFORM {dblink}.dblink_disconnect(conn_name);
        PERFORM {dblink}.dblink_connect(conn_name, target);
        status := {dblink}.dblink_exec(conn_name, stmt);
    END;
    t1 := pg_catalog.clock_timestamp();
    IF NOT failed THEN
        RAISE EXCEPTION 'dblink_exec succeeded on a terminated remote backend';
    END IF;
    RETURN pg_catalog.date_part('epoch', t1 - t0) * 1000;
END;
"""

_ROUND_ARGS = (
    "conn_name text, target text, control_name text, stmt text, "
    "timeout_s double precision, settle_s double precision"
)

#: name -> (arguments, return clause, body)
_HELPERS = {
    "pgdblink_safe_bench_latency": (
        "conn_name text, stmt text, calls integer, OUT raw_us double precision[], "
        "OUT floor_us double precision[], OUT safe_us double precision[]",
        "",
        _LATENCY,
    ),
    "pgdblink_safe_bench_floor": ("conn_name text, stmt text", "RETURNS text", _FLOOR),
    "pgdblink_safe_bench_kill": (
        "conn_name text, control_name text, timeout_s double precision, settle_s double precision",
        "RETURNS integer",
        _KILL,
    ),
    "pgdblink_safe_bench_safe_round": (_ROUND_ARGS, "RETURNS double precision", _SAFE_ROUND),
    "pgdblink_safe_bench_plain_round": (_ROUND_ARGS, "RETURNS double precision", _PLAIN_ROUND),
}


def _create_helpers(conn: psycopg.Connection[Any], dblink_schema: str, schema: str) -> None:
    for name, (args, returns, body) in _HELPERS.items():
        # The body goes in as a string literal, so no schema name can end it early.
        text = (
            sql.SQL(body)
            .format(dblink=sql.Identifier(dblink_schema), toolkit=sql.Identifier(schema))
            .as_string(conn)
        )
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION pg_temp.{name}({args}) {returns} LANGUAGE plpgsql "
                "SET search_path = pg_catalog, pg_temp AS {body}"
            ).format(
                name=sql.Identifier(name),
                args=sql.SQL(args),
                returns=sql.SQL(returns),
                body=sql.Literal(text),
            )
        )


def _open_connections(conn: psycopg.Connection[Any], dblink: sql.Identifier) -> list[str]:
    row = conn.execute(sql.SQL("SELECT {}.dblink_get_connections()").format(dblink)).fetchone()
    return list(row[0] or []) if row else []


def _cleanup(conn: psycopg.Connection[Any], dblink: sql.Identifier) -> None:
    for name in _open_connections(conn, dblink):
        if name in _NAMES:
            conn.execute(sql.SQL("SELECT {}.dblink_disconnect(%s)").format(dblink), [name])
    for name in _HELPERS:
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS pg_temp.{}").format(sql.Identifier(name)))


def _one_row(row: Any, query: str) -> Any:
    """``row``, which ``query`` returned; a BenchError when it returned none."""
    if row is None:
        raise BenchError(f"{query} returned no row")
    return row


def _remote_pid(conn: psycopg.Connection[Any], dblink: sql.Identifier, name: str) -> int:
    row = conn.execute(
        sql.SQL(
            "SELECT r.p FROM {}.dblink(%s, 'SELECT pg_catalog.pg_backend_pid()') AS r(p integer)"
        ).format(dblink),
        [name],
    ).fetchone()
    return int(_one_row(row, f"pg_backend_pid() through dblink connection {name}")[0])


def _latency(
    conn: psycopg.Connection[Any], calls: int
) -> tuple[list[float], list[float], list[float]]:
    row = conn.execute(
        "SELECT raw_us, floor_us, safe_us FROM pg_temp.pgdblink_safe_bench_latency(%s, %s, %s)",
        [_SAFE, STATEMENT, calls],
    ).fetchone()
    raw_us, floor_us, safe_us = _one_row(row, "pg_temp.pgdblink_safe_bench_latency()")
    return list(raw_us), list(floor_us), list(safe_us)


def _round(conn: psycopg.Connection[Any], helper: str, name: str, target: str) -> float | None:
    row = conn.execute(
        sql.SQL("SELECT pg_temp.{}(%s, %s, %s, %s, %s, %s)").format(sql.Identifier(helper)),
        [name, target, _CONTROL, STATEMENT, KILL_TIMEOUT_S, SETTLE_S],
    ).fetchone()
    (elapsed_ms,) = _one_row(row, f"pg_temp.{helper}()")
    return None if elapsed_ms is None else float(elapsed_ms)


def run_bench(
    conn: psycopg.Connection[Any],
    target: str,
    *,
    calls: int = 5000,
    rounds: int = 20,
    schema: str = "dblink_safe",
    progress: Progress = _quiet,
) -> BenchResult:
    """Time raw dblink_exec against safe_dblink_exec, and their recovery, on ``target``.

    ``conn`` must be in autocommit mode and have no dblink connection open under the
    benchmark's names; ``target`` is a libpq connection string or foreign server name the
    server's dblink connects to. Every helper lives in pg_temp and is dropped, and every
    dblink connection is closed, before this returns.
    """
    if calls < 1 or rounds < 1:
        raise BenchError(f"calls and rounds must be at least 1, not {calls} and {rounds}")
    if not conn.autocommit:
        raise BenchError("the benchmark needs a connection in autocommit mode")
    state = status(conn, schema)
    settings = state.settings
    if state.installed_version is None or settings is None:
        raise NotInstalledError(
            f"pgdblink_safe is not installed in schema {schema} of database {state.database}: "
            "run `pgdblink-safe install` first"
        )
    dblink_schema = find_dblink_schema(conn)
    if dblink_schema is None:
        raise NotInstalledError(
            f"the dblink extension is not installed in database {state.database}: "
            "run `pgdblink-safe install --create-extension` first"
        )
    dblink = sql.Identifier(dblink_schema)
    busy = sorted(set(_NAMES) & set(_open_connections(conn, dblink)))
    if busy:
        raise BenchError(f"dblink connection(s) {', '.join(busy)} are already open in this session")
    version_row = _one_row(
        conn.execute(
            "SELECT pg_catalog.current_setting('server_version'), "
            "pg_catalog.current_setting('server_version_num')::integer"
        ).fetchone(),
        "SELECT current_setting('server_version')",
    )
    toolkit = sql.Identifier(schema)
    try:
        _create_helpers(conn, dblink_schema, schema)
        conn.execute(
            sql.SQL("SELECT {}.ensure_dblink_conn(%s, %s)").format(toolkit), [_SAFE, target]
        )
        warmup = min(WARMUP_CALLS, calls)
        progress(
            f"benchmarking {calls} calls each of raw dblink_exec, a minimal wrapper and "
            f"safe_dblink_exec, interleaved on one connection (after {warmup} warm-up calls) ..."
        )
        started = time.monotonic()
        _latency(conn, warmup)
        pid_before = _remote_pid(conn, dblink, _SAFE)
        raw_us, floor_us, safe_us = _latency(conn, calls)
        same_backend = _remote_pid(conn, dblink, _SAFE) == pid_before
        progress(f"  done in {time.monotonic() - started:.1f} s")
        if not same_backend:
            progress("  warning: the toolkit replaced the connection during the measurement")

        progress(
            f"measuring recovery after pg_terminate_backend: {rounds} rounds each for "
            f"safe_dblink_exec and plain dblink (after {WARMUP_ROUNDS} warm-up round) ..."
        )
        started = time.monotonic()
        conn.execute(sql.SQL("SELECT {}.dblink_connect(%s, %s)").format(dblink), [_CONTROL, target])
        conn.execute(sql.SQL("SELECT {}.dblink_connect(%s, %s)").format(dblink), [_PLAIN, target])
        safe_ms: list[float] = []
        plain_ms: list[float] = []
        repeated = 0
        for number in range(WARMUP_ROUNDS + rounds):
            while (safe := _round(conn, "pgdblink_safe_bench_safe_round", _SAFE, target)) is None:
                repeated += 1
                if repeated > rounds:
                    raise BenchError(
                        f"the remote backend's socket closed only after a statement was sent "
                        f"in {repeated} rounds: the server is too loaded to measure recovery"
                    )
            plain = _round(conn, "pgdblink_safe_bench_plain_round", _PLAIN, target)
            if plain is None:
                raise BenchError(
                    "pg_temp.pgdblink_safe_bench_plain_round() returned NULL instead of the "
                    "time plain dblink took to recover"
                )
            if number >= WARMUP_ROUNDS:
                safe_ms.append(safe)
                plain_ms.append(plain)
        progress(f"  done in {time.monotonic() - started:.1f} s")
        if repeated:
            progress(f"  {repeated} round(s) lost the statement after sending it and ran again")
    except BaseException:
        # The first error is the one worth seeing; the session's end cleans up the rest.
        with contextlib.suppress(psycopg.Error):
            _cleanup(conn, dblink)
        raise
    _cleanup(conn, dblink)
    return BenchResult(
        server_version=str(version_row[0]).split()[0],
        server_version_num=int(version_row[1]),
        schema=schema,
        installed_version=state.installed_version,
        validation_window_ms=settings.validation_window_ms,
        calls=calls,
        warmup_calls=warmup,
        rounds=rounds,
        warmup_rounds=WARMUP_ROUNDS,
        raw=Latency(percentile(raw_us, 0.5), percentile(raw_us, 0.99)),
        floor=Latency(percentile(floor_us, 0.5), percentile(floor_us, 0.99)),
        safe=Latency(percentile(safe_us, 0.5), percentile(safe_us, 0.99)),
        safe_recovery=Recovery(percentile(safe_ms, 0.5), max(safe_ms)),
        plain_recovery=Recovery(percentile(plain_ms, 0.5), max(plain_ms)),
        same_remote_backend=same_backend,
        repeated_rounds=repeated,
    )
