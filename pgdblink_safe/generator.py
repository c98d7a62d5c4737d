"""Render the PL/pgSQL library (its current code and its release steps) from the templates."""

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from pgdblink_safe._resources import data_dir
from pgdblink_safe._sqlquote import ident, literal
from pgdblink_safe.errors import ConfigurationError
from pgdblink_safe.settings import Settings

#: Release steps are named ``NNNN_short_name.sql`` in sql/migrations/, numbered from 0001.
MIGRATION_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql\Z")

#: What every function pins, so that no caller's search_path can capture a call.
FUNCTION_SETTINGS = "SET search_path = pg_catalog, pg_temp"


@dataclass(frozen=True)
class Migration:
    """A release step: a frozen template that brings the previous version to this one."""

    version: int
    name: str
    template: str

    @property
    def filename(self) -> str:
        """Name of the rendered file in ``migrations/``."""
        return f"{self.version:04d}_{self.name}.sql"


@dataclass(frozen=True)
class RenderedMigration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def _sql_dir(sql_dir: Path | None) -> Path:
    return data_dir("sql") if sql_dir is None else sql_dir


@cache
def _environment(sql_dir: Path | None = None) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_sql_dir(sql_dir))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


@cache
def context(settings: Settings) -> dict[str, str | int]:
    """What the templates may use: every value already quoted for the place it goes.

    Identifiers are quoted identifiers, texts are SQL literals, durations are numeric literals
    in seconds (``*_s``) or whole milliseconds (``*_ms``); the session-setting names
    (``guc_*``) are documented in sql/README.md.
    """
    schema = ident(settings.schema)
    dblink = ident(settings.dblink_schema)

    def seconds(milliseconds: int) -> str:
        return literal(milliseconds / 1000.0)

    def guc(suffix: str) -> str:
        return literal(f"{settings.guc_prefix}.{suffix}")

    return {
        "schema": schema,
        "schema_literal": literal(schema),
        "dblink": dblink,
        "dblink_literal": literal(dblink),
        "function_settings": FUNCTION_SETTINGS,
        "guc_hot": guc("h_"),
        "guc_meta": guc("m_"),
        "guc_target": guc("t_"),
        "guc_mapped": guc("x_"),
        "guc_names": guc("names"),
        "tx_table": f"pg_temp.{ident(settings.tx_table)}",
        "tx_table_literal": literal(f"pg_temp.{ident(settings.tx_table)}"),
        "conninfo_defaults": literal(settings.conninfo_defaults),
        "conninfo_defaults_16": literal(settings.conninfo_defaults_16),
        "validation_window_s": seconds(settings.validation_window_ms),
        "connect_timeout_s": settings.connect_timeout_s,
        "max_attempts": settings.max_attempts,
        "retry_budget_s": seconds(settings.retry_budget_ms),
        "backoff_base_s": seconds(settings.backoff_base_ms),
        "backoff_max_s": seconds(settings.backoff_max_ms),
        "resolve_wait_s": seconds(settings.resolve_wait_ms),
        "max_lifetime_s": seconds(settings.max_lifetime_ms),
        "max_idle_s": seconds(settings.max_idle_ms),
        "remote_tx_idle_timeout_ms": settings.remote_tx_idle_timeout_ms,
        "remote_commit_timeout_s": seconds(settings.remote_commit_timeout_ms),
        "autonomous_server": literal(settings.autonomous_server),
    }


def render_template(path: str, settings: Settings, sql_dir: Path | None = None) -> str:
    """One template under sql/ (or ``sql_dir``), rendered for ``settings``."""
    return _environment(sql_dir).get_template(path).render(context(settings))


def sources(sql_dir: Path | None = None) -> list[str]:
    """The current code's templates, in creation order (sql/manifest.txt)."""
    lines = (_sql_dir(sql_dir) / "manifest.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def render_current(settings: Settings) -> str:
    """The current code: every object of the latest version, each function exactly once."""
    return "\n".join(render_template(path, settings) for path in sources())


def migrations(sql_dir: Path | None = None) -> list[Migration]:
    """Every release step this package ships, oldest first."""
    found: list[Migration] = []
    for path in sorted((_sql_dir(sql_dir) / "migrations").iterdir()):
        if path.name.startswith(("_", ".")) or not path.is_file():
            continue
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise ConfigurationError(
                f"sql/migrations/{path.name} does not follow the NNNN_short_name.sql rule"
            )
        found.append(Migration(int(match["version"]), match["name"], f"migrations/{path.name}"))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ConfigurationError(
                f"migration {migration.template} should be numbered {expected:04d}: "
                "versions start at 0001 and have no gaps"
            )
    return found


def latest_version() -> int:
    return len(migrations())


def render_migration(
    migration: Migration, settings: Settings, sql_dir: Path | None = None
) -> RenderedMigration:
    sql = render_template(migration.template, settings, sql_dir)
    return RenderedMigration(migration.version, migration.name, sql)


def render_migrations(settings: Settings, after_version: int = 0) -> list[RenderedMigration]:
    """The release steps newer than ``after_version``, rendered for ``settings``."""
    return [render_migration(m, settings) for m in migrations() if m.version > after_version]


def record_statement(settings: Settings) -> str:
    """The INSERT that records an applied step; takes version, name, checksum, settings."""
    table = f"{ident(settings.schema)}.installed_migrations"
    return (
        f"INSERT INTO {table} (version, name, checksum, settings)\n"
        "VALUES (\n    %(version)s,\n    %(name)s,\n    %(checksum)s,\n"
        "    %(settings)s::pg_catalog.jsonb\n)"
    )


def _record(rendered: RenderedMigration, settings: Settings, settings_json: str) -> str:
    return record_statement(settings) % {
        "version": literal(rendered.version),
        "name": literal(rendered.name),
        "checksum": literal(rendered.checksum),
        "settings": literal(settings_json),
    }


def render_script(settings: Settings, after_version: int = 0) -> str:
    """A psql-ready script.

    From nothing (``after_version`` 0): the current code and the rows recording every
    release step, in one transaction. From a version: each newer step with its row, one
    transaction each.
    """
    settings_json = json.dumps(settings.as_dict(), sort_keys=True, indent=1)
    parts = ["-- pgdblink_safe install script; run with: psql -v ON_ERROR_STOP=1 -f FILE\n"]
    parts += [f"-- {key}: {value}\n" for key, value in sorted(settings.as_dict().items())]
    if after_version == 0:
        records = "".join(
            f"{_record(rendered, settings, settings_json)};\n"
            for rendered in render_migrations(settings)
        )
        parts.append(
            f"\n-- version {latest_version():04d}, the current code\nBEGIN;\n"
            f"{render_current(settings)}\n{records}COMMIT;\n"
        )
        return "".join(parts)
    for rendered in render_migrations(settings, after_version):
        parts.append(
            f"\n-- migration {rendered.version:04d}_{rendered.name}\nBEGIN;\n"
            f"{rendered.sql}\n{_record(rendered, settings, settings_json)};\nCOMMIT;\n"
        )
    return "".join(parts)
