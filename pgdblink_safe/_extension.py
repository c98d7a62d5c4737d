"""The toolkit as a PostgreSQL extension: scripts, control file, PGXS and PGXN files, pg_tle."""

import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

from pgdblink_safe._resources import data_dir
from pgdblink_safe._sqlquote import ident, literal
from pgdblink_safe.errors import ConfigurationError
from pgdblink_safe.generator import _environment, context, migrations, sources
from pgdblink_safe.settings import Settings

NAME = "pgdblink_safe"
COMMENT = "pgdblink_safe: safe dblink wrappers for PL/pgSQL"

#: The script variants: dblink's schema through @extschema:dblink@ (PostgreSQL 16 and
#: later), or rendered in at export time and checked when the script runs (14 and 15).
VARIANTS = ("pg16", "pg14")

_CREATE_OR_REPLACE = re.compile(r"^CREATE OR REPLACE (?=FUNCTION |PROCEDURE )", re.MULTILINE)

#: Quoted for the tag of the dollar-quoted extension SQL in the pg_tle script.
_TLE_TAG = "$_pgdblink_safe_tle_$"


@dataclass(frozen=True)
class Step:
    """A release step as an extension version."""

    number: int
    name: str
    version: str
    released: bool


def steps() -> list[Step]:
    """Every release step with its extension version, oldest first.

    A released step has the version it was released as (sql/migrations.lock). An unreleased
    step N is the next minor version with the pre-release tag ``devN`` (``0.2.0-dev2``), a
    SemVer PGXN accepts; it names a development build, with no update path to the release.
    """
    lock = json.loads((data_dir("sql") / "migrations.lock").read_text())
    found: list[Step] = []
    last_release = "0.0.0"
    for migration in migrations():
        entry = lock.get(f"{migration.version:04d}_{migration.name}")
        if entry is not None and entry.get("release"):
            last_release = str(entry["release"])
            found.append(Step(migration.version, migration.name, last_release, True))
            continue
        major, minor, _patch = (int(part) for part in last_release.split("."))
        version = f"{major}.{minor + 1}.0-dev{migration.version}"
        found.append(Step(migration.version, migration.name, version, False))
    return found


def current_version() -> str:
    """The extension version of the current code (the latest step)."""
    return steps()[-1].version


def step_of(version: str) -> int | None:
    """The release step an extension version stands for, or None when unknown."""
    for step in steps():
        if step.version == version:
            return step.number
    return None


def _variant_context(settings: Settings, variant: str) -> dict[str, str | int]:
    values = dict(context(settings))
    if variant == "pg16":
        # Replaced by CREATE EXTENSION with dblink's schema, quoted as an identifier; the
        # literal form is read by format('%s.dblink(...)').
        values["dblink"] = "@extschema:dblink@"
        values["dblink_literal"] = "'@extschema:dblink@'"
    return values


def _render(template: str, settings: Settings, variant: str) -> str:
    return _environment().get_template(template).render(_variant_context(settings, variant))


def _guard(settings: Settings) -> str:
    """Stop a 14/15 script whose rendered dblink schema is not where dblink is."""
    expected = literal(settings.dblink_schema)
    return (
        "DO $guard$\nBEGIN\n"
        "    IF NOT EXISTS (SELECT FROM pg_catalog.pg_extension AS e\n"
        "        JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace\n"
        "        WHERE e.extname OPERATOR(pg_catalog.=) 'dblink'\n"
        f"          AND n.nspname OPERATOR(pg_catalog.=) {expected}) THEN\n"
        f"        RAISE EXCEPTION 'pgdblink_safe was exported for dblink in schema %', {expected}\n"
        "            USING ERRCODE = 'object_not_in_prerequisite_state',\n"
        "                  HINT = 'Export it again with --dblink-schema set to the schema "
        "dblink is in.';\n"
        "    END IF;\nEND\n$guard$;\n\n"
    )


def _prologue(settings: Settings, creates_schema: bool) -> str:
    schema = ident(settings.schema)
    lines = [
        "-- The steps are recorded by the extension's version (pg_extension.extversion); the",
        "-- migration form's installed_migrations table is not part of the extension.",
        "DO $form$",
        "BEGIN",
        "    IF EXISTS (SELECT FROM pg_catalog.pg_class AS c",
        "        JOIN pg_catalog.pg_namespace AS n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace",
        f"        WHERE n.nspname OPERATOR(pg_catalog.=) {literal(settings.schema)}",
        "          AND c.relname OPERATOR(pg_catalog.=) 'installed_migrations') THEN",
        "        RAISE EXCEPTION 'pgdblink_safe is already installed in schema % by migrations',",
        f"            {literal(settings.schema)}",
        "            USING ERRCODE = 'duplicate_object',",
        "                  HINT = 'Keep that install up to date with pgdblink-safe upgrade, or "
        "remove it with pgdblink-safe uninstall before creating the extension.';",
        "    END IF;",
        "END",
        "$form$;",
    ]
    if creates_schema:
        lines.append(f"CREATE SCHEMA {schema};")
    lines += [
        f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;",
        f"COMMENT ON SCHEMA {schema} IS {literal(COMMENT)};",
        "",
    ]
    return "\n".join(lines)


def _as_extension(sql: str, settings: Settings, variant: str, creates_schema: bool) -> str:
    """A rendered step or the current code, with the schema part made an extension's."""
    schema_part = _render("schema.sql", settings, variant)
    rest = sql.replace(schema_part, "", 1)
    if "installed_migrations" in rest or "CREATE SCHEMA" in rest:
        raise ConfigurationError(
            "a release step creates the schema or the installed_migrations table outside "
            "sql/schema.sql: the extension scripts cannot be made from it"
        )
    if rest != sql:
        sql = sql.replace(schema_part, _prologue(settings, creates_schema), 1)
    elif creates_schema and "REVOKE ALL ON SCHEMA" in sql:
        raise ConfigurationError("sql/schema.sql changed: the extension scripts need updating")
    if rest != sql:
        # An install script creates each function once: plain CREATE fails on an object that
        # is already there instead of taking it over (the pattern pgspot's PS002 is about).
        sql = _CREATE_OR_REPLACE.sub("CREATE ", sql)
    guard = _guard(settings) if variant == "pg14" else ""
    return f"{guard}{sql.rstrip()}\n\n{_config_dump(sql, settings)}{_record(settings)}"


#: CREATE TABLE of a table in the toolkit's schema, as the rendered steps write it.
_CREATE_TABLE = re.compile(r"^CREATE TABLE (?P<name>.+) \($", re.MULTILINE)


def _config_dump(sql: str, settings: Settings) -> str:
    """Marks the tables a script creates as holding data of their own, so that pg_dump keeps
    their rows: an extension's tables are otherwise dumped as its script creates them, empty."""
    lines = [
        f"SELECT pg_catalog.pg_extension_config_dump({literal(m['name'])}, '');"
        for m in _CREATE_TABLE.finditer(sql)
    ]
    return "".join(f"{line}\n" for line in lines) + ("\n" if lines else "")


#: Starts the part of the extension's comment that holds the settings it was exported with.
SETTINGS_MARK = "; settings "


def _record(settings: Settings) -> str:
    """What the migration form keeps in installed_migrations.settings: `status` reads it."""
    described = COMMENT + SETTINGS_MARK + json.dumps(settings.as_dict(), sort_keys=True)
    return f"COMMENT ON EXTENSION {NAME} IS {literal(described)};\n"


def exported_settings(comment: str | None) -> dict[str, object] | None:
    """The settings an installed extension was exported with, from its comment."""
    if comment is None or SETTINGS_MARK not in comment:
        return None
    values = json.loads(comment.split(SETTINGS_MARK, 1)[1])
    return values if isinstance(values, dict) else None


def install_sql(settings: Settings, variant: str, creates_schema: bool = False) -> str:
    """The current code as an extension install script, without psql's guard line."""
    current = "\n".join(_render(path, settings, variant) for path in sources())
    return _as_extension(current, settings, variant, creates_schema)


def step_sql(settings: Settings, number: int, variant: str, creates_schema: bool = False) -> str:
    """Release step ``number`` as an extension script (the first one installs)."""
    migration = migrations()[number - 1]
    return _as_extension(
        _render(migration.template, settings, variant), settings, variant, creates_schema
    )


def _psql_guard(what: str) -> str:
    return f'\\echo Use "{what}" to load this file. \\quit\n'


def control(settings: Settings, variant: str) -> str:
    lines = [
        f"# {NAME} extension",
        f"comment = {literal(COMMENT)}",
        f"default_version = '{current_version()}'",
        "requires = 'dblink'",
        f"schema = {literal(settings.schema)}",
        "relocatable = false",
        # Not trusted: see the README's Install section (a trusted script would run as the
        # bootstrap superuser and leave its functions owned by it).
        "superuser = true",
        "trusted = false",
    ]
    if variant == "pg16":
        # The scripts write dblink's schema into function bodies: moving dblink later would
        # break them, so ALTER EXTENSION dblink SET SCHEMA is refused.
        lines.append("no_relocate = 'dblink'")
    return "\n".join(lines) + "\n"


_MAKEFILE = """\
# {name} for PostgreSQL 14 and later, with PGXS:
#   make install                  (as a user who may write to the server's share directory)
#   make install PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
# then, in a database: CREATE EXTENSION {name} CASCADE;
# PostgreSQL 16 and later get the scripts that find dblink through @extschema:dblink@;
# 14 and 15 those with dblink's schema rendered in at export time.
PG_CONFIG ?= pg_config
PG_MAJOR := $(shell $(PG_CONFIG) --version | sed -e 's/^PostgreSQL \\([0-9]*\\).*/\\1/')
ifeq ($(shell test "$(PG_MAJOR)" -ge 16 2>/dev/null && echo yes),yes)
DATA = pg16/{name}.control $(wildcard pg16/{name}--*.sql)
else
DATA = {name}.control $(wildcard pg14/{name}--*.sql)
endif
MODULEDIR = extension
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
"""


def meta_json() -> str:
    version = current_version()
    meta = {
        "name": NAME,
        "abstract": "Safe dblink wrappers for PL/pgSQL: connections that heal, bounded waits",
        "description": (
            "PL/pgSQL wrappers over dblink: named connections that reconnect when dead, "
            "retries that never apply a statement twice, class-08 errors with hints, per-call "
            "timeouts, transaction-scoped connections and no passwords in errors."
        ),
        "version": version,
        "maintainer": ["pgdblink_safe maintainers <pgdblink-safe@localhost>"],
        "license": "postgresql",
        "provides": {
            NAME: {
                "abstract": COMMENT,
                "file": f"pg16/{NAME}--{version}.sql",
                "version": version,
            }
        },
        "prereqs": {
            "runtime": {"requires": {"PostgreSQL": "14.0.0", "dblink": "1.2.0"}},
        },
        "release_status": "stable" if steps()[-1].released else "testing",
        "generated_by": "pgdblink-safe export --format extension",
        "meta-spec": {"version": "1.0.0", "url": "https://pgxn.org/meta/spec.txt"},
        "tags": ["dblink", "plpgsql", "resilience"],
    }
    return json.dumps(meta, indent=2) + "\n"


def write_extension(settings: Settings, out: Path) -> list[Path]:
    """The extension's files for PGXS and PGXN, written into ``out``."""
    written: list[Path] = []

    def write(relative: str, text: str) -> None:
        path = out / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)

    write(f"{NAME}.control", control(settings, "pg14"))
    write(f"pg16/{NAME}.control", control(settings, "pg16"))
    guard = _psql_guard(f"CREATE EXTENSION {NAME}")
    all_steps = steps()
    for variant in VARIANTS:
        write(
            f"{variant}/{NAME}--{current_version()}.sql",
            guard + install_sql(settings, variant),
        )
        # The first step installs the version it was released as, so that a database can
        # start there and be updated (ALTER EXTENSION ... UPDATE) like one installed then.
        first = all_steps[0]
        if first.version != current_version():
            write(f"{variant}/{NAME}--{first.version}.sql", guard + step_sql(settings, 1, variant))
        for previous, step in itertools.pairwise(all_steps):
            update = _psql_guard(f"ALTER EXTENSION {NAME} UPDATE TO '{step.version}'")
            write(
                f"{variant}/{NAME}--{previous.version}--{step.version}.sql",
                update + step_sql(settings, step.number, variant),
            )
    write("Makefile", _MAKEFILE.format(name=NAME))
    write("META.json", meta_json())
    return written


def _dollar(text: str) -> str:
    if _TLE_TAG in text:
        raise ConfigurationError(f"the extension SQL contains {_TLE_TAG}; it cannot be quoted")
    return f"{_TLE_TAG}\n{text}{_TLE_TAG}"


def pg_tle_script(settings: Settings) -> str:
    """One script that registers every version with pg_tle; running it again changes nothing.

    pg_tle has no control-file schema, so its scripts create the schema themselves, and dblink's
    schema is rendered in (checked when CREATE EXTENSION runs), whatever the server version.
    """
    all_steps = steps()
    first = all_steps[0]
    name = literal(NAME)
    parts = [
        f"-- {NAME} {current_version()} for pg_tle (CREATE EXTENSION pg_tle first);\n"
        "-- run with psql -v ON_ERROR_STOP=1 -f; each call is skipped when already done.\n"
        f"-- dblink is expected in schema {settings.dblink_schema}.\n",
        "BEGIN;\n",
        f"SELECT pgtle.install_extension(\n    {name},\n    {literal(first.version)},\n"
        f"    {literal(COMMENT)},\n"
        f"{_dollar(step_sql(settings, 1, 'pg14', creates_schema=True))},\n"
        "    requires => ARRAY['dblink']\n)\n"
        "WHERE NOT EXISTS (\n    SELECT 1 FROM pgtle.available_extension_versions() AS v\n"
        f"    WHERE v.name = {name} AND v.version = {literal(first.version)}\n);\n",
    ]
    for previous, step in itertools.pairwise(all_steps):
        parts.append(
            f"SELECT pgtle.install_update_path(\n    {name},\n    {literal(previous.version)},\n"
            f"    {literal(step.version)},\n"
            f"{_dollar(step_sql(settings, step.number, 'pg14', creates_schema=True))}\n)\n"
            "WHERE NOT EXISTS (\n"
            f"    SELECT 1 FROM pgtle.extension_update_paths({name}) AS p\n"
            f"    WHERE p.source = {literal(previous.version)} "
            f"AND p.target = {literal(step.version)}\n"
            "      AND p.path IS NOT NULL\n);\n"
        )
    parts.append(f"SELECT pgtle.set_default_version({name}, {literal(current_version())});\n")
    parts.append("COMMIT;\n")
    return "".join(parts)
