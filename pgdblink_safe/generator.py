"""Render the PL/pgSQL library and its versioned migrations from the jinja2 templates."""

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache

import jinja2

from pgdblink_safe._resources import data_dir
from pgdblink_safe._sqlquote import ident, literal
from pgdblink_safe.errors import ConfigurationError
from pgdblink_safe.settings import Settings

#: Migration templates are named ``NNNN_short_name.sql.j2``, numbered from 0001 without gaps.
MIGRATION_NAME = re.compile(r"(?P<version>\d{4})_(?P<name>[a-z0-9]+(?:_[a-z0-9]+)*)\.sql\.j2\Z")


@dataclass(frozen=True)
class Migration:
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


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_dir("sql"))),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["ident"] = ident
    env.filters["literal"] = literal
    return env


def migrations() -> list[Migration]:
    """Every migration this package ships, oldest first."""
    found: list[Migration] = []
    for path in sorted((data_dir("sql") / "migrations").iterdir()):
        if path.name.startswith(("_", ".")) or not path.is_file():
            continue
        match = MIGRATION_NAME.match(path.name)
        if match is None:
            raise ConfigurationError(
                f"sql/migrations/{path.name} does not follow the NNNN_short_name.sql.j2 rule"
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


def render_migration(migration: Migration, settings: Settings) -> RenderedMigration:
    template = _environment().get_template(migration.template)
    context = settings.as_dict() | {
        "guc_prefix": settings.guc_prefix,
        "conninfo_defaults": settings.conninfo_defaults,
        "conninfo_defaults_16": settings.conninfo_defaults_16,
        "tx_table": settings.tx_table,
    }
    return RenderedMigration(migration.version, migration.name, template.render(context))


def render_migrations(settings: Settings, after_version: int = 0) -> list[RenderedMigration]:
    """The migrations newer than ``after_version``, rendered for ``settings``."""
    return [render_migration(m, settings) for m in migrations() if m.version > after_version]


def record_statement(settings: Settings) -> str:
    """The INSERT that records an applied migration; takes version, name, checksum, settings."""
    table = f"{ident(settings.schema)}.installed_migrations"
    return (
        f"INSERT INTO {table} (version, name, checksum, settings)\n"
        "VALUES (\n    %(version)s,\n    %(name)s,\n    %(checksum)s,\n"
        "    %(settings)s::pg_catalog.jsonb\n)"
    )


def render_script(settings: Settings, after_version: int = 0) -> str:
    """A psql-ready script: each pending migration and its bookkeeping row in one transaction."""
    settings_json = json.dumps(settings.as_dict(), sort_keys=True, indent=1)
    parts = ["-- pgdblink_safe install script; run with: psql -v ON_ERROR_STOP=1 -f FILE\n"]
    parts += [f"-- {key}: {value}\n" for key, value in sorted(settings.as_dict().items())]
    for rendered in render_migrations(settings, after_version):
        record = record_statement(settings) % {
            "version": literal(rendered.version),
            "name": literal(rendered.name),
            "checksum": literal(rendered.checksum),
            "settings": literal(settings_json),
        }
        parts.append(
            f"\n-- migration {rendered.version:04d}_{rendered.name}\nBEGIN;\n"
            f"{rendered.sql}\n{record};\nCOMMIT;\n"
        )
    return "".join(parts)
