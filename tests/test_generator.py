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
    render_current,
    render_migrations,
    sources,
)

ROOT = Path(__file__).resolve().parent.parent


def test_migration_templates_follow_the_naming_rule() -> None:
    names = [p.name for p in (ROOT / "sql" / "migrations").glob("*.sql")]
    assert names
    for name in names:
        assert MIGRATION_NAME.match(name), name
    assert [m.version for m in migrations()] == list(range(1, len(names) + 1))


def test_every_function_source_holds_one_function_named_after_it() -> None:
    files = sorted((ROOT / "sql" / "functions").glob("*.sql"))
    listed = [p for p in sources() if p.startswith("functions/")]
    assert sorted(listed) == [f"functions/{p.name}" for p in files]
    for path in files:
        text = path.read_text()
        created = re.findall(
            r"^CREATE OR REPLACE (?:FUNCTION|PROCEDURE) \{\{ schema \}\}\.(\w+)\(", text, re.M
        )
        commented = re.findall(
            r"^COMMENT ON (?:FUNCTION|PROCEDURE) \{\{ schema \}\}\.(\w+)\(", text, re.M
        )
        assert created == [path.stem], f"{path.name} must create exactly the function {path.stem}"
        assert commented == [path.stem], f"{path.name} must comment on {path.stem}"


def test_the_templates_use_only_the_shared_context() -> None:
    """No {% set %} per file, no filters, no search_path written out instead of the clause."""
    for path in (ROOT / "sql").rglob("*.sql"):
        if path.parent.name == "migrations":
            continue
        text = path.read_text()
        assert "{%" not in text, f"{path}: the template context is built in Python"
        for expression in re.findall(r"\{\{(.*?)\}\}", text):
            assert re.fullmatch(r" \w+ ", expression), f"{path}: {{{{{expression}}}}}"
        assert "SET search_path" not in text, f"{path}: use {{{{ function_settings }}}}"


def test_undefined_template_variable_fails() -> None:
    template = _environment().from_string("SELECT {{ not_a_setting }}")
    with pytest.raises(jinja2.UndefinedError):
        template.render(Settings().as_dict())


def test_every_rendered_statement_parses() -> None:
    settings = Settings(schema='Odd "schema"', dblink_schema="ext")
    statements = pglast.parse_sql(render_current(settings))
    assert len(statements) > 50
    for rendered in render_migrations(settings):
        assert pglast.parse_sql(rendered.sql), f"migration {rendered.version} has no statements"


def test_the_current_code_defines_each_function_once() -> None:
    sql = render_current(Settings())
    created = re.findall(
        r"^CREATE OR REPLACE (?:FUNCTION|PROCEDURE) dblink_safe\.(\w+)\(", sql, re.M
    )
    assert len(created) == len(set(created)) == len(list((ROOT / "sql" / "functions").iterdir()))


def test_schema_names_are_quoted_where_needed() -> None:
    sql = render_current(Settings(schema='My "Ops"', dblink_schema="user"))
    assert 'CREATE SCHEMA "My ""Ops""";' in sql
    assert '"user".dblink_exec(' in sql
    assert "public.dblink" not in sql


def test_render_script_installs_the_current_code_and_records_each_step() -> None:
    script = render_script(Settings())
    assert script.splitlines().count("BEGIN;") == 1
    assert script.count("INSERT INTO dblink_safe.installed_migrations") == len(migrations())
    assert render_current(Settings()) in script
    assert "-- validation_window_ms: 1000\n" in script
    recorded = re.findall(r"'(\{\n[^']*\})'::pg_catalog\.jsonb", script)
    assert len(recorded) == len(migrations())
    assert json.loads(recorded[0]) == Settings().as_dict()


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
