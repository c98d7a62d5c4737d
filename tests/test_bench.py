"""pgdblink-safe bench: the shape and sanity of its figures and what it leaves behind."""

import json
import subprocess
import sys
from typing import Any

import psycopg
import pytest
from servers import Server, wait_for

import pgdblink_safe
from pgdblink_safe import bench
from pgdblink_safe.errors import BenchError
from pgdblink_safe.generator import latest_version


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


def bench_helpers(conn: psycopg.Connection[Any]) -> list[str]:
    """The benchmark's helper functions, in any schema, temporary ones included."""
    rows = conn.execute(
        r"SELECT oid::regprocedure::text FROM pg_proc WHERE proname LIKE 'pgdblink\_safe\_bench%'"
    ).fetchall()
    return [row[0] for row in rows]


def wait_for_backends(server: Server, dbname: str, expected: list[int]) -> None:
    """dblink_disconnect does not wait for the remote backend to exit; this does."""
    wait_for(
        lambda: server.backend_pids(dbname) == expected,
        10,
        f"the client backends of {dbname} to be {expected} again",
    )


def test_json_figures_are_sane_and_nothing_is_left_behind(
    installed: psycopg.Connection[Any],
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    target: str,
) -> None:
    before_objects = objects(installed)
    before_remote = remote.backend_pids(remote_db)
    before_local = local.backend_pids(local_db)

    result = run(
        "bench",
        "--dsn",
        local.client_conninfo(local_db),
        "--target",
        target,
        "--calls",
        "200",
        "--rounds",
        "3",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    assert "benchmarking 200 calls each of raw dblink_exec, a minimal wrapper" in result.stderr
    assert "measuring recovery after pg_terminate_backend: 3 rounds" in result.stderr
    data = json.loads(result.stdout)

    assert data["calls"] == 200
    assert data["rounds"] == 3
    assert data["schema"] == "dblink_safe"
    assert data["installed_version"] == latest_version()
    assert data["validation_window_ms"] == 1000
    assert data["server_version_num"] == local.version_num
    assert data["same_remote_backend"] is True
    latency = data["latency_us"]
    for side in ("raw", "floor", "safe"):
        assert 0 < latency[side]["median"] <= latency[side]["p99"]
    for figure in ("median", "p99"):
        expected = latency["safe"][figure] / latency["raw"][figure]
        assert latency["ratio"][figure] == pytest.approx(expected, rel=1e-3)
        expected = latency["floor"][figure] / latency["raw"][figure]
        assert latency["floor_ratio"][figure] == pytest.approx(expected, rel=1e-3)
    for side in ("safe", "plain"):
        recovery = data["recovery_ms"][side]
        assert 0 < recovery["median"] <= recovery["max"]

    assert objects(installed) == before_objects
    assert bench_helpers(installed) == []
    wait_for_backends(remote, remote_db, before_remote)
    wait_for_backends(local, local_db, before_local)


def test_text_table_with_the_default_target(
    installed: psycopg.Connection[Any], local: Server, local_db: str
) -> None:
    before_local = local.backend_pids(local_db)
    result = run(
        "bench", "--dsn", local.client_conninfo(local_db), "--calls", "50", "--rounds", "2"
    )
    assert result.returncode == 0, result.stderr
    labels = [line.split("  ")[0] for line in result.stdout.splitlines()]
    assert labels == [
        "server",
        "toolkit",
        "calls",
        "",
        "raw dblink_exec",
        "minimal wrapper (floor)",
        "safe_dblink_exec",
        "ratio floor / raw",
        "ratio safe / raw",
        "recovery after pg_terminate_backend (2 rounds)",
        "safe_dblink_exec (reconnects itself)",
        "plain: fail, disconnect, connect, exec",
    ]
    assert "50 of each, interleaved on one connection" in result.stdout
    assert "validation window 1000 ms" in result.stdout
    # The loopback connections went to the database itself; they are all closed again.
    wait_for_backends(local, local_db, before_local)


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
    assert bench_helpers(installed) == []


def test_api_with_quoted_schemas_cleans_up_its_own_session(
    conn: psycopg.Connection[Any], target: str
) -> None:
    # Names that only work when quoted: the helpers must compose them, never paste them.
    conn.execute('CREATE SCHEMA "dblink $x$ ext"')
    conn.execute('ALTER EXTENSION dblink SET SCHEMA "dblink $x$ ext"')
    schema = 'Safe "Kit"'
    pgdblink_safe.install(conn, pgdblink_safe.Settings(schema=schema, validation_window_ms=0))
    lines: list[str] = []

    result = bench.run_bench(conn, target, calls=20, rounds=1, schema=schema, progress=lines.append)

    assert result.schema == schema
    assert result.validation_window_ms == 0
    assert (result.calls, result.rounds) == (20, 1)
    assert result.raw.median_us > 0 and result.safe.median_us > 0
    assert result.as_dict()["latency_us"]["ratio"]["median"] is not None
    assert any(line.startswith("benchmarking 20 calls each of raw") for line in lines)
    # Same session: the helpers and the dblink connections are gone before the session ends.
    assert bench_helpers(conn) == []
    row = conn.execute('SELECT "dblink $x$ ext".dblink_get_connections()').fetchone()
    assert row is not None and row[0] is None


def test_api_refuses_a_session_already_using_its_names(
    installed: psycopg.Connection[Any], target: str
) -> None:
    installed.execute("SELECT dblink_connect('pgdblink_safe_bench', %s)", [target])
    try:
        with pytest.raises(BenchError, match="already open"):
            bench.run_bench(installed, target, calls=1, rounds=1)
    finally:
        installed.execute("SELECT dblink_disconnect('pgdblink_safe_bench')")


def test_api_needs_autocommit(local: Server, local_db: str, target: str) -> None:
    with (
        local.connect(local_db, autocommit=False) as conn,
        pytest.raises(BenchError, match="autocommit"),
    ):
        bench.run_bench(conn, target)


def test_default_target_is_the_connections_own_database(
    conn: psycopg.Connection[Any], local_db: str
) -> None:
    parsed = psycopg.conninfo.conninfo_to_dict(bench.default_target(conn, "p w'd"))
    assert parsed["dbname"] == local_db
    assert parsed["host"] == conn.info.host
    assert parsed["port"] == str(conn.info.port)
    assert parsed["password"] == "p w'd"
    assert "password" not in psycopg.conninfo.conninfo_to_dict(bench.default_target(conn))


def test_percentile_interpolates_like_percentile_cont() -> None:
    assert bench.percentile([3.0], 0.99) == 3.0
    assert bench.percentile([4.0, 1.0, 3.0, 2.0], 0.5) == 2.5
    assert bench.percentile([float(v) for v in range(101)], 0.99) == 99.0
    with pytest.raises(ValueError):
        bench.percentile([], 0.5)
