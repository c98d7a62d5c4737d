"""Deploying for real: upgrade, dry runs, SQL without a server, export to migration tools, demo."""

import ast
import json
import os
import re
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
from pgdblink_safe._release import NON_DEFAULT
from pgdblink_safe.export import _BIND
from pgdblink_safe.generator import latest_version, record_statement, render_migrations
from pgdblink_safe.installer import catalog

Conn = psycopg.Connection[Any]
LATEST = latest_version()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgdblink_safe", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture
def fresh(local: Server, local_db: str) -> Iterator[Conn]:
    """A second database like ``local_db``, for a fresh install to compare with."""
    name = local_db + "_fresh"
    local.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE pgdblink_safe_tpl").format(sql.Identifier(name))
    )
    try:
        with local.connect(name) as conn:
            yield conn
    finally:
        local.drop_database(name)


def version(conn: Conn) -> int:
    row = conn.execute("SELECT max(version) FROM dblink_safe.installed_migrations").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("start", range(1, LATEST))
def test_upgrade_from_every_earlier_version_equals_a_fresh_install(
    conn: Conn, fresh: Conn, local: Server, local_db: str, start: int
) -> None:
    conn.execute("DROP ROLE IF EXISTS deploy_app")
    conn.execute("CREATE ROLE deploy_app")
    try:
        pgdblink_safe.install(conn, grant=["deploy_app"], to_version=start)
        assert version(conn) == start
        result = run("upgrade", "--dsn", local.client_conninfo(local_db))
        assert result.returncode == 0, result.stderr
        assert f"from version {start} to {LATEST}" in result.stdout
        pgdblink_safe.install(fresh, grant=["deploy_app"])
        upgraded, installed = catalog(conn, "dblink_safe"), catalog(fresh, "dblink_safe")
        assert len(installed) > 30
        assert upgraded == installed
        again = run("upgrade", "--dsn", local.client_conninfo(local_db))
        assert "already at version" in again.stdout
    finally:
        for c in (conn, fresh):
            c.execute("DROP SCHEMA IF EXISTS dblink_safe CASCADE")
        conn.execute("DROP OWNED BY deploy_app")
        fresh.execute("DROP OWNED BY deploy_app")
        conn.execute("DROP ROLE deploy_app")


#: Everything a definition consists of, in full text so that a difference reads plainly.
FULL_CATALOG = """
WITH ns AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = %(schema)s)
SELECT 'function ' || p.oid::pg_catalog.regprocedure::text,
       pg_catalog.concat_ws(E'\\n', pg_catalog.pg_get_functiondef(p.oid), p.proacl::text,
           p.proconfig::text, pg_catalog.obj_description(p.oid, 'pg_proc'))
FROM pg_catalog.pg_proc p WHERE p.pronamespace = (SELECT oid FROM ns)
UNION ALL
SELECT 'relation ' || c.oid::pg_catalog.regclass::text,
       pg_catalog.concat_ws(E'\\n', c.relkind, c.relacl::text,
           pg_catalog.obj_description(c.oid, 'pg_class'),
           (SELECT pg_catalog.string_agg(pg_catalog.concat_ws(' ', a.attname,
                       pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                       pg_catalog.pg_get_expr(d.adbin, d.adrelid)), ', ' ORDER BY a.attnum)
            FROM pg_catalog.pg_attribute a
            LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped))
FROM pg_catalog.pg_class c WHERE c.relnamespace = (SELECT oid FROM ns)
UNION ALL
SELECT 'constraint ' || co.conname, pg_catalog.pg_get_constraintdef(co.oid)
FROM pg_catalog.pg_constraint co
WHERE co.connamespace = (SELECT oid FROM ns)
UNION ALL
SELECT 'schema', pg_catalog.concat_ws(E'\\n', n.nspacl::text,
           pg_catalog.obj_description(n.oid, 'pg_namespace'))
FROM pg_catalog.pg_namespace n WHERE n.nspname = %(schema)s
ORDER BY 1
"""


def full_catalog(conn: Conn, schema: str) -> dict[str, str]:
    return dict(conn.execute(FULL_CATALOG, {"schema": schema}).fetchall())


@pytest.fixture
def two_databases(local: Server) -> Iterator[tuple[Conn, Conn]]:
    """Two empty databases (dblink not created) on the local server."""
    names = [f"replay_{n}_{os.getpid()}" for n in ("a", "b")]
    for name in names:
        local.drop_database(name)
        local.create_database(name)
    try:
        with local.connect(names[0]) as one, local.connect(names[1]) as two:
            yield one, two
    finally:
        for name in names:
            local.drop_database(name)


@pytest.mark.parametrize("kind", ["default", "non_default"])
def test_a_fresh_install_equals_the_replay_of_every_step(
    two_databases: tuple[Conn, Conn], kind: str
) -> None:
    """The current code (what install runs) and the release steps (what upgrades run) agree."""
    chosen = pgdblink_safe.Settings() if kind == "default" else NON_DEFAULT
    installed, replayed = two_databases
    for conn in two_databases:
        conn.execute(
            sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(chosen.dblink_schema))
        )
        conn.execute(
            sql.SQL("CREATE EXTENSION dblink SCHEMA {}").format(
                sql.Identifier(chosen.dblink_schema)
            )
        )
    installed.execute("DROP ROLE IF EXISTS replay_app")
    installed.execute("CREATE ROLE replay_app")
    pgdblink_safe.install(installed, chosen, grant=["replay_app"])
    with replayed.transaction():
        for step in render_migrations(chosen):
            replayed.execute(step.sql.encode())
            replayed.execute(
                record_statement(chosen),
                {
                    "version": step.version,
                    "name": step.name,
                    "checksum": step.checksum,
                    "settings": json.dumps(chosen.as_dict(), sort_keys=True),
                },
            )
    pgdblink_safe.install(
        replayed, schema=chosen.schema, grant=["replay_app"]
    )  # a no-op apart from the grant
    try:
        one, two = full_catalog(installed, chosen.schema), full_catalog(replayed, chosen.schema)
        assert len(one) > 40
        assert sorted(one) == sorted(two)
        for name, definition in one.items():
            assert definition == two[name], name
        assert [a.checksum for a in pgdblink_safe.status(installed, chosen.schema).applied] == [
            a.checksum for a in pgdblink_safe.status(replayed, chosen.schema).applied
        ]
    finally:
        for c in two_databases:
            c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(chosen.schema)))
            c.execute("DROP OWNED BY replay_app")
        installed.execute("DROP ROLE replay_app")


def test_upgrade_needs_an_installation(local: Server, local_db: str) -> None:
    result = run("upgrade", "--dsn", local.client_conninfo(local_db))
    assert result.returncode == 1
    assert "not installed" in result.stderr and "pgdblink-safe install" in result.stderr


@pytest.mark.skipif(LATEST < 2, reason="needs a release step after the baseline")
def test_dry_run_shows_what_would_change_and_changes_nothing(
    conn: Conn, local: Server, local_db: str
) -> None:
    dsn = local.client_conninfo(local_db)
    pgdblink_safe.install(conn, to_version=LATEST - 1)
    before = catalog(conn, "dblink_safe")
    result = run("upgrade", "--dsn", dsn, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"would apply {LATEST:04d}_")
    assert "would create  function" in result.stdout or "would replace function" in result.stdout
    assert "rolled back" in result.stderr
    assert catalog(conn, "dblink_safe") == before
    assert version(conn) == LATEST - 1
    fresh_db = run("install", "--dsn", dsn, "--dry-run")
    assert fresh_db.returncode == 0
    assert "would apply" in fresh_db.stdout
    assert version(conn) == LATEST - 1


def test_dry_run_of_a_new_install_lists_every_object(
    local: Server, local_db: str, conn: Conn
) -> None:
    result = run("install", "--dsn", local.client_conninfo(local_db), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would apply 0001_baseline" in result.stdout
    assert "would create  function dblink_safe.safe_dblink_exec(" in result.stdout
    assert conn.execute("SELECT to_regnamespace('dblink_safe')").fetchone() == (None,)


def test_sql_needs_no_server_and_installs_like_the_cli(
    conn: Conn, fresh: Conn, local: Server, local_db: str, tmp_path: Path
) -> None:
    # A DSN that points nowhere: --sql must not connect.
    script = run("install", "--sql", "--dsn", "host=192.0.2.1 connect_timeout=1")
    assert script.returncode == 0, script.stderr
    # From nothing: the current code, and a row recording each step, in one transaction.
    assert script.stdout.count(f"\n-- version {LATEST:04d}, the current code\n") == 1
    assert script.stdout.count("INSERT INTO dblink_safe.installed_migrations") == LATEST
    path = tmp_path / "install.sql"
    path.write_text(script.stdout)
    applied = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            local.client_conninfo(local_db),
            "-f",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert applied.returncode == 0, applied.stderr
    pgdblink_safe.install(fresh)
    assert catalog(conn, "dblink_safe") == catalog(fresh, "dblink_safe")
    status = run("status", "--dsn", local.client_conninfo(local_db))
    assert f"installed version: {LATEST}" in status.stdout
    for start in range(1, LATEST + 1):
        upgrade_sql = run("upgrade", "--sql", "--from-version", str(start))
        assert upgrade_sql.stdout.count("\n-- migration ") == LATEST - start
    assert run("upgrade", "--sql").returncode == 1


def _run_file(conn: Conn, text: str) -> None:
    conn.execute(text.encode())


def test_plain_and_dbmate_exports_install_like_the_cli(
    local: Server, local_db: str, conn: Conn, fresh: Conn, tmp_path: Path
) -> None:
    pgdblink_safe.install(fresh)
    expected = catalog(fresh, "dblink_safe")
    for fmt in ("plain", "dbmate"):
        out = tmp_path / fmt
        result = run("export", "--format", fmt, "--out", str(out))
        assert result.returncode == 0, result.stderr
        files = sorted(out.iterdir())
        assert len(files) == LATEST
        for path in files:
            text = path.read_text()
            if fmt == "dbmate":
                up, down = text.split("-- migrate:down\n")
                assert up.startswith("-- migrate:up\n")
                assert down.strip()
                # dbmate runs each migration in a transaction of its own.
                with conn.transaction():
                    _run_file(conn, up)
            else:
                _run_file(conn, text)
        assert catalog(conn, "dblink_safe") == expected, fmt
        status = run("status", "--dsn", local.client_conninfo(local_db))
        assert f"installed version: {LATEST}" in status.stdout
        assert "pending" not in status.stdout
        conn.execute("DROP SCHEMA dblink_safe CASCADE")


def test_flyway_alembic_and_sqitch_files_follow_their_rules(tmp_path: Path) -> None:
    for fmt in ("flyway", "alembic", "sqitch"):
        result = run("export", "--format", fmt, "--out", str(tmp_path / fmt))
        assert result.returncode == 0, result.stderr
    flyway = sorted(p.name for p in (tmp_path / "flyway").iterdir())
    # Flyway orders versions as numbers (V10 after V9), whatever their text sorts as.
    assert flyway == sorted(f"V{n}__pgdblink_safe_{name}" for n, name in _names())
    for path in (tmp_path / "flyway").iterdir():
        lines = path.read_text().splitlines()
        assert "BEGIN;" not in lines and "COMMIT;" not in lines  # Flyway opens it itself

    revisions = {}
    for path in sorted((tmp_path / "alembic" / "versions").iterdir()):
        tree = ast.parse(path.read_text())
        names = {
            t.id: node.value
            for node in tree.body
            if isinstance(node, ast.Assign)
            for t in node.targets
            if isinstance(t, ast.Name)
        }
        revision = ast.literal_eval(names["revision"])
        revisions[revision] = ast.literal_eval(names["down_revision"])
        for sql_name in ("UPGRADE_SQL", "DOWNGRADE_SQL"):
            text = ast.literal_eval(names[sql_name])
            # Nothing SQLAlchemy's text() would read as a bind parameter.
            assert not _BIND.search(text), (path.name, _BIND.search(text))
        functions = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert functions == {"upgrade", "downgrade"}
    chain = [None]
    while len(chain) <= len(revisions):
        chain.append(next(r for r, down in revisions.items() if down == chain[-1]))
    assert len(chain) == LATEST + 1

    plan = (tmp_path / "sqitch" / "sqitch.plan").read_text().splitlines()
    assert plan[:2] == ["%syntax-version=1.0.0", "%project=pgdblink_safe"]
    changes = [line for line in plan[2:] if line]
    pattern = re.compile(
        r"^(\w+)( \[(\w+)\])? \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ [\w-]+ <[^>]+> # .+$"
    )
    previous = None
    for line in changes:
        match = pattern.match(line)
        assert match, line
        assert match.group(3) == previous
        previous = match.group(1)
        for folder in ("deploy", "revert", "verify"):
            assert (tmp_path / "sqitch" / folder / f"{previous}.sql").is_file()
    assert len(changes) == LATEST


def _names() -> list[tuple[int, str]]:
    from pgdblink_safe.generator import migrations

    return [(m.version, m.name + ".sql") for m in migrations()]


def test_export_again_adds_nothing_and_never_overwrites(tmp_path: Path) -> None:
    out = tmp_path / "flyway"
    assert run("export", "--format", "flyway", "--out", str(out)).returncode == 0
    again = run("export", "--format", "flyway", "--out", str(out))
    assert again.returncode == 0 and again.stdout == ""
    other = run("export", "--format", "flyway", "--out", str(out), "--schema", "other_kit")
    assert other.returncode == 1
    assert "with other content" in other.stderr
    assert "dblink_safe" in (out / "V1__pgdblink_safe_baseline.sql").read_text()


def test_demo_shows_the_failure_and_the_fix() -> None:
    result = run("demo")
    assert result.returncode == 0, result.stderr
    assert "ERROR (SQLSTATE 08006)" in result.stdout
    assert result.stdout.count("-> INSERT 0 1") == 3
    assert "Remote rows: plain 1, safe 1, safe 2 (each applied once)" in result.stdout
    assert "stopping the servers" in result.stderr
