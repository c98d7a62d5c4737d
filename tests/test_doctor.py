"""`pgdblink-safe doctor`: each finding from a real database, and a clean bill of health."""

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from servers import Server

import pgdblink_safe
from pgdblink_safe.doctor import EXPLANATIONS
from pgdblink_safe.installer import uninstall

Conn = psycopg.Connection[Any]
SECRET = "Hunter2-doctor-secret"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgdblink_safe", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def keepalives(local: Server) -> Iterator[None]:
    """Server-side keepalives on, so that a healthy database has no finding at all."""
    with local.settings(tcp_keepalives_idle="60"):
        yield


def codes(local: Server, dbname: str) -> list[str]:
    result = run("--dsn", local.client_conninfo(dbname), "--json")
    assert result.returncode in (0, 1), result.stderr
    return sorted({f["code"] for f in json.loads(result.stdout)})


def test_a_healthy_database_has_no_findings(
    installed: Conn, local: Server, local_db: str, keepalives: None
) -> None:
    result = run("--dsn", local.client_conninfo(local_db))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"no findings in database {local_db}"


def test_each_problem_is_found_and_named(
    conn: Conn, local: Server, local_db: str, keepalives: None
) -> None:
    # No toolkit yet.
    assert codes(local, local_db) == ["PGS003"]
    pgdblink_safe.install(conn, to_version=1)
    assert codes(local, local_db) == ["PGS003"]
    pgdblink_safe.install(conn)
    assert codes(local, local_db) == []

    conn.execute(
        "CREATE SERVER bare_srv FOREIGN DATA WRAPPER dblink_fdw OPTIONS (host 'db2', port '5432')"
    )
    conn.execute("DROP ROLE IF EXISTS doctor_app")
    conn.execute("CREATE ROLE doctor_app")
    try:
        conn.execute("CREATE USER MAPPING FOR doctor_app SERVER bare_srv OPTIONS (user 'etl')")
        conn.execute("GRANT EXECUTE ON FUNCTION dblink_connect_u(text) TO PUBLIC")
        body = sql.SQL("BEGIN PERFORM dblink_connect('x', {}); END").format(
            sql.Literal(f"host=db2 user=etl password={SECRET}")
        )
        conn.execute(
            sql.SQL("CREATE FUNCTION nightly() RETURNS void LANGUAGE plpgsql AS {}").format(
                sql.Literal(body.as_string(conn))
            )
        )
        with local.settings(idle_session_timeout="1h"):
            result = run("--dsn", local.client_conninfo(local_db))
        assert result.returncode == 1
        found = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("PGS")}
        assert found == {"PGS004", "PGS006", "PGS007", "PGS008", "PGS009"}
        assert "server bare_srv: missing options: connect_timeout, keepalives" in result.stdout
        assert "user mapping for doctor_app on server bare_srv" in result.stdout
        assert "nightly()" in result.stdout
        assert SECRET not in result.stdout + result.stderr
        assert SECRET[:8] not in result.stdout
        conn.execute(
            "ALTER SERVER bare_srv OPTIONS (ADD connect_timeout '10', ADD keepalives '1', "
            "ADD tcp_user_timeout '60000')"
        )
        conn.execute("ALTER USER MAPPING FOR doctor_app SERVER bare_srv OPTIONS (ADD password 'x')")
        conn.execute("REVOKE EXECUTE ON FUNCTION dblink_connect_u(text) FROM PUBLIC")
        conn.execute("DROP FUNCTION nightly()")
        assert codes(local, local_db) == []
    finally:
        conn.execute("DROP OWNED BY doctor_app")
        conn.execute("DROP ROLE doctor_app")


def test_without_dblink(local: Server, keepalives: None) -> None:
    local.drop_database("doctor_bare")
    local.create_database("doctor_bare")
    try:
        assert codes(local, "doctor_bare") == ["PGS001", "PGS003"]
    finally:
        local.drop_database("doctor_bare")


@pytest.mark.parametrize("code", sorted(EXPLANATIONS))
def test_every_code_is_explained(code: str) -> None:
    result = run("--explain", code.lower())
    assert result.returncode == 0
    assert result.stdout.startswith(f"{code}: {EXPLANATIONS[code][0]}")
    assert len(result.stdout) > 150


def test_an_unknown_code_is_a_user_error() -> None:
    result = run("--explain", "PGS999")
    assert result.returncode == 1
    assert "the codes are PGS001" in result.stderr


def _reference_script() -> Any:
    path = Path(__file__).parent.parent / "scripts" / "doctor_reference.py"
    spec = importlib.util.spec_from_file_location("doctor_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_explains_every_code_as_doctor_py_does() -> None:
    script = _reference_script()
    readme = script.README.read_text()
    assert script.rendered(readme) == readme, "run python scripts/doctor_reference.py"
    for code, (title, _text) in EXPLANATIONS.items():
        assert f"**`{code}` {title}.**" in readme
    # A changed explanation makes the check fail.
    stale = readme.replace(EXPLANATIONS["PGS005"][1][:40], "Something else entirely", 1)
    assert stale != readme and script.rendered(stale) != stale
    checked = subprocess.run(
        [sys.executable, str(script.__file__), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert checked.returncode == 0, checked.stdout


@pytest.fixture
def stand_in_pg_tle(local: Server) -> Iterator[None]:
    """An empty extension named pg_tle (pg_tle itself cannot be built here): what doctor sees
    is the pg_extension row, which this gives."""
    binaries = getattr(local, "binaries", None)
    pg_config = binaries.bindir / "pg_config" if binaries else None
    if pg_config is None or not pg_config.exists():
        pytest.skip("the local server's share directory is unknown")
    sharedir = subprocess.run(
        [str(pg_config), "--sharedir"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
    extension_dir = Path(sharedir) / "extension"
    control, script = extension_dir / "pg_tle.control", extension_dir / "pg_tle--1.4.0.sql"
    if control.exists():
        pytest.skip("a real pg_tle is installed on this server")
    if not os.access(extension_dir, os.W_OK):
        pytest.skip(f"{extension_dir} is not writable by this user")
    control.write_text("comment = 'stand-in'\ndefault_version = '1.4.0'\nrelocatable = false\n")
    script.write_text("-- stand-in: no objects\n")
    try:
        yield
    finally:
        control.unlink()
        script.unlink()


def test_pg_tle_is_a_finding(
    local: Server, local_db: str, keepalives: None, stand_in_pg_tle: None
) -> None:
    with local.connect(local_db) as conn:
        pgdblink_safe.install(conn)
        assert "PGS010" not in codes(local, local_db)
        conn.execute("CREATE EXTENSION pg_tle")
    assert codes(local, local_db) == ["PGS010"]
    result = run("--dsn", local.client_conninfo(local_db))
    assert (
        "PGS010  pg_tle extensions and pg_dump: pg_tle: pg_tle 1.4.0 is installed" in result.stdout
    )


def test_autonomous_transactions_that_cannot_reach_the_database_are_a_finding(
    conn: Conn, local: Server, local_db: str, keepalives: None
) -> None:
    pgdblink_safe.install(conn)
    role = f"doctor_app_{os.getpid()}"
    local.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        # Without the setting, only superusers can use it: an ordinary role that may call it
        # is a finding.
        pgdblink_safe.install(conn, grant=[role])
        assert codes(local, local_db) == ["PGS011"]
        result = run("--dsn", local.client_conninfo(local_db))
        assert f"autonomous_exec: {role}" in result.stdout
        # A setting that names no server, then a server for another database.
        uninstall(conn)
        pgdblink_safe.install(conn, pgdblink_safe.Settings(autonomous_server="self"), grant=[role])
        assert codes(local, local_db) == ["PGS011"]
        conn.execute(
            "CREATE SERVER self FOREIGN DATA WRAPPER dblink_fdw OPTIONS (dbname 'postgres', "
            "connect_timeout '5', keepalives '1', tcp_user_timeout '10000')"
        )
        assert "leads to database postgres" in run("--dsn", local.client_conninfo(local_db)).stdout
        conn.execute(
            sql.SQL("ALTER SERVER self OPTIONS (SET dbname {})").format(sql.Literal(local_db))
        )
        assert codes(local, local_db) == []
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        local.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
