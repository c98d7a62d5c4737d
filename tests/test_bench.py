"""pgdblink-safe bench: its arithmetic, its output, and one real run that leaves nothing behind."""

import dataclasses
import json
import math
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from psycopg import sql
from servers import Server, wait_for

import pgdblink_safe
from pgdblink_safe import bench
from pgdblink_safe.cli import _bench_lines
from pgdblink_safe.errors import BenchError
from pgdblink_safe.generator import latest_version

PATH_NAMES = [path.name for path in bench.PATHS]
COMMIT_PATH_NAMES = [f"{what}_{n}" for what in ("unit", "commit") for n in (1, 4)]
HELD_NAMES = [
    *(f"{route}_{n}" for route in ("finish_prepared", "next_call") for n in (1, 4)),
    "resolve_prepared",
]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgdblink_safe", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def objects(conn: psycopg.Connection[Any]) -> set[str]:
    """Every relation, function, type and schema outside the temporary schemas."""
    rows = conn.execute(
        r"""
        SELECT 'class ' || n.nspname || '.' || c.relname FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname !~ '^pg_(toast_)?temp_'
        UNION ALL
        SELECT 'function ' || p.oid::regprocedure::text FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname !~ '^pg_(toast_)?temp_'
        UNION ALL
        SELECT 'type ' || t.oid::regtype::text FROM pg_type t
        JOIN pg_namespace n ON n.oid = t.typnamespace WHERE n.nspname !~ '^pg_(toast_)?temp_'
        UNION ALL
        SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname !~ '^pg_(toast_)?temp_'
        """
    ).fetchall()
    return {row[0] for row in rows}


def bench_objects(conn: psycopg.Connection[Any]) -> list[str]:
    """The benchmark's functions, types and tables, in any schema, temporary ones included."""
    rows = conn.execute(
        r"""
        SELECT oid::regprocedure::text FROM pg_proc WHERE proname LIKE 'pgdblink\_safe\_bench%'
        UNION ALL
        SELECT typname FROM pg_type WHERE typname LIKE 'pgdblink\_safe\_bench%'
        UNION ALL
        SELECT relname FROM pg_class WHERE relname LIKE 'pgdblink\_safe\_bench%'
        """
    ).fetchall()
    return [row[0] for row in rows]


def wait_for_backends(server: Server, dbname: str, expected: list[int]) -> None:
    """dblink_disconnect does not wait for the remote backend to exit; this does."""
    wait_for(
        lambda: server.backend_pids(dbname) == expected,
        10,
        f"the client backends of {dbname} to be {expected} again",
    )


def comparison(path: bench.Path, raw: tuple[float, float], toolkit: tuple[float, float]) -> Any:
    return bench.Comparison(path, bench.Figures(*raw), bench.Figures(*toolkit))


def made_up_result(sessions: int = 0) -> bench.BenchResult:
    """A result with round figures, as run_bench would build it."""
    latency = tuple(
        comparison(path, (80.0 + i, 200.0), (90.0 + 2 * i, 250.5))
        for i, path in enumerate(bench.PATHS)
    )
    throughput = tuple(bench.Throughput(path, 10000.0, 7400.0) for path in bench.PATHS)
    return bench.BenchResult(
        server_version="15.18",
        server_version_num=150018,
        schema="dblink_safe",
        installed_version=2,
        validation_window_ms=1000,
        calls_per_round=50,
        latency_rounds=100,
        warmup_rounds=1,
        latency=latency,
        recovery=comparison(bench.RECOVERY, (2700.0, 4800.0), (3400.0, 4900.0)),
        recovery_rounds=20,
        same_remote_backend=True,
        sessions=sessions,
        session_seconds=2.0 if sessions else 0.0,
        throughput=throughput if sessions else (),
    )


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert bench.percentile([3.0], 0.99) == 3.0
    assert bench.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert bench.percentile([float(v) for v in range(101)], 0.99) == 99.0
    with pytest.raises(ValueError):
        bench.percentile([], 0.5)


def test_figures_are_median_and_p99_of_per_call_figures() -> None:
    per_call = bench.per_call_us([1000.0, 3000.0, 2000.0, 500.0], 10)
    assert per_call == [100.0, 300.0, 200.0, 50.0]
    result = bench.figures(per_call)
    assert result.median_us == 150.0
    assert result.p99_us == pytest.approx(297.0)


def test_added_microseconds_ratio_and_share() -> None:
    assert bench.added_us(95.0, 85.0) == 10.0
    assert bench.added_us(80.0, 85.0) == -5.0
    assert bench.ratio(95.0, 80.0) == pytest.approx(1.1875)
    assert bench.ratio(1.0, 0.0) is None
    assert bench.rounded(None) is None
    assert bench.rounded(1.23456) == 1.2346
    assert bench.Throughput(bench.PATHS[0], 10000.0, 7400.0).share == pytest.approx(0.74)
    assert bench.Throughput(bench.PATHS[0], 0.0, 7400.0).share is None


def test_calls_per_second_adds_up_sessions_that_ran_side_by_side() -> None:
    # Two sessions: 1000 calls in 1 s and 500 in 0.5 s are 2000 calls/s together.
    assert bench.calls_per_second([(1000, 1_000_000.0), (500, 500_000.0)]) == 2000.0
    assert bench.calls_per_second([(0, 0.0), (300, 1_000_000.0)]) == 300.0
    assert bench.calls_per_second([]) == 0.0


def test_calls_are_split_into_rounds_no_bigger_than_asked() -> None:
    assert bench.split_calls(5000, 50) == (100, 50)
    assert bench.split_calls(120, 50) == (3, 50)
    assert bench.split_calls(20, 50) == (1, 20)
    with pytest.raises(ValueError):
        bench.split_calls(0, 50)
    with pytest.raises(ValueError):
        bench.split_calls(10, 0)


def test_rounds_alternate_which_side_goes_first() -> None:
    assert [bench.sides_in_round(n) for n in range(3)] == [
        ("raw", "toolkit"),
        ("toolkit", "raw"),
        ("raw", "toolkit"),
    ]


def test_every_path_has_both_sides_and_a_unique_name() -> None:
    names = [*PATH_NAMES, bench.RECOVERY.name]
    assert len(set(names)) == len(names)
    for path in bench.PATHS:
        raw, toolkit = bench._CALLS[path.name]
        assert "{dblink}" in raw and "safe_dblink" not in raw
        assert "{toolkit}" in toolkit or "pgdblink_safe_bench_floor" in toolkit
    assert set(bench._CALLS) == set(PATH_NAMES)


def test_json_holds_every_path_with_added_microseconds_and_ratio() -> None:
    data = json.loads(json.dumps(made_up_result().as_dict()))
    assert data["calls"] == 5000
    assert (data["calls_per_round"], data["latency_rounds"]) == (50, 100)
    assert data["throughput"] is None
    assert data["statements"]["stmt"] == bench.STATEMENT
    assert list(data["paths"]) == [*PATH_NAMES, "recovery"]
    assert data["paths"]["exec"] == {
        "toolkit": "safe_dblink_exec(c, stmt)",
        "raw": "dblink_exec(c, stmt)",
        "median": {"raw_us": 80.0, "toolkit_us": 90.0, "added_us": 10.0, "ratio": 1.125},
        "p99": {"raw_us": 200.0, "toolkit_us": 250.5, "added_us": 50.5, "ratio": 1.2525},
    }
    assert data["paths"]["recovery"]["median"] == {
        "raw_us": 2700.0,
        "toolkit_us": 3400.0,
        "added_us": 700.0,
        "ratio": 1.2593,
    }


def test_json_throughput_with_sessions() -> None:
    data = json.loads(json.dumps(made_up_result(sessions=4).as_dict()))
    assert data["throughput"]["sessions"] == 4
    assert data["throughput"]["seconds_per_side"] == 2.0
    assert list(data["throughput"]["paths"]) == PATH_NAMES
    assert data["throughput"]["paths"]["exec_resolve"] == {
        "raw_calls_per_s": 10000.0,
        "toolkit_calls_per_s": 7400.0,
        "share": 0.74,
    }


def test_table() -> None:
    lines = _bench_lines(made_up_result(sessions=4))
    assert lines[:3] == [
        "server      PostgreSQL 15.18",
        "toolkit     schema dblink_safe, version 2, validation window 1000 ms",
        "calls       5000 of each side of each path: 100 round(s) of 50, raw and toolkit "
        "alternating on one connection (after 1 warm-up round)",
    ]
    median = lines.index("median per call                raw µs  toolkit µs  added µs  ratio")
    assert lines[median + 1 : median + 3] == [
        "exec                             80.0        90.0     +10.0   1.12",
        "exec, minimal wrapper (floor)    81.0        92.0     +11.0   1.14",
    ]
    assert lines[median + 7] == "recovery after terminate       2700.0      3400.0    +700.0   1.26"
    p99 = lines.index("p99 per call                   raw µs  toolkit µs  added µs  ratio")
    assert lines[p99 + 1] == "exec                            200.0       250.5     +50.5   1.25"
    sessions = lines.index("4 sessions, 2 s a side         raw calls/s  toolkit calls/s  share")
    assert (
        lines[sessions + 1] == "exec                                 10000             7400   0.74"
    )
    assert lines[sessions + 6].startswith("exec, resolve => true ")
    legend = lines.index("exec                           toolkit  safe_dblink_exec(c, stmt)")
    assert lines[legend + 1] == "                               raw      dblink_exec(c, stmt)"
    assert len(lines) == legend + 2 * (len(bench.PATHS) + 1)


def test_fanout_figures_in_json_and_table() -> None:
    fanout = comparison(bench.FANOUT, (300.0, 900.0), (420.5, 1500.0))
    result = dataclasses.replace(made_up_result(), fanout=fanout)
    data = json.loads(json.dumps(result.as_dict()))
    assert data["fanout"] == {
        "nodes": bench.FANOUT_NODES,
        "toolkit": bench.FANOUT.toolkit,
        "raw": bench.FANOUT.raw,
        "median": {"raw_us": 300.0, "toolkit_us": 420.5, "added_us": 120.5, "ratio": 1.4017},
        "p99": {"raw_us": 900.0, "toolkit_us": 1500.0, "added_us": 600.0, "ratio": 1.6667},
    }
    assert "fanout" not in data["paths"]
    assert json.loads(json.dumps(made_up_result().as_dict()))["fanout"] is None
    lines = _bench_lines(result)
    without = _bench_lines(made_up_result())
    assert lines[: len(without)] == without
    assert lines[len(without) :] == [
        "",
        "fan-out to 4 connections  raw µs  toolkit µs  added µs  ratio",
        "median                     300.0       420.5    +120.5   1.40",
        "p99                        900.0      1500.0    +600.0   1.67",
        "",
        "fan-out  toolkit  fanout_exec(<4 names>, stmt)",
        "         raw      " + bench.FANOUT.raw,
    ]


def test_autonomous_figures_in_json_and_table() -> None:
    compared = (
        comparison(bench.AUTONOMOUS, (4000.0, 6000.0), (250.0, 400.0)),
        comparison(bench.AUTONOMOUS_KEPT, (60.0, 90.0), (250.0, 400.0)),
    )
    result = dataclasses.replace(made_up_result(), autonomous=compared)
    data = json.loads(json.dumps(result.as_dict()))
    assert data["autonomous"]["autonomous"]["median"] == {
        "raw_us": 4000.0,
        "toolkit_us": 250.0,
        "added_us": -3750.0,
        "ratio": 0.0625,
    }
    assert data["autonomous"]["autonomous_kept"]["raw"] == bench.AUTONOMOUS_KEPT.raw
    assert data["autonomous_skipped"] is None
    assert json.loads(json.dumps(made_up_result().as_dict()))["autonomous"] is None
    lines = _bench_lines(result)
    without = _bench_lines(made_up_result())
    assert lines[: len(without)] == without
    added = lines[len(without) :]
    header = ["autonomous", "per", "call", "other", "µs", "autonomous", "µs", "added", "µs"]
    assert added[1].split() == [*header, "ratio"]
    assert added[2].split()[-4:] == ["4000.0", "250.0", "-3750.0", "0.06"]
    assert added[-1].strip() == "other       " + bench.AUTONOMOUS_KEPT.raw
    skipped = dataclasses.replace(made_up_result(), autonomous_skipped="no password")
    assert _bench_lines(skipped)[-1] == "autonomous  not measured: no password"


def made_up_commit(two_phase: bool = True) -> bench.CommitResult:
    paths = tuple(
        bench.CommitPath(
            name,
            f"label {name}",
            bench.Figures(1000.0, 2000.0),
            bench.Figures(1500.0, 2600.0) if two_phase else None,
        )
        for name in COMMIT_PATH_NAMES
    )
    held = tuple(
        bench.Held(name, f"held {name}", "how", bench.Figures(400.0, 700.0)) for name in HELD_NAMES
    )
    return bench.CommitResult(
        units_per_round=5,
        rounds=20,
        paths=paths,
        held=held if two_phase else (),
        resolver_rounds=20 if two_phase else 0,
        resolver_min_age_s=5.0 if two_phase else None,
        two_phase_skipped="" if two_phase else "max_prepared_transactions is 0",
    )


def test_commit_figures_in_json_and_table() -> None:
    result = dataclasses.replace(made_up_result(), commit=made_up_commit())
    data = json.loads(json.dumps(result.as_dict()))
    commit = data["commit"]
    assert (commit["units"], commit["units_per_round"], commit["rounds"]) == (100, 5, 20)
    assert commit["participants"] == [1, 4]
    assert list(commit["paths"]) == COMMIT_PATH_NAMES
    assert commit["paths"]["unit_1"]["median"] == {
        "remote_tx_us": 1000.0,
        "two_phase_us": 1500.0,
        "added_us": 500.0,
        "ratio": 1.5,
    }
    assert list(commit["locks_held"]) == HELD_NAMES
    assert commit["locks_held"]["resolve_prepared"]["median_us"] == 400.0
    assert commit["resolver_min_age_s"] == 5.0
    assert commit["two_phase_skipped"] is None
    assert data["commit_skipped"] is None
    assert json.loads(json.dumps(made_up_result().as_dict()))["commit"] is None
    lines = _bench_lines(result)
    without = _bench_lines(made_up_result())
    assert lines[: len(without)] == without
    added = lines[len(without) :]
    header = next(i for i, line in enumerate(added) if line.startswith("commit per unit "))
    assert added[header].split()[3:] == [
        "remote_tx",
        "µs",
        "two_phase",
        "µs",
        "added",
        "µs",
        "ratio",
    ]
    assert added[header + 1].split()[-4:] == ["1000.0", "1500.0", "+500.0", "1.50"]
    assert len([line for line in added if line.startswith("label ")]) == 2 * len(COMMIT_PATH_NAMES)
    assert any(
        line.startswith("resolver, default min_age") and ">= 5000000" in line for line in added
    )


def test_commit_table_says_why_two_phase_was_not_measured() -> None:
    result = dataclasses.replace(made_up_result(), commit=made_up_commit(two_phase=False))
    data = json.loads(json.dumps(result.as_dict()))
    assert data["commit"]["paths"]["commit_4"]["p99"] == {
        "remote_tx_us": 2000.0,
        "two_phase_us": None,
        "added_us": None,
        "ratio": None,
    }
    assert data["commit"]["locks_held"] is None
    lines = _bench_lines(result)
    assert lines[-1] == "two-phase   not measured: max_prepared_transactions is 0"
    assert lines[-3].split()[-4:] == ["2000.0", "n/a", "n/a", "n/a"]
    skipped = dataclasses.replace(made_up_result(), commit_skipped="permission denied")
    assert _bench_lines(skipped)[-1] == "commit      not measured: permission denied"


def test_table_without_sessions_or_with_a_replaced_connection() -> None:
    result = made_up_result()
    assert not any("calls/s" in line for line in _bench_lines(result))
    replaced = dataclasses.replace(result, same_remote_backend=False)
    assert "warning     the connection was replaced during the measurement" in _bench_lines(
        replaced
    )


def test_a_run_with_sessions_and_quoted_schemas_leaves_nothing_behind(
    conn: psycopg.Connection[Any],
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    target: str,
) -> None:
    # Names that only work when quoted: the helpers must compose them, never paste them.
    conn.execute('CREATE SCHEMA "dblink $x$ ext"')
    conn.execute('ALTER EXTENSION dblink SET SCHEMA "dblink $x$ ext"')
    schema = 'Safe "Kit"'
    pgdblink_safe.install(conn, pgdblink_safe.Settings(schema=schema))
    before_objects = objects(conn)
    before_remote = remote.backend_pids(remote_db)
    before_local = local.backend_pids(local_db)

    result = run(
        "bench",
        "--dsn",
        local.client_conninfo(local_db),
        "--target",
        target,
        "--schema",
        schema,
        "--calls",
        "6",
        "--calls-per-round",
        "3",
        "--rounds",
        "2",
        "--commits",
        "2",
        "--sessions",
        "2",
        "--duration",
        "0.1",
        "--json",
    )

    assert result.returncode == 0, result.stderr
    assert "timing 6 paths against raw dblink: 2 round(s) of 3 calls" in result.stderr
    assert "measuring recovery after pg_terminate_backend: 2 rounds" in result.stderr
    assert "measuring calls/s with 2 concurrent session(s)" in result.stderr
    data = json.loads(result.stdout)
    assert data["schema"] == schema
    assert data["installed_version"] == latest_version()
    assert data["server_version_num"] == local.version_num
    assert (data["calls"], data["calls_per_round"], data["latency_rounds"]) == (6, 3, 2)
    assert data["recovery_rounds"] == 2
    assert data["same_remote_backend"] is True
    # --json sorts the keys.
    assert sorted(data["paths"]) == sorted([*PATH_NAMES, "recovery"])
    for figures in data["paths"].values():
        for quantile in ("median", "p99"):
            row = figures[quantile]
            assert set(row) == {"raw_us", "toolkit_us", "added_us", "ratio"}
            assert row["added_us"] == pytest.approx(row["toolkit_us"] - row["raw_us"], abs=0.02)
    assert data["fanout"]["nodes"] == bench.FANOUT_NODES
    assert set(data["fanout"]["median"]) == {"raw_us", "toolkit_us", "added_us", "ratio"}
    assert "timing fanout_exec on 4 connections" in result.stderr
    assert sorted(data["autonomous"]) == ["autonomous", "autonomous_kept"]
    for figures in data["autonomous"].values():
        assert figures["median"]["toolkit_us"] > 0 and figures["median"]["raw_us"] > 0
    assert "timing autonomous_exec against a connection per call" in result.stderr
    assert "timing units of work (one local transaction" in result.stderr
    commit = data["commit"]
    assert data["commit_skipped"] is None
    assert (commit["units"], commit["units_per_round"], commit["rounds"]) == (2, 2, 1)
    assert commit["two_phase_skipped"] is None and commit["resolver_skipped"] is None
    assert sorted(commit["paths"]) == sorted(COMMIT_PATH_NAMES)
    for figures in commit["paths"].values():
        for quantile in ("median", "p99"):
            row = figures[quantile]
            assert set(row) == {"remote_tx_us", "two_phase_us", "added_us", "ratio"}
            assert all(math.isfinite(row[key]) for key in row)
            assert row["remote_tx_us"] > 0 and row["two_phase_us"] > 0
    assert sorted(commit["locks_held"]) == sorted(HELD_NAMES)
    for held in commit["locks_held"].values():
        assert 0 < held["median_us"] <= held["p99_us"] < math.inf
    assert commit["resolver_rounds"] == 1
    assert commit["resolver_min_age_s"] == 5.0
    assert data["throughput"]["sessions"] == 2
    assert sorted(data["throughput"]["paths"]) == sorted(PATH_NAMES)
    for rates in data["throughput"]["paths"].values():
        assert set(rates) == {"raw_calls_per_s", "toolkit_calls_per_s", "share"}

    # Every session's dblink connections are closed, on both servers; with them the
    # temporary helpers, type and remote table.
    wait_for_backends(remote, remote_db, before_remote)
    wait_for_backends(local, local_db, before_local)
    assert objects(conn) == before_objects
    assert bench_objects(conn) == []
    # No commit record and no target for the resolver left; nothing prepared on the remote.
    assert conn.execute(
        sql.SQL("SELECT count(*) FROM {}.prepared_xacts").format(sql.Identifier(schema))
    ).fetchone() == (0,)
    assert conn.execute(
        sql.SQL("SELECT count(*) FROM {}.two_phase_targets").format(sql.Identifier(schema))
    ).fetchone() == (0,)
    with remote.connect(remote_db) as remote_conn:
        assert bench_objects(remote_conn) == []
        assert remote_conn.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone() == (0,)


def test_a_remote_that_cannot_prepare_skips_two_phase_commit(
    installed: psycopg.Connection[Any],
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    target: str,
) -> None:
    if not remote.can_restart:
        pytest.skip(f"the {remote.label} server cannot be restarted by this provider")
    (before,) = remote.execute("SHOW max_prepared_transactions")[0]
    remote.execute("ALTER SYSTEM SET max_prepared_transactions = 0")
    try:
        remote.restart()
        result = run(
            "bench",
            "--dsn",
            local.client_conninfo(local_db),
            "--target",
            target,
            *("--calls", "2", "--rounds", "1", "--commits", "2"),
        )
    finally:
        # The throwaway servers start with a value of their own: put it back, not the default.
        remote.execute(
            sql.SQL("ALTER SYSTEM SET max_prepared_transactions = {}").format(sql.Literal(before))
        )
        remote.restart()
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == (
        "two-phase   not measured: the remote server's max_prepared_transactions is 0, so it "
        "cannot prepare transactions (set it above 0 and restart it to measure two-phase commit)"
    )
    baseline = [line for line in lines if line.startswith(("unit of work", "COMMIT alone"))]
    assert len(baseline) == 2 * len(COMMIT_PATH_NAMES)
    for line in baseline:
        assert float(line.split()[-4]) > 0 and line.split()[-3:] == ["n/a", "n/a", "n/a"]
    assert "two-phase commit skipped: the remote server's max_prepared_transactions" in (
        result.stderr
    )
    assert bench_objects(installed) == []
    with remote.connect(remote_db) as remote_conn:
        assert bench_objects(remote_conn) == []


def test_not_installed_is_one_line_exit_1(local: Server, local_db: str) -> None:
    result = run("bench", "--dsn", local.client_conninfo(local_db), "--calls", "10")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"Error: pgdblink_safe is not installed in schema dblink_safe of database {local_db}: "
        "run `pgdblink-safe install` first"
    ]


def test_unreachable_target_is_exit_2_without_its_password(
    installed: psycopg.Connection[Any], local: Server, local_db: str
) -> None:
    target = "host=127.0.0.1 port=1 user=x password=Sup3rSecret connect_timeout=2"
    result = run("bench", "--dsn", local.client_conninfo(local_db), "--target", target)
    assert result.returncode == 2
    assert result.stderr.startswith("Error: could not open dblink connection")
    assert "Sup3rSecret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert bench_objects(installed) == []


def test_api_refuses_a_session_already_using_its_names(
    installed: psycopg.Connection[Any], target: str
) -> None:
    installed.execute("SELECT dblink_connect('pgdblink_safe_bench', %s)", [target])
    try:
        with pytest.raises(BenchError, match="already open"):
            bench.run_bench(installed, target, calls=1, rounds=1)
    finally:
        installed.execute("SELECT dblink_disconnect('pgdblink_safe_bench')")


def test_api_needs_autocommit_and_a_way_to_open_sessions(
    conn: psycopg.Connection[Any], local: Server, local_db: str, target: str
) -> None:
    with (
        local.connect(local_db, autocommit=False) as manual,
        pytest.raises(BenchError, match="autocommit"),
    ):
        bench.run_bench(manual, target)
    with pytest.raises(BenchError, match="sessions needs a way to connect"):
        bench.run_bench(conn, target, sessions=2)


def test_default_target_is_the_connections_own_database(
    conn: psycopg.Connection[Any], local_db: str
) -> None:
    parsed = psycopg.conninfo.conninfo_to_dict(bench.default_target(conn, "p w'd"))
    assert parsed["dbname"] == local_db
    assert parsed["host"] == conn.info.host
    assert parsed["port"] == str(conn.info.port)
    assert parsed["password"] == "p w'd"
    assert "password" not in psycopg.conninfo.conninfo_to_dict(bench.default_target(conn))
