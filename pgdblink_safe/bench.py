"""Measure each wrapper against the raw dblink code that does the same work, server-side."""

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import psycopg
from psycopg import sql

from pgdblink_safe.errors import BenchError, NotInstalledError
from pgdblink_safe.installer import find_dblink_schema, status

Progress = Callable[[str], None]
Connect = Callable[[], psycopg.Connection[Any]]

#: A statement every dblink_exec accepts that reaches the remote and leaves nothing behind
#: once the connection closes.
STATEMENT = "SET application_name = 'pgdblink_safe_bench'"
#: A one-row update of the remote table the benchmark creates (a temporary one, so that it
#: needs no privilege beyond TEMP and vanishes with the connection whatever happens).
UPDATE = "UPDATE pg_temp.pgdblink_safe_bench_rows SET n = n + 1 WHERE id = 1"
#: A remote row for the row-type path, and the composite type that receives it.
ROW_QUERY = (
    "SELECT 1 AS id, 'pgdblink_safe'::text AS name, 12.50::numeric AS amount, "
    "TIMESTAMPTZ '2024-01-01 00:00:00+00' AS at"
)
ROW_COLUMNS = "id integer, name text, amount numeric, at timestamptz"
TIMEOUT = "5 s"
CALLS_PER_ROUND = 50
WARMUP_ROUNDS = 1
#: Calls of each path and side that warm a throughput session up before it is timed.
SESSION_WARMUP_CALLS = 10
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
_ROW_TYPE = "pgdblink_safe_bench_row"
_REMOTE_TABLE = "pgdblink_safe_bench_rows"
SIDES = ("raw", "toolkit")


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class Path:
    """A toolkit call and the raw dblink code that does the same work, for people."""

    name: str
    label: str
    toolkit: str
    raw: str


PATHS = (
    Path("exec", "exec", "safe_dblink_exec(c, stmt)", "dblink_exec(c, stmt)"),
    Path(
        "exec_floor",
        "exec, minimal wrapper (floor)",
        "dblink_exec in a function with a pinned search_path and an exception block",
        "dblink_exec(c, stmt)",
    ),
    Path(
        "query_scalar",
        "query, scalar",
        "safe_dblink_query(c, 'SELECT 1', NULL::integer)",
        "dblink(c, 'SELECT 1') AS r(v integer)",
    ),
    Path(
        "query_row",
        "query, row type (4 columns)",
        "safe_dblink_query(c, query, NULL::row_type)",
        "dblink(c, query) AS r(<4 column definitions>)",
    ),
    Path(
        "exec_timeout",
        f"exec, timeout => '{TIMEOUT}'",
        f"safe_dblink_exec(c, stmt, timeout => '{TIMEOUT}')",
        "dblink_send_query, poll dblink_is_busy without sleeping, dblink_get_result twice",
    ),
    Path(
        "exec_resolve",
        "exec, resolve => true",
        "safe_dblink_exec(c, update, resolve => true)",
        "dblink_exec(c, update)",
    ),
)
RECOVERY = Path(
    "recovery",
    "recovery after terminate",
    "safe_dblink_exec(c, stmt) after pg_terminate_backend of the remote backend",
    "dblink_exec fails; dblink_disconnect, dblink_connect, dblink_exec",
)


@dataclass(frozen=True)
class Figures:
    """The median and the 99th percentile of per-call figures, in microseconds."""

    median_us: float
    p99_us: float


@dataclass(frozen=True)
class Comparison:
    """One path's per-call figures, raw dblink against the toolkit."""

    path: Path
    raw: Figures
    toolkit: Figures

    def as_dict(self) -> dict[str, Any]:
        return {
            quantile: {
                "raw_us": round(raw, 2),
                "toolkit_us": round(toolkit, 2),
                "added_us": round(added_us(toolkit, raw), 2),
                "ratio": rounded(ratio(toolkit, raw)),
            }
            for quantile, raw, toolkit in (
                ("median", self.raw.median_us, self.toolkit.median_us),
                ("p99", self.raw.p99_us, self.toolkit.p99_us),
            )
        }


@dataclass(frozen=True)
class Throughput:
    """Calls per second of one path, all sessions together, raw dblink against the toolkit."""

    path: Path
    raw_per_s: float
    toolkit_per_s: float

    @property
    def share(self) -> float | None:
        return ratio(self.toolkit_per_s, self.raw_per_s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "raw_calls_per_s": round(self.raw_per_s, 1),
            "toolkit_calls_per_s": round(self.toolkit_per_s, 1),
            "share": rounded(self.share),
        }


@dataclass(frozen=True)
class BenchResult:
    server_version: str
    server_version_num: int
    schema: str
    installed_version: int
    validation_window_ms: int
    calls_per_round: int
    latency_rounds: int
    warmup_rounds: int
    #: One per path of PATHS, in that order.
    latency: tuple[Comparison, ...]
    recovery: Comparison
    recovery_rounds: int
    #: False when the toolkit replaced the connection during the latency run (a short
    #: max lifetime, say), so the two sides did not share one remote backend throughout.
    same_remote_backend: bool
    #: Recovery rounds run again because the statement was lost after sending (SETTLE_S).
    repeated_rounds: int = 0
    sessions: int = 0
    #: Seconds each side of each path ran with ``sessions`` concurrent sessions.
    session_seconds: float = 0.0
    throughput: tuple[Throughput, ...] = field(default_factory=tuple)
    #: fanout_exec against a hand-written send/collect loop, on the same connections.
    fanout: Comparison | None = None
    #: autonomous_exec against a connection per call and against a kept connection (AUTONOMOUS,
    #: AUTONOMOUS_KEPT); empty when the autonomous connection could not be opened.
    autonomous: tuple[Comparison, ...] = ()
    #: Why the autonomous path was not measured, when it was not.
    autonomous_skipped: str = ""
    #: Units of work committed with remote_tx => true alone and with two_phase => true.
    commit: "CommitResult | None" = None
    #: Why the commit paths were not measured at all, when they were not.
    commit_skipped: str = ""

    @property
    def calls(self) -> int:
        """Timed calls of each side of each path."""
        return self.calls_per_round * self.latency_rounds

    def as_dict(self) -> dict[str, Any]:
        """The figures for JSON, rounded well below the clock's one-microsecond resolution."""
        return {
            "server_version": self.server_version,
            "server_version_num": self.server_version_num,
            "schema": self.schema,
            "installed_version": self.installed_version,
            "validation_window_ms": self.validation_window_ms,
            "statements": {"stmt": STATEMENT, "update": UPDATE, "query": ROW_QUERY},
            "calls": self.calls,
            "calls_per_round": self.calls_per_round,
            "latency_rounds": self.latency_rounds,
            "warmup_rounds": self.warmup_rounds,
            "same_remote_backend": self.same_remote_backend,
            "recovery_rounds": self.recovery_rounds,
            "repeated_rounds": self.repeated_rounds,
            "paths": {
                c.path.name: {"toolkit": c.path.toolkit, "raw": c.path.raw, **c.as_dict()}
                for c in (*self.latency, self.recovery)
            },
            "throughput": {
                "sessions": self.sessions,
                "seconds_per_side": self.session_seconds,
                "paths": {t.path.name: t.as_dict() for t in self.throughput},
            }
            if self.sessions
            else None,
            "fanout": {
                "nodes": FANOUT_NODES,
                "toolkit": self.fanout.path.toolkit,
                "raw": self.fanout.path.raw,
                **self.fanout.as_dict(),
            }
            if self.fanout
            else None,
            "autonomous": {
                c.path.name: {"toolkit": c.path.toolkit, "raw": c.path.raw, **c.as_dict()}
                for c in self.autonomous
            }
            if self.autonomous
            else None,
            "autonomous_skipped": self.autonomous_skipped or None,
            "commit": self.commit.as_dict() if self.commit else None,
            "commit_skipped": self.commit_skipped or None,
        }


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``; None when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def added_us(toolkit_us: float, raw_us: float) -> float:
    """What the toolkit adds to the raw figure (negative when it came out faster)."""
    return toolkit_us - raw_us


def percentile(values: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks, as percentile_cont does."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def figures(per_call_us: Sequence[float]) -> Figures:
    """The median and p99 of per-call figures (one per round)."""
    return Figures(percentile(per_call_us, 0.5), percentile(per_call_us, 0.99))


def per_call_us(elapsed_us: Sequence[float], calls_per_round: int) -> list[float]:
    """Each round's elapsed time divided by the calls it made."""
    return [elapsed / calls_per_round for elapsed in elapsed_us]


def split_calls(calls: int, calls_per_round: int) -> tuple[int, int]:
    """(rounds, calls per round) for at least ``calls`` calls, no round bigger than asked."""
    if calls < 1 or calls_per_round < 1:
        raise ValueError(
            f"calls and calls per round must be at least 1: {calls}, {calls_per_round}"
        )
    per_round = min(calls, calls_per_round)
    return math.ceil(calls / per_round), per_round


def sides_in_round(number: int) -> tuple[str, str]:
    """Raw first in even rounds, the toolkit first in odd ones, so that drift hits both."""
    return SIDES if number % 2 == 0 else (SIDES[1], SIDES[0])


def calls_per_second(sessions: Sequence[tuple[int, float]]) -> float:
    """The rate of sessions that ran side by side, each given as (calls, elapsed µs)."""
    return sum(calls / (elapsed / 1e6) for calls, elapsed in sessions if elapsed > 0)


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


# One call of each side of each path, as PL/pgSQL statements. {dblink} and {toolkit} become
# quoted schema names, the statements literals. Every side is called the same way (an
# assignment or SELECT INTO) so that the difference between them is the wrapper alone.
_CALLS: dict[str, tuple[str, str]] = {
    "exec": (
        "status := {dblink}.dblink_exec(conn_name, {stmt});",
        "status := {toolkit}.safe_dblink_exec(conn_name, {stmt});",
    ),
    "exec_floor": (
        "status := {dblink}.dblink_exec(conn_name, {stmt});",
        "status := pg_temp.pgdblink_safe_bench_floor(conn_name, {stmt});",
    ),
    "query_scalar": (
        "SELECT * INTO value FROM {dblink}.dblink(conn_name, 'SELECT 1') AS r(v integer);",
        "SELECT * INTO value FROM {toolkit}.safe_dblink_query(conn_name, 'SELECT 1', "
        "NULL::integer);",
    ),
    "query_row": (
        "SELECT * INTO item FROM {dblink}.dblink(conn_name, {row_query}) AS r({columns});",
        "SELECT * INTO item FROM {toolkit}.safe_dblink_query(conn_name, {row_query}, "
        "NULL::{row_type});",
    ),
    # A hand-written asynchronous call with a time limit. It polls without sleeping, the
    # quickest way to notice a fast answer: what the toolkit adds on top includes its
    # polling schedule as well as its checks.
    "exec_timeout": (
        """
        started := pg_catalog.clock_timestamp();
        IF {dblink}.dblink_send_query(conn_name, {stmt}) <> 1 THEN
            RAISE EXCEPTION 'could not send: %', {dblink}.dblink_error_message(conn_name);
        END IF;
        WHILE {dblink}.dblink_is_busy(conn_name) = 1 LOOP
            IF pg_catalog.clock_timestamp() - started >= {timeout}::interval THEN
                PERFORM {dblink}.dblink_disconnect(conn_name);
                RAISE EXCEPTION 'timed out after %', {timeout};
            END IF;
        END LOOP;
        SELECT r.s INTO status FROM {dblink}.dblink_get_result(conn_name) AS r(s text);
        PERFORM 1 FROM {dblink}.dblink_get_result(conn_name) AS r(s text);
        """,
        "status := {toolkit}.safe_dblink_exec(conn_name, {stmt}, timeout => {timeout});",
    ),
    "exec_resolve": (
        "status := {dblink}.dblink_exec(conn_name, {update});",
        "status := {toolkit}.safe_dblink_exec(conn_name, {update}, resolve => true);",
    ),
}

_DECLARE = """
    status text;
    value integer;
    item pg_temp.pgdblink_safe_bench_row;
    started timestamptz;
"""

# A round of ``calls`` calls; returns its elapsed time in microseconds.
_ROUND_LOOP = (
    "DECLARE t0 timestamptz;"
    + _DECLARE
    + """
BEGIN
    t0 := pg_catalog.clock_timestamp();
    FOR i IN 1..calls LOOP
        {call}
    END LOOP;
    RETURN pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - t0) * 1000000;
END;
"""
)

# Calls for ``seconds``; the same clock read per call on both sides.
_TIMED_LOOP = (
    "DECLARE t0 timestamptz; deadline timestamptz;"
    + _DECLARE
    + """
BEGIN
    calls := 0;
    t0 := pg_catalog.clock_timestamp();
    deadline := t0 + pg_catalog.make_interval(secs => seconds);
    WHILE pg_catalog.clock_timestamp() < deadline LOOP
        {call}
        calls := calls + 1;
    END LOOP;
    elapsed_us := pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - t0) * 1000000;
END;
"""
)

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
    RETURN pg_catalog.date_part('epoch', t1 - t0) * 1000000;
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
    RETURN pg_catalog.date_part('epoch', t1 - t0) * 1000000;
END;
"""

_RECOVERY_ARGS = (
    "conn_name text, target text, control_name text, stmt text, "
    "timeout_s double precision, settle_s double precision"
)


def _loop_name(path: str, side: str, timed: bool = False) -> str:
    return f"pgdblink_safe_bench_{path}_{side}" + ("_timed" if timed else "")


def _helpers() -> dict[str, tuple[str, str, str]]:
    """name -> (arguments, return clause, body), in the order they are created."""
    helpers = {
        "pgdblink_safe_bench_floor": ("conn_name text, stmt text", "RETURNS text", _FLOOR),
        "pgdblink_safe_bench_kill": (
            "conn_name text, control_name text, timeout_s double precision, "
            "settle_s double precision",
            "RETURNS integer",
            _KILL,
        ),
        "pgdblink_safe_bench_safe_round": (
            _RECOVERY_ARGS,
            "RETURNS double precision",
            _SAFE_ROUND,
        ),
        "pgdblink_safe_bench_plain_round": (
            _RECOVERY_ARGS,
            "RETURNS double precision",
            _PLAIN_ROUND,
        ),
    }
    for path, calls in _CALLS.items():
        for side, call in zip(SIDES, calls, strict=True):
            helpers[_loop_name(path, side)] = (
                "conn_name text, calls integer",
                "RETURNS double precision",
                _ROUND_LOOP.replace("{call}", call),
            )
            helpers[_loop_name(path, side, timed=True)] = (
                "conn_name text, seconds double precision, OUT calls bigint, "
                "OUT elapsed_us double precision",
                "",
                _TIMED_LOOP.replace("{call}", call),
            )
    return helpers


_HELPER_NAMES = tuple(_helpers())


def _create_helpers(conn: psycopg.Connection[Any], dblink_schema: str, schema: str) -> None:
    conn.execute(
        sql.SQL("CREATE TYPE pg_temp.{} AS ({})").format(
            sql.Identifier(_ROW_TYPE), sql.SQL(ROW_COLUMNS)
        )
    )
    values = {
        "dblink": sql.Identifier(dblink_schema),
        "toolkit": sql.Identifier(schema),
        "stmt": sql.Literal(STATEMENT),
        "update": sql.Literal(UPDATE),
        "row_query": sql.Literal(ROW_QUERY),
        "columns": sql.SQL(ROW_COLUMNS),
        "row_type": sql.Identifier("pg_temp", _ROW_TYPE),
        "timeout": sql.Literal(TIMEOUT),
    }
    for name, (args, returns, body) in _helpers().items():
        # The body goes in as a string literal, so no schema name can end it early.
        text = sql.SQL(body).format(**values).as_string(conn)
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


def _remote_table(conn: psycopg.Connection[Any], dblink: sql.Identifier, create: bool) -> None:
    statement = (
        f"CREATE TEMP TABLE {_REMOTE_TABLE} (id integer PRIMARY KEY, n bigint NOT NULL); "
        f"INSERT INTO {_REMOTE_TABLE} VALUES (1, 0)"
        if create
        else f"DROP TABLE IF EXISTS pg_temp.{_REMOTE_TABLE}"
    )
    conn.execute(sql.SQL("SELECT {}.dblink_exec(%s, %s)").format(dblink), [_SAFE, statement])


def _cleanup(conn: psycopg.Connection[Any], dblink: sql.Identifier) -> None:
    # Closing the connection drops the remote temporary table with its session.
    for name in _open_connections(conn, dblink):
        if name in _NAMES:
            conn.execute(sql.SQL("SELECT {}.dblink_disconnect(%s)").format(dblink), [name])
    for name in _HELPER_NAMES:
        conn.execute(sql.SQL("DROP FUNCTION IF EXISTS pg_temp.{}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP TYPE IF EXISTS pg_temp.{}").format(sql.Identifier(_ROW_TYPE)))


@contextlib.contextmanager
def _prepared(
    conn: psycopg.Connection[Any], target: str, dblink_schema: str, schema: str
) -> Iterator[None]:
    """Helpers, the row type, the measured connection and its remote table; gone after."""
    dblink = sql.Identifier(dblink_schema)
    try:
        _create_helpers(conn, dblink_schema, schema)
        conn.execute(
            sql.SQL("SELECT {}.ensure_dblink_conn(%s, %s)").format(sql.Identifier(schema)),
            [_SAFE, target],
        )
        _remote_table(conn, dblink, create=True)
        yield
    except BaseException:
        # The first error is the one worth seeing; the session's end cleans up the rest.
        with contextlib.suppress(psycopg.Error):
            _cleanup(conn, dblink)
        raise
    _cleanup(conn, dblink)


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


def _round(conn: psycopg.Connection[Any], path: str, side: str, calls: int) -> float:
    """Microseconds ``calls`` calls of one side of one path took, timed by the server."""
    helper = _loop_name(path, side)
    row = conn.execute(
        sql.SQL("SELECT pg_temp.{}(%s, %s)").format(sql.Identifier(helper)), [_SAFE, calls]
    ).fetchone()
    return float(_one_row(row, f"pg_temp.{helper}()")[0])


def _timed(
    conn: psycopg.Connection[Any], path: str, side: str, seconds: float
) -> tuple[int, float]:
    """(calls, elapsed µs) of one side of one path called for ``seconds``."""
    helper = _loop_name(path, side, timed=True)
    row = conn.execute(
        sql.SQL("SELECT calls, elapsed_us FROM pg_temp.{}(%s, %s)").format(sql.Identifier(helper)),
        [_SAFE, seconds],
    ).fetchone()
    calls, elapsed = _one_row(row, f"pg_temp.{helper}()")
    return int(calls), float(elapsed)


def _recovery_round(
    conn: psycopg.Connection[Any], helper: str, name: str, target: str
) -> float | None:
    row = conn.execute(
        sql.SQL("SELECT pg_temp.{}(%s, %s, %s, %s, %s, %s)").format(sql.Identifier(helper)),
        [name, target, _CONTROL, STATEMENT, KILL_TIMEOUT_S, SETTLE_S],
    ).fetchone()
    (elapsed_us,) = _one_row(row, f"pg_temp.{helper}()")
    return None if elapsed_us is None else float(elapsed_us)


def _latency(
    conn: psycopg.Connection[Any], rounds: int, calls_per_round: int
) -> tuple[Comparison, ...]:
    samples: dict[tuple[str, str], list[float]] = {}
    for number in range(WARMUP_ROUNDS + rounds):
        for path in PATHS:
            for side in sides_in_round(number):
                elapsed = _round(conn, path.name, side, calls_per_round)
                if number >= WARMUP_ROUNDS:
                    samples.setdefault((path.name, side), []).append(elapsed)
    return tuple(
        Comparison(
            path,
            figures(per_call_us(samples[path.name, "raw"], calls_per_round)),
            figures(per_call_us(samples[path.name, "toolkit"], calls_per_round)),
        )
        for path in PATHS
    )


def _recovery(
    conn: psycopg.Connection[Any], dblink: sql.Identifier, target: str, rounds: int
) -> tuple[Comparison, int]:
    """Recovery figures, and how many rounds ran again (see SETTLE_S)."""
    conn.execute(sql.SQL("SELECT {}.dblink_connect(%s, %s)").format(dblink), [_CONTROL, target])
    conn.execute(sql.SQL("SELECT {}.dblink_connect(%s, %s)").format(dblink), [_PLAIN, target])
    measured: dict[str, list[float]] = {side: [] for side in SIDES}
    repeated = 0
    for number in range(WARMUP_ROUNDS + rounds):
        for side in sides_in_round(number):
            if side == "raw":
                elapsed = _recovery_round(conn, "pgdblink_safe_bench_plain_round", _PLAIN, target)
                if elapsed is None:
                    raise BenchError(
                        "pg_temp.pgdblink_safe_bench_plain_round() returned NULL instead of "
                        "the time plain dblink took to recover"
                    )
            else:
                while (
                    elapsed := _recovery_round(
                        conn, "pgdblink_safe_bench_safe_round", _SAFE, target
                    )
                ) is None:
                    repeated += 1
                    if repeated > rounds:
                        raise BenchError(
                            f"the remote backend's socket closed only after a statement was "
                            f"sent in {repeated} rounds: the server is too loaded to measure "
                            "recovery"
                        )
            if number >= WARMUP_ROUNDS:
                measured[side].append(elapsed)
    return Comparison(RECOVERY, figures(measured["raw"]), figures(measured["toolkit"])), repeated


def _throughput(
    connect: Connect,
    target: str,
    dblink_schema: str,
    schema: str,
    sessions: int,
    seconds: float,
) -> tuple[Throughput, ...]:
    """Calls/s of each side of each path with ``sessions`` sessions calling side by side.

    Each side runs twice, for half of ``seconds`` each time, in the order raw, toolkit,
    toolkit, raw, so that a drift in speed hits both alike.
    """
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(max_workers=sessions) as pool:
        conns = []
        for _ in range(sessions):
            conn = stack.enter_context(connect())
            stack.enter_context(_prepared(conn, target, dblink_schema, schema))
            for path in PATHS:
                for side in SIDES:
                    _round(conn, path.name, side, SESSION_WARMUP_CALLS)
            conns.append(conn)
        results = []
        for path in PATHS:
            rates: dict[str, list[float]] = {side: [] for side in SIDES}
            for side in (*SIDES, *reversed(SIDES)):
                halves = pool.map(
                    _timed, conns, repeat(path.name), repeat(side), repeat(seconds / 2)
                )
                rates[side].append(calls_per_second(list(halves)))
            results.append(
                Throughput(path, statistics.fmean(rates["raw"]), statistics.fmean(rates["toolkit"]))
            )
    return tuple(results)


def run_bench(
    conn: psycopg.Connection[Any],
    target: str,
    *,
    calls: int = 5000,
    rounds: int = 20,
    calls_per_round: int = CALLS_PER_ROUND,
    commits: int = 100,
    sessions: int = 0,
    session_seconds: float = 2.0,
    connect: Connect | None = None,
    schema: str = "dblink_safe",
    progress: Progress = _quiet,
) -> BenchResult:
    """Time each path of the toolkit against its raw dblink equivalent on ``target``.

    ``calls`` calls of each side of each path run in rounds of ``calls_per_round`` on one
    dblink connection, raw and toolkit alternating; ``rounds`` is the number of terminated
    remote backends each side recovers from. ``commits`` units of work of each side of each
    commit path (see commit_latency) run in rounds of COMMIT_UNITS_PER_ROUND. With
    ``sessions``, that many extra sessions (opened with ``connect``, each in its own thread)
    then call each side of each path for ``session_seconds``, for calls per second.

    ``conn`` must be in autocommit mode and have no dblink connection open under the
    benchmark's names; ``target`` is a libpq connection string or foreign server name the
    server's dblink connects to. Every helper lives in pg_temp and is dropped, and every
    dblink connection (and with it the remote temporary table) is closed, before this returns.
    """
    if rounds < 1:
        raise BenchError(f"rounds must be at least 1, not {rounds}")
    try:
        latency_rounds, per_round = split_calls(calls, calls_per_round)
        commit_rounds, units_per_round = split_calls(commits, COMMIT_UNITS_PER_ROUND)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    if sessions < 0 or (sessions and (connect is None or session_seconds <= 0)):
        raise BenchError(
            "sessions needs a way to connect and a positive duration, and cannot be negative"
        )
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
    with _prepared(conn, target, dblink_schema, schema):
        progress(
            f"timing {len(PATHS)} paths against raw dblink: {latency_rounds} round(s) of "
            f"{per_round} calls of each side, alternating on one connection (after "
            f"{WARMUP_ROUNDS} warm-up round) ..."
        )
        started = time.monotonic()
        pid_before = _remote_pid(conn, dblink, _SAFE)
        latency = _latency(conn, latency_rounds, per_round)
        same_backend = _remote_pid(conn, dblink, _SAFE) == pid_before
        _remote_table(conn, dblink, create=False)
        progress(f"  done in {time.monotonic() - started:.1f} s")
        if not same_backend:
            progress("  warning: the toolkit replaced the connection during the measurement")

        progress(
            f"measuring recovery after pg_terminate_backend: {rounds} rounds each for "
            f"safe_dblink_exec and plain dblink (after {WARMUP_ROUNDS} warm-up round) ..."
        )
        started = time.monotonic()
        recovery, repeated = _recovery(conn, dblink, target, rounds)
        progress(f"  done in {time.monotonic() - started:.1f} s")
        if repeated:
            progress(f"  {repeated} round(s) lost the statement after sending it and ran again")

    progress(
        f"timing fanout_exec on {FANOUT_NODES} connections against a hand-written "
        f"send/collect loop: {latency_rounds} round(s) of {per_round} calls of each side ..."
    )
    started = time.monotonic()
    fanout = _fanout(conn, target, dblink_schema, schema, latency_rounds, per_round)
    progress(f"  done in {time.monotonic() - started:.1f} s")

    progress(
        "timing autonomous_exec against a connection per call and a kept connection to this "
        f"database: {latency_rounds} round(s) of {per_round} calls of each side ..."
    )
    started = time.monotonic()
    compared: tuple[Comparison, ...] = ()
    skipped = ""
    try:
        compared = autonomous(conn, dblink_schema, schema, latency_rounds, per_round)
        progress(f"  done in {time.monotonic() - started:.1f} s")
    except psycopg.Error as exc:
        # A role that cannot reach its own database (no autonomous_server, not a superuser).
        skipped = str(exc).strip().splitlines()[0]
        progress(f"  skipped: {skipped}")

    progress(
        "timing units of work (one local transaction, an INSERT on each of "
        f"{' and '.join(map(str, COMMIT_PARTICIPANTS))} transaction-scoped connections, COMMIT): "
        "remote_tx => true alone against two_phase => true, "
        f"{commit_rounds} round(s) of {units_per_round} units of each side, alternating ..."
    )
    started = time.monotonic()
    commit: CommitResult | None = None
    commit_skipped = ""
    try:
        commit = commit_latency(
            conn, target, dblink_schema, schema, commit_rounds, units_per_round, connect
        )
        progress(f"  done in {time.monotonic() - started:.1f} s")
        if commit.two_phase_skipped:
            progress(f"  two-phase commit skipped: {commit.two_phase_skipped}")
        elif commit.resolver_skipped:
            progress(f"  resolve_prepared skipped: {commit.resolver_skipped}")
    except psycopg.Error as exc:
        # No table can be created on the remote, say.
        commit_skipped = _first_line(exc)
        progress(f"  skipped: {commit_skipped}")

    throughput: tuple[Throughput, ...] = ()
    if sessions and connect is not None:
        progress(
            f"measuring calls/s with {sessions} concurrent session(s): {session_seconds:g} s "
            f"for each side of each of {len(PATHS)} paths ..."
        )
        started = time.monotonic()
        throughput = _throughput(connect, target, dblink_schema, schema, sessions, session_seconds)
        progress(f"  done in {time.monotonic() - started:.1f} s")
    return BenchResult(
        server_version=str(version_row[0]).split()[0],
        server_version_num=int(version_row[1]),
        schema=schema,
        installed_version=state.installed_version,
        validation_window_ms=settings.validation_window_ms,
        calls_per_round=per_round,
        latency_rounds=latency_rounds,
        warmup_rounds=WARMUP_ROUNDS,
        latency=latency,
        recovery=recovery,
        recovery_rounds=rounds,
        same_remote_backend=same_backend,
        repeated_rounds=repeated,
        sessions=sessions,
        session_seconds=session_seconds if sessions else 0.0,
        throughput=throughput,
        fanout=fanout,
        autonomous=compared,
        autonomous_skipped=skipped,
        commit=commit,
        commit_skipped=commit_skipped,
    )


# -- fan-out: fanout_exec against the loop people write by hand, on the same connections ----

#: Connections the fan-out path runs on, all to the target.
FANOUT_NODES = 4
FANOUT = Path(
    "fanout",
    f"fan-out to {FANOUT_NODES} connections",
    f"fanout_exec(<{FANOUT_NODES} names>, stmt)",
    "dblink_send_query to each, then per connection poll dblink_is_busy without sleeping "
    "and dblink_get_result twice",
)
_FANOUT_NAMES = tuple(f"pgdblink_safe_bench_fan{i}" for i in range(1, FANOUT_NODES + 1))
_FANOUT_HELPERS = ("pgdblink_safe_bench_fanout_raw", "pgdblink_safe_bench_fanout_toolkit")

_FANOUT_RAW = """
DECLARE
    t0 timestamptz;
    name text;
    status text;
BEGIN
    t0 := pg_catalog.clock_timestamp();
    FOR i IN 1..calls LOOP
        FOREACH name IN ARRAY names LOOP
            IF {dblink}.dblink_send_query(name, {stmt}) <> 1 THEN
                RAISE EXCEPTION 'could not send: %', {dblink}.dblink_error_message(name);
            END IF;
        END LOOP;
        FOREACH name IN ARRAY names LOOP
            WHILE {dblink}.dblink_is_busy(name) = 1 LOOP
            END LOOP;
            SELECT r.s INTO status FROM {dblink}.dblink_get_result(name) AS r(s text);
            PERFORM 1 FROM {dblink}.dblink_get_result(name) AS r(s text);
        END LOOP;
    END LOOP;
    RETURN pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - t0) * 1000000;
END;
"""

_FANOUT_TOOLKIT = """
DECLARE
    t0 timestamptz;
    failed bigint;
BEGIN
    t0 := pg_catalog.clock_timestamp();
    FOR i IN 1..calls LOOP
        SELECT pg_catalog.count(f.sqlstate) INTO failed
        FROM {toolkit}.fanout_exec(names, {stmt}) AS f;
        IF failed <> 0 THEN
            RAISE EXCEPTION 'fanout_exec failed on % connection(s)', failed;
        END IF;
    END LOOP;
    RETURN pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - t0) * 1000000;
END;
"""


def _fanout(
    conn: psycopg.Connection[Any],
    target: str,
    dblink_schema: str,
    schema: str,
    rounds: int,
    calls_per_round: int,
) -> Comparison:
    """Per-call figures of both sides, alternating rounds on the same connections."""
    dblink = sql.Identifier(dblink_schema)
    toolkit = sql.Identifier(schema)
    values = {"dblink": dblink, "toolkit": toolkit, "stmt": sql.Literal(STATEMENT)}
    try:
        for name, body in zip(_FANOUT_HELPERS, (_FANOUT_RAW, _FANOUT_TOOLKIT), strict=True):
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION pg_temp.{}(names text[], calls integer) "
                    "RETURNS double precision LANGUAGE plpgsql "
                    "SET search_path = pg_catalog, pg_temp AS {}"
                ).format(
                    sql.Identifier(name),
                    sql.Literal(sql.SQL(body).format(**values).as_string(conn)),
                )
            )
        for name in _FANOUT_NAMES:
            conn.execute(
                sql.SQL("SELECT {}.ensure_dblink_conn(%s, %s)").format(toolkit), [name, target]
            )
        samples: dict[str, list[float]] = {side: [] for side in SIDES}
        for number in range(WARMUP_ROUNDS + rounds):
            for side in sides_in_round(number):
                row = conn.execute(
                    sql.SQL("SELECT pg_temp.{}(%s, %s)").format(
                        sql.Identifier(f"pgdblink_safe_bench_fanout_{side}")
                    ),
                    [list(_FANOUT_NAMES), calls_per_round],
                ).fetchone()
                if number >= WARMUP_ROUNDS:
                    samples[side].append(float(_one_row(row, f"fan-out round, {side}")[0]))
    finally:
        with contextlib.suppress(psycopg.Error):
            for name in _FANOUT_NAMES:
                conn.execute(
                    sql.SQL("SELECT {}.safe_dblink_disconnect(%s)").format(toolkit), [name]
                )
            for name in _FANOUT_HELPERS:
                conn.execute(
                    sql.SQL("DROP FUNCTION IF EXISTS pg_temp.{}").format(sql.Identifier(name))
                )
    return Comparison(
        FANOUT,
        figures(per_call_us(samples["raw"], calls_per_round)),
        figures(per_call_us(samples["toolkit"], calls_per_round)),
    )


# -- autonomous transactions: autonomous_exec against the pragma's usual emulation ----------

#: The autonomous path's sides: autonomous_exec, a new connection per call (how the pragma is
#: usually converted), and safe_dblink_exec on a connection kept open to the same database.
AUTONOMOUS = Path(
    "autonomous",
    "autonomous vs connect per call",
    "autonomous_exec(stmt)",
    "dblink_connect to the same database, dblink_exec, dblink_disconnect, per call",
)
AUTONOMOUS_KEPT = Path(
    "autonomous_kept",
    "autonomous vs a kept connection",
    "autonomous_exec(stmt)",
    "safe_dblink_exec(c, stmt) on a connection kept open to the same database",
)
_AUTONOMOUS_NAME = "pgdblink_safe_bench_self"
_AUTONOMOUS_RAW_NAME = "pgdblink_safe_bench_self_raw"
_AUTONOMOUS_SIDES = ("connect", "kept", "autonomous")
_AUTONOMOUS_BODIES = {
    "connect": """
DECLARE
    t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
    FOR i IN 1..calls LOOP
        PERFORM {dblink}.dblink_connect({raw_name}, target);
        PERFORM {dblink}.dblink_exec({raw_name}, {stmt});
        PERFORM {dblink}.dblink_disconnect({raw_name});
    END LOOP;
    RETURN pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - t0) * 1000000;
END;
""",
    "kept": """
DECLARE
    t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
    FOR i IN 1..calls LOOP
        PERFORM {toolkit}.safe_dblink_exec({name}, {stmt});
    END LOOP;
    RETURN pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - t0) * 1000000;
END;
""",
    "autonomous": """
DECLARE
    t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
    FOR i IN 1..calls LOOP
        PERFORM {toolkit}.autonomous_exec({stmt});
    END LOOP;
    RETURN pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - t0) * 1000000;
END;
""",
}


def _autonomous_helper(side: str) -> str:
    return f"pgdblink_safe_bench_autonomous_{side}"


def autonomous(
    conn: psycopg.Connection[Any],
    dblink_schema: str,
    schema: str,
    rounds: int,
    calls_per_round: int,
) -> tuple[Comparison, Comparison]:
    """autonomous_exec against a connection opened per call and against a kept connection,
    all three to the database ``conn`` is in, in alternating rounds.

    The other two sides connect where autonomous_exec does: its connection's target, read
    from connections() after a first call. Every connection, autonomous_exec's among them,
    and every helper is gone after.
    """
    dblink = sql.Identifier(dblink_schema)
    toolkit = sql.Identifier(schema)
    values = {
        "dblink": dblink,
        "toolkit": toolkit,
        "stmt": sql.Literal(STATEMENT),
        "name": sql.Literal(_AUTONOMOUS_NAME),
        "raw_name": sql.Literal(_AUTONOMOUS_RAW_NAME),
    }
    link: str | None = None
    try:
        conn.execute(sql.SQL("SELECT {}.autonomous_exec(%s)").format(toolkit), [STATEMENT])
        row = conn.execute(
            sql.SQL(
                "SELECT c.conn_name, c.target FROM {}.connections() AS c "
                "WHERE c.conn_name LIKE 'autonomous%%'"
            ).format(toolkit)
        ).fetchone()
        link, target = _one_row(row, "the autonomous connection in connections()")
        for side in _AUTONOMOUS_SIDES:
            conn.execute(
                sql.SQL(
                    "CREATE FUNCTION pg_temp.{}(target text, calls integer) "
                    "RETURNS double precision LANGUAGE plpgsql "
                    "SET search_path = pg_catalog, pg_temp AS {}"
                ).format(
                    sql.Identifier(_autonomous_helper(side)),
                    sql.Literal(sql.SQL(_AUTONOMOUS_BODIES[side]).format(**values).as_string(conn)),
                )
            )
        conn.execute(
            sql.SQL("SELECT {}.ensure_dblink_conn(%s, %s)").format(toolkit),
            [_AUTONOMOUS_NAME, target],
        )
        samples: dict[str, list[float]] = {side: [] for side in _AUTONOMOUS_SIDES}
        for number in range(WARMUP_ROUNDS + rounds):
            # Each side goes first in turn.
            shift = number % len(_AUTONOMOUS_SIDES)
            for side in (*_AUTONOMOUS_SIDES[shift:], *_AUTONOMOUS_SIDES[:shift]):
                row = conn.execute(
                    sql.SQL("SELECT pg_temp.{}(%s, %s)").format(
                        sql.Identifier(_autonomous_helper(side))
                    ),
                    [target, calls_per_round],
                ).fetchone()
                if number >= WARMUP_ROUNDS:
                    samples[side].append(float(_one_row(row, f"autonomous round, {side}")[0]))
    finally:
        with contextlib.suppress(psycopg.Error):
            for name in (_AUTONOMOUS_NAME, *([link] if link else [])):
                conn.execute(
                    sql.SQL("SELECT {}.safe_dblink_disconnect(%s)").format(toolkit), [name]
                )
            if _AUTONOMOUS_RAW_NAME in _open_connections(conn, dblink):
                conn.execute(
                    sql.SQL("SELECT {}.dblink_disconnect(%s)").format(dblink),
                    [_AUTONOMOUS_RAW_NAME],
                )
            for side in _AUTONOMOUS_SIDES:
                conn.execute(
                    sql.SQL("DROP FUNCTION IF EXISTS pg_temp.{}").format(
                        sql.Identifier(_autonomous_helper(side))
                    )
                )
    figures_of = {side: figures(per_call_us(samples[side], calls_per_round)) for side in samples}
    return (
        Comparison(AUTONOMOUS, figures_of["connect"], figures_of["autonomous"]),
        Comparison(AUTONOMOUS_KEPT, figures_of["kept"], figures_of["autonomous"]),
    )


# -- commit: a unit of work on transaction-scoped connections, remote_tx alone and two-phase --

#: Participants (transaction-scoped connections to the target) of a unit of work.
COMMIT_PARTICIPANTS = (1, 4)
#: Units of work timed together; the figures are of the rounds' per-unit times.
COMMIT_UNITS_PER_ROUND = 5
#: The remote table each participant inserts a row into. Not a temporary one: a remote
#: transaction that used a temporary table cannot be prepared.
COMMIT_TABLE = "pgdblink_safe_bench_commits"
COMMIT_INSERT = f"INSERT INTO {COMMIT_TABLE} (n) VALUES (1)"
_COMMIT_CONTROL = "pgdblink_safe_bench_commit_control"
_COMMIT_NAMES = tuple(
    f"pgdblink_safe_bench_unit{i}" for i in range(1, max(COMMIT_PARTICIPANTS) + 1)
)
_COMMIT_HELPER = "pgdblink_safe_bench_commit"
_RESOLVE_HELPER = "pgdblink_safe_bench_resolve"
#: The sides of the commit paths: remote_tx => true alone (one remote COMMIT at local
#: pre-commit), two-phase with finish_prepared() right after COMMIT, and two-phase finished by
#: the next unit's first ensure_dblink_conn.
_COMMIT_SIDES = ("remote_tx", "two_phase", "next_call")

# One round of ``units`` units of work. finish: 'none' (remote_tx alone), 'finish_prepared'
# (CALL finish_prepared() right after COMMIT), 'next_call' (phase 2 by the next unit's first
# ensure_dblink_conn; one more unit runs, and the last is finished by finish_prepared), or
# 'leave' (phase 2 left for the resolver). A procedure, so that it can COMMIT; without a SET
# clause for that reason, so every name in it is qualified.
_COMMIT_BODY = """
DECLARE
    t0 timestamptz;
    t1 timestamptz;
    t2 timestamptz;
    committed_at timestamptz;
    status text;
BEGIN
    unit_us := 0;
    commit_us := 0;
    held_us := 0;
    FOR i IN 1 .. units + CASE WHEN finish = 'next_call' THEN 1 ELSE 0 END LOOP
        t0 := pg_catalog.clock_timestamp();
        FOR j IN 1 .. participants LOOP
            PERFORM {toolkit}.ensure_dblink_conn(names[j], target, scope => 'transaction',
                remote_tx => true, two_phase => finish <> 'none');
            IF j = 1 AND committed_at IS NOT NULL THEN
                held_us := held_us + pg_catalog.date_part('epoch',
                    pg_catalog.clock_timestamp() - committed_at) * 1000000;
            END IF;
            status := {toolkit}.safe_dblink_exec(names[j], {insert});
        END LOOP;
        t1 := pg_catalog.clock_timestamp();
        COMMIT;
        t2 := pg_catalog.clock_timestamp();
        IF finish = 'finish_prepared' THEN
            CALL {toolkit}.finish_prepared();
            held_us := held_us + pg_catalog.date_part('epoch',
                pg_catalog.clock_timestamp() - t2) * 1000000;
        ELSIF finish = 'next_call' THEN
            committed_at := t2;
        END IF;
        IF finish <> 'next_call' OR i > 1 THEN
            unit_us := unit_us + pg_catalog.date_part('epoch',
                pg_catalog.clock_timestamp() - t0) * 1000000;
            commit_us := commit_us + pg_catalog.date_part('epoch', t2 - t1) * 1000000;
        END IF;
    END LOOP;
    IF finish = 'next_call' THEN
        CALL {toolkit}.finish_prepared();
    END IF;
END;
"""

# In a second session: one run of the resolver with no minimum age, timed.
_RESOLVE_BODY = """
DECLARE
    t0 timestamptz := pg_catalog.clock_timestamp();
BEGIN
    SELECT pg_catalog.array_agg(r.decision ORDER BY r.decision) INTO decisions
    FROM {toolkit}.resolve_prepared('0 s') AS r;
    elapsed_us := pg_catalog.date_part('epoch', pg_catalog.clock_timestamp() - t0) * 1000000;
END;
"""


@dataclass(frozen=True)
class CommitPath:
    """Per-unit figures of one commit path: remote_tx alone against two-phase commit."""

    name: str
    label: str
    remote_tx: Figures
    #: None when two-phase commit was not measured (see CommitResult.two_phase_skipped).
    two_phase: Figures | None

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {"label": self.label}
        for quantile in ("median", "p99"):
            base = getattr(self.remote_tx, f"{quantile}_us")
            two = None if self.two_phase is None else getattr(self.two_phase, f"{quantile}_us")
            result[quantile] = {
                "remote_tx_us": round(base, 2),
                "two_phase_us": None if two is None else round(two, 2),
                "added_us": None if two is None else round(added_us(two, base), 2),
                "ratio": None if two is None else rounded(ratio(two, base)),
            }
        return result


@dataclass(frozen=True)
class Held:
    """How long remote locks stay held after the local COMMIT returns, by one finishing route."""

    name: str
    label: str
    how: str
    figures: Figures

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "how": self.how,
            "median_us": round(self.figures.median_us, 2),
            "p99_us": round(self.figures.p99_us, 2),
        }


@dataclass(frozen=True)
class CommitResult:
    units_per_round: int
    rounds: int
    #: A unit of work (start to end, phase 2 included), then the COMMIT alone, each per
    #: number of participants.
    paths: tuple[CommitPath, ...]
    #: Empty when two-phase commit was not measured.
    held: tuple[Held, ...] = ()
    #: Rounds of resolve_prepared('0 s') with one pending GID.
    resolver_rounds: int = 0
    #: resolve_prepared's default min_age in seconds, as installed; None when not read.
    resolver_min_age_s: float | None = None
    two_phase_skipped: str = ""
    resolver_skipped: str = ""

    @property
    def units(self) -> int:
        """Timed units of work of each side of each path."""
        return self.units_per_round * self.rounds

    def as_dict(self) -> dict[str, Any]:
        return {
            "participants": list(COMMIT_PARTICIPANTS),
            "units": self.units,
            "units_per_round": self.units_per_round,
            "rounds": self.rounds,
            "insert": COMMIT_INSERT,
            "paths": {p.name: p.as_dict() for p in self.paths},
            "locks_held": {h.name: h.as_dict() for h in self.held} if self.held else None,
            "resolver_rounds": self.resolver_rounds,
            "resolver_min_age_s": self.resolver_min_age_s,
            "two_phase_skipped": self.two_phase_skipped or None,
            "resolver_skipped": self.resolver_skipped or None,
        }


def _participants(n: int) -> str:
    return f"{n} participant" + ("" if n == 1 else "s")


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _control_value(conn: psycopg.Connection[Any], dblink: sql.Identifier, query: str) -> Any:
    row = conn.execute(
        sql.SQL("SELECT r.v FROM {}.dblink(%s, %s) AS r(v text)").format(dblink),
        [_COMMIT_CONTROL, query],
    ).fetchone()
    return _one_row(row, query)[0]


def _control_exec(conn: psycopg.Connection[Any], dblink: sql.Identifier, statement: str) -> None:
    conn.execute(
        sql.SQL("SELECT {}.dblink_exec(%s, %s)").format(dblink), [_COMMIT_CONTROL, statement]
    )


def _commit_round(
    conn: psycopg.Connection[Any], target: str, participants: int, finish: str, units: int
) -> tuple[float, float, float]:
    """(unit µs, COMMIT µs, locks held µs), each summed over ``units`` units of work."""
    row = conn.execute(
        sql.SQL("CALL pg_temp.{}(%s, %s, %s, %s, %s, NULL, NULL, NULL)").format(
            sql.Identifier(_COMMIT_HELPER)
        ),
        [target, list(_COMMIT_NAMES[:participants]), participants, finish, units],
    ).fetchone()
    unit, commit, held = _one_row(row, f"CALL pg_temp.{_COMMIT_HELPER}()")
    return float(unit), float(commit), float(held)


def _resolver_min_age_s(conn: psycopg.Connection[Any], toolkit: sql.Identifier) -> float | None:
    """resolve_prepared's default min_age in seconds, as the installed function declares it."""
    row = conn.execute(
        sql.SQL(
            "SELECT pg_catalog.date_part('epoch', (pg_catalog.regexp_match("
            "pg_catalog.pg_get_function_arguments(%s::pg_catalog.regprocedure), "
            "$$min_age interval DEFAULT '([^']*)'$$))[1]::interval)"
        ),
        [sql.SQL("{}.resolve_prepared(interval, boolean)").format(toolkit).as_string(conn)],
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _resolver(
    conn: psycopg.Connection[Any],
    connect: Connect,
    target: str,
    schema: str,
    rounds: int,
) -> Figures:
    """resolve_prepared('0 s') run time from a second session, each round with one pending
    GID: a two-phase unit of work on one participant committed and left unfinished."""
    toolkit = sql.Identifier(schema)
    with connect() as other:
        other.execute(
            sql.SQL(
                "CREATE FUNCTION pg_temp.{}(OUT elapsed_us double precision, OUT decisions text[]) "
                "LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS {}"
            ).format(
                sql.Identifier(_RESOLVE_HELPER),
                sql.Literal(sql.SQL(_RESOLVE_BODY).format(toolkit=toolkit).as_string(other)),
            )
        )
        samples = []
        for number in range(WARMUP_ROUNDS + rounds):
            _commit_round(conn, target, 1, "leave", 1)
            try:
                row = other.execute(
                    sql.SQL("SELECT elapsed_us, decisions FROM pg_temp.{}()").format(
                        sql.Identifier(_RESOLVE_HELPER)
                    )
                ).fetchone()
            finally:
                # Phase 2 is done already: this finds the GID gone and closes the connection.
                conn.execute(sql.SQL("CALL {}.finish_prepared()").format(toolkit))
            elapsed, decisions = _one_row(row, f"pg_temp.{_RESOLVE_HELPER}()")
            if "committed" not in (decisions or []):
                raise BenchError(
                    "resolve_prepared('0 s') did not commit the pending GID: decisions "
                    f"{', '.join(decisions or []) or '(none)'}"
                )
            if number >= WARMUP_ROUNDS:
                samples.append(float(elapsed))
    return figures(samples)


def commit_latency(
    conn: psycopg.Connection[Any],
    target: str,
    dblink_schema: str,
    schema: str,
    rounds: int,
    units_per_round: int,
    connect: Connect | None = None,
) -> CommitResult:
    """Units of work on 1 and 4 transaction-scoped connections with remote_tx => true,
    committed with one remote COMMIT each, against two_phase => true, in alternating rounds.

    Two-phase commit is skipped, with the reason in two_phase_skipped, when the remote cannot
    prepare transactions (max_prepared_transactions = 0) or the toolkit refuses it for this
    target; the resolver's run time needs ``connect`` for a second session. The remote table,
    the helpers, every connection the units opened and the target's entry in
    two_phase_targets (when it was not there before) are gone after.
    """
    dblink = sql.Identifier(dblink_schema)
    toolkit = sql.Identifier(schema)
    table_made = False
    open_before = set(_open_connections(conn, dblink))
    targets = sql.SQL("SELECT 1 FROM {}.two_phase_targets WHERE target = %s").format(toolkit)
    recorded_before = conn.execute(targets, [target]).fetchone() is not None
    two_phase_skipped = ""
    resolver_skipped = ""
    try:
        conn.execute(
            sql.SQL("SELECT {}.dblink_connect(%s, %s)").format(dblink), [_COMMIT_CONTROL, target]
        )
        _control_exec(conn, dblink, f"CREATE TABLE {COMMIT_TABLE} (n integer)")
        table_made = True
        conn.execute(
            sql.SQL(
                "CREATE PROCEDURE pg_temp.{}(target text, names text[], participants integer, "
                "finish text, units integer, INOUT unit_us double precision, "
                "INOUT commit_us double precision, INOUT held_us double precision) "
                "LANGUAGE plpgsql AS {}"
            ).format(
                sql.Identifier(_COMMIT_HELPER),
                sql.Literal(
                    sql.SQL(_COMMIT_BODY)
                    .format(toolkit=toolkit, insert=sql.Literal(COMMIT_INSERT))
                    .as_string(conn)
                ),
            )
        )
        slots = int(_control_value(conn, dblink, "SHOW max_prepared_transactions"))
        sides: tuple[str, ...] = _COMMIT_SIDES
        if slots == 0:
            two_phase_skipped = (
                "the remote server's max_prepared_transactions is 0, so it cannot prepare "
                "transactions (set it above 0 and restart it to measure two-phase commit)"
            )
        else:
            try:
                _commit_round(conn, target, 1, "finish_prepared", 1)
            except psycopg.Error as exc:
                # A target with a password, or one that cannot be recorded for the resolver.
                two_phase_skipped = _first_line(exc)
        if two_phase_skipped:
            sides = _COMMIT_SIDES[:1]
        finish = {"remote_tx": "none", "two_phase": "finish_prepared", "next_call": "next_call"}
        samples: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
        for number in range(WARMUP_ROUNDS + rounds):
            shift = number % len(sides)
            for n in COMMIT_PARTICIPANTS:
                for side in (*sides[shift:], *sides[:shift]):
                    sums = _commit_round(conn, target, n, finish[side], units_per_round)
                    if number >= WARMUP_ROUNDS:
                        samples.setdefault((n, side), []).append(sums)

        def per_unit(n: int, side: str, field: int) -> Figures:
            return figures(per_call_us([s[field] for s in samples[n, side]], units_per_round))

        two = not two_phase_skipped
        paths = tuple(
            CommitPath(
                f"{what}_{n}",
                f"{label}, {_participants(n)}",
                per_unit(n, "remote_tx", field),
                per_unit(n, "two_phase", field) if two else None,
            )
            for what, label, field in (("unit", "unit of work", 0), ("commit", "COMMIT alone", 1))
            for n in COMMIT_PARTICIPANTS
        )
        held: list[Held] = []
        resolver_figures: Figures | None = None
        min_age: float | None = None
        if two:
            held += [
                Held(
                    f"finish_prepared_{n}",
                    f"finish_prepared(), {_participants(n)}",
                    "CALL finish_prepared() right after COMMIT: its run time",
                    per_unit(n, "two_phase", 2),
                )
                for n in COMMIT_PARTICIPANTS
            ]
            held += [
                Held(
                    f"next_call_{n}",
                    f"next ensure_dblink_conn, {_participants(n)}",
                    "the next unit's first ensure_dblink_conn (which opens its own connection "
                    "after phase 2): from COMMIT's return to the end of that call",
                    per_unit(n, "next_call", 2),
                )
                for n in COMMIT_PARTICIPANTS
            ]
            min_age = _resolver_min_age_s(conn, toolkit)
            if connect is None:
                resolver_skipped = "a second session is needed (no way to connect given)"
            else:
                try:
                    resolver_figures = _resolver(conn, connect, target, schema, rounds)
                except psycopg.Error as exc:
                    # A role that does not own the commit records, say.
                    resolver_skipped = _first_line(exc)
            if resolver_figures is not None:
                held.append(
                    Held(
                        "resolve_prepared",
                        "resolve_prepared('0 s'), 1 pending GID",
                        "run time of resolve_prepared('0 s') in another session, with one "
                        "committed GID pending; by default it leaves a GID younger than "
                        "min_age alone",
                        resolver_figures,
                    )
                )
        return CommitResult(
            units_per_round=units_per_round,
            rounds=rounds,
            paths=paths,
            held=tuple(held),
            resolver_rounds=rounds if resolver_figures is not None else 0,
            resolver_min_age_s=min_age,
            two_phase_skipped=two_phase_skipped,
            resolver_skipped=resolver_skipped,
        )
    finally:
        with contextlib.suppress(psycopg.Error):
            # Phase 2 of anything a failed round left prepared, and the connections closed.
            conn.execute(sql.SQL("CALL {}.finish_prepared()").format(toolkit))
        with contextlib.suppress(psycopg.Error):
            # The autonomous connection that recorded the target for the resolver; the
            # units' own connections were closed by finish_prepared().
            for name in set(_open_connections(conn, dblink)) - open_before:
                if name.startswith("autonomous"):
                    conn.execute(
                        sql.SQL("SELECT {}.safe_dblink_disconnect(%s)").format(toolkit), [name]
                    )
        with contextlib.suppress(psycopg.Error):
            if table_made:
                _control_exec(conn, dblink, "SET lock_timeout = '5s'")
                _control_exec(conn, dblink, f"DROP TABLE IF EXISTS {COMMIT_TABLE}")
        with contextlib.suppress(psycopg.Error):
            if _COMMIT_CONTROL in _open_connections(conn, dblink):
                conn.execute(
                    sql.SQL("SELECT {}.dblink_disconnect(%s)").format(dblink), [_COMMIT_CONTROL]
                )
        with contextlib.suppress(psycopg.Error):
            conn.execute(
                sql.SQL("DROP PROCEDURE IF EXISTS pg_temp.{}").format(
                    sql.Identifier(_COMMIT_HELPER)
                )
            )
        if not recorded_before:
            with contextlib.suppress(psycopg.Error):
                conn.execute(
                    sql.SQL("DELETE FROM {}.two_phase_targets WHERE target = %s").format(toolkit),
                    [target],
                )
