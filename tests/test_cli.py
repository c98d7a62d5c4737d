"""The pgdblink-safe command line, run as a user would run it."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click import Command, Group
from servers import Server

from pgdblink_safe.cli import cli
from pgdblink_safe.generator import latest_version, migrations


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgdblink_safe", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_install_status_uninstall(local: Server, local_db: str) -> None:
    dsn = local.client_conninfo(local_db)
    first = run("install", "--dsn", dsn)
    assert first.returncode == 0, first.stderr
    assert f"version {latest_version()}" in first.stdout
    # progress goes to stderr
    assert f"installing version {latest_version():04d} (the current code)" in first.stderr

    again = run("install", "--dsn", dsn)
    assert again.returncode == 0
    assert "is up to date" in again.stdout

    text = run("status", "--dsn", dsn)
    assert text.returncode == 0
    assert f"installed version: {latest_version()}" in text.stdout
    assert "applied  0001_baseline" in text.stdout

    data = json.loads(run("status", "--dsn", dsn, "--json").stdout)
    assert data["installed_version"] == latest_version()
    assert data["pending"] == []
    assert data["applied"][0]["settings"]["schema"] == "dblink_safe"

    gone = run("uninstall", "--dsn", dsn)
    assert gone.returncode == 0
    assert "removed pgdblink_safe" in gone.stdout
    after = json.loads(run("status", "--dsn", dsn, "--json").stdout)
    assert after["installed_version"] is None
    assert after["pending"] == [m.filename for m in migrations()]


def test_dsn_from_libpq_environment(local: Server, local_db: str) -> None:
    env = os.environ | {
        "PGHOST": local.host,
        "PGPORT": str(local.port),
        "PGUSER": local.user,
        "PGDATABASE": local_db,
    }
    result = run("install", "--validation-window-ms", "300", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(run("status", "--json", env=env).stdout)
    assert data["applied"][0]["settings"]["validation_window_ms"] == 300


def test_user_error_is_one_line_exit_1(local: Server) -> None:
    bare = "cli_bare"
    local.drop_database(bare)
    local.create_database(bare)
    try:
        result = run("install", "--dsn", local.client_conninfo(bare))
    finally:
        local.drop_database(bare)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "Error: the dblink extension is not installed in database 'cli_bare': "
        "run CREATE EXTENSION dblink, or install with --create-extension"
    ]


def test_connection_error_is_exit_2_without_password() -> None:
    result = run(
        "status", "--dsn", "host=127.0.0.1 port=1 user=x password=Sup3rSecret connect_timeout=2"
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: could not connect")
    assert "Sup3rSecret" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


def test_malformed_dsn_error_masks_password() -> None:
    result = run("status", "--dsn", "host=127.0.0.1 password='open sesame' dbname")
    assert result.returncode == 2
    assert "sesame" not in result.stderr
    assert "open" not in result.stderr.replace("opened", "")


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_with_an_example_and_a_readme_mention(name: str) -> None:
    command = cli.commands[name]
    assert isinstance(command, Command) and not isinstance(command, Group)
    result = run(name, "--help")
    assert result.returncode == 0
    assert re.search(r"^  Examples?:$", result.stdout, re.MULTILINE), result.stdout
    assert f"pgdblink-safe {name}" in result.stdout
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert f"pgdblink-safe {name}" in readme
