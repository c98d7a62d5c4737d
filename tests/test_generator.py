"""Rendering without a server: strict templates, quoting, the checked-in migrations."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jinja2
import pglast
import pytest
from pglast import keywords

from pgdblink_safe import Settings, render_script
from pgdblink_safe._keywords import NEEDS_QUOTING
from pgdblink_safe._sqlquote import ident, literal
from pgdblink_safe.errors import ConfigurationError
from pgdblink_safe.generator import (
    MIGRATION_NAME,
    _environment,
    migrations,
    render_migration,
    render_migrations,
)

ROOT = Path(__file__).resolve().parent.parent


def test_checked_in_migrations_equal_the_default_rendering() -> None:
    checked_in = sorted(p.name for p in (ROOT / "migrations").glob("*.sql"))
    assert checked_in == [m.filename for m in migrations()]
    for migration in migrations():
        rendered = render_migration(migration, Settings()).sql
        on_disk = (ROOT / "migrations" / migration.filename).read_text()
        assert on_disk == rendered, (
            f"migrations/{migration.filename} differs from its template's rendering: "
            "run python scripts/render_migrations.py (and never change a released migration)"
        )


def test_migration_templates_follow_the_naming_rule() -> None:
    names = [p.name for p in (ROOT / "sql" / "migrations").iterdir()]
    assert names
    for name in names:
        assert MIGRATION_NAME.match(name), name
    assert [m.version for m in migrations()] == list(range(1, len(names) + 1))


def test_undefined_template_variable_fails() -> None:
    template = _environment().from_string("SELECT {{ not_a_setting }}")
    with pytest.raises(jinja2.UndefinedError):
        template.render(Settings().as_dict())


def test_every_rendered_statement_parses() -> None:
    total = 0
    for rendered in render_migrations(Settings(schema='Odd "schema"', dblink_schema="ext")):
        statements = pglast.parse_sql(rendered.sql)
        assert statements, f"migration {rendered.version} has no statements"
        total += len(statements)
    assert total > 50


def test_every_function_pins_search_path() -> None:
    sql = render_migrations(Settings())[0].sql
    functions = re.findall(r"CREATE FUNCTION [^\n]+", sql)
    pins = re.findall(r"^SET search_path = pg_catalog, pg_temp$", sql, re.MULTILINE)
    assert functions and len(pins) == len(functions)


def test_schema_names_are_quoted_where_needed() -> None:
    sql = render_migrations(Settings(schema='My "Ops"', dblink_schema="user"))[0].sql
    assert 'CREATE SCHEMA "My ""Ops""";' in sql
    assert '"user".dblink_exec(' in sql
    assert "public.dblink" not in sql


def test_render_script_records_each_migration() -> None:
    script = render_script(Settings())
    assert script.splitlines().count("BEGIN;") == len(migrations())
    assert "INSERT INTO dblink_safe.installed_migrations" in script
    assert "-- validation_window_ms: 1000\n" in script
    recorded = script.split("'{", 1)[1].split("}'", 1)[0]
    assert json.loads("{" + recorded + "}") == Settings().as_dict()


def test_render_command_needs_no_server() -> None:
    env = os.environ | {"PGHOST": "/nonexistent", "PGPORT": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "pgdblink_safe", "render", "--schema", "tools"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == render_script(Settings(schema="tools"))


def test_render_command_rejects_bad_settings_in_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pgdblink_safe", "render", "--schema", "public"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("Error: schema 'public' is not a dedicated schema")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "values",
    [
        {"schema": ""},
        {"schema": "pg_toolkit"},
        {"schema": "x" * 64},
        {"validation_window_ms": -1},
        {"connect_timeout_s": 0},
        {"keepalives_count": True},
    ],
)
def test_settings_reject_bad_values(values: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        Settings(**values)  # type: ignore[arg-type]


def test_guc_prefix_is_a_valid_setting_name_for_any_schema() -> None:
    assert Settings().guc_prefix == "dblink_safe"
    odd = Settings(schema="Odd schema!").guc_prefix
    assert re.fullmatch(r"[a-z_][a-z0-9_]*", odd)


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("dblink_safe", "dblink_safe"),
        ("Ops", '"Ops"'),
        ("user", '"user"'),
        ("a b", '"a b"'),
        ('q"x', '"q""x"'),
        ("_x1", "_x1"),
        ("1x", '"1x"'),
    ],
)
def test_ident(name: str, quoted: str) -> None:
    assert ident(name) == quoted


def test_literal() -> None:
    assert literal("it's") == "'it''s'"
    assert literal("a\\b") == "E'a\\\\b'"
    assert literal(None) == "NULL"
    assert literal(True) == "true"
    assert literal(1.5) == "1.5"
    with pytest.raises(ValueError):
        literal("nul\x00")


def test_keyword_list_matches_the_parser() -> None:
    expected = (
        keywords.RESERVED_KEYWORDS | keywords.COL_NAME_KEYWORDS | keywords.TYPE_FUNC_NAME_KEYWORDS
    )
    assert set(expected) == NEEDS_QUOTING
