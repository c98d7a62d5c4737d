"""Write the migrations as files another migration tool picks up unchanged, or as an extension.

Every exported migration also inserts the row that records it in the toolkit's bookkeeping
table, so that `pgdblink-safe status` and later `pgdblink-safe upgrade` runs see a database
migrated by the other tool exactly as one migrated by the CLI. The extension and pg_tle
forms are recorded by PostgreSQL itself (pg_extension) instead.
"""

import json
import re
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgdblink_safe import _extension as _ext
from pgdblink_safe._sqlquote import ident, literal
from pgdblink_safe.errors import ConfigurationError
from pgdblink_safe.generator import RenderedMigration, record_statement, render_migrations
from pgdblink_safe.settings import Settings

FORMATS = ("plain", "flyway", "alembic", "dbmate", "sqitch", "extension", "pg_tle")

_PLANNED_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

#: What SQLAlchemy's text() would read as a bind parameter (":name" not after ":" or "\").
_BIND = re.compile(r"(?<![:\w\\]):(?=\w)")


def _body(rendered: RenderedMigration, settings: Settings) -> str:
    """The migration and the INSERT that records it, without transaction control."""
    record = record_statement(settings) % {
        "version": literal(rendered.version),
        "name": literal(rendered.name),
        "checksum": literal(rendered.checksum),
        "settings": literal(json.dumps(settings.as_dict(), sort_keys=True)),
    }
    return f"{rendered.sql.rstrip()}\n\n{record};\n"


def _revert(rendered: RenderedMigration, settings: Settings) -> str:
    """Undoing 0001 drops the schema; later migrations are forward-only."""
    if rendered.version == 1:
        return f"DROP SCHEMA {ident(settings.schema)} CASCADE;\n"
    return (
        "DO $$BEGIN RAISE EXCEPTION 'pgdblink_safe migration "
        f"{rendered.version:04d} cannot be undone: migrations are forward-only; revert to "
        "0001 (which drops the schema) and deploy again'; END$$;\n"
    )


def _stem(rendered: RenderedMigration) -> str:
    return f"{rendered.version:04d}_{rendered.name}"


def _plain(migrations: list[RenderedMigration], settings: Settings, out: Path) -> list[Path]:
    written = []
    for rendered in migrations:
        path = out / f"{_stem(rendered)}.sql"
        path.write_text(
            f"-- pgdblink_safe {_stem(rendered)}; run in order with psql -v ON_ERROR_STOP=1 -f\n"
            f"BEGIN;\n{_body(rendered, settings)}COMMIT;\n"
        )
        written.append(path)
    return written


def _flyway(migrations: list[RenderedMigration], settings: Settings, out: Path) -> list[Path]:
    written = []
    for rendered in migrations:
        # Flyway runs each versioned migration in a transaction of its own on PostgreSQL.
        path = out / f"V{rendered.version}__pgdblink_safe_{rendered.name}.sql"
        path.write_text(_body(rendered, settings))
        written.append(path)
    return written


def _dbmate(migrations: list[RenderedMigration], settings: Settings, out: Path) -> list[Path]:
    written = []
    for rendered in migrations:
        path = out / f"{rendered.version:04d}_pgdblink_safe_{rendered.name}.sql"
        path.write_text(
            f"-- migrate:up\n{_body(rendered, settings)}\n"
            f"-- migrate:down\n{_revert(rendered, settings)}"
        )
        written.append(path)
    return written


def _alembic(migrations: list[RenderedMigration], settings: Settings, out: Path) -> list[Path]:
    versions = out / "versions"
    versions.mkdir(exist_ok=True)
    written = []
    previous = None
    for rendered in migrations:
        revision = f"pgdblink_safe_{rendered.version:04d}"
        # op.execute() hands a string to SQLAlchemy's text(), which would read ":name" as a
        # bind parameter; "\:" is its escape for a literal colon.
        upgrade_sql = _BIND.sub(r"\\:", _body(rendered, settings))
        downgrade_sql = _BIND.sub(r"\\:", _revert(rendered, settings))
        path = versions / f"{revision}_{rendered.name}.py"
        path.write_text(
            f'"""pgdblink_safe migration {_stem(rendered)}."""\n\n'
            "from alembic import op\n\n"
            f"revision = {revision!r}\n"
            f"down_revision = {previous!r}\n"
            "branch_labels = None\n"
            "depends_on = None\n\n"
            f"UPGRADE_SQL = {upgrade_sql!r}\n\n"
            f"DOWNGRADE_SQL = {downgrade_sql!r}\n\n\n"
            "def upgrade() -> None:\n"
            "    op.execute(UPGRADE_SQL)\n\n\n"
            "def downgrade() -> None:\n"
            "    op.execute(DOWNGRADE_SQL)\n"
        )
        written.append(path)
        previous = revision
    return written


def _sqitch(migrations: list[RenderedMigration], settings: Settings, out: Path) -> list[Path]:
    for folder in ("deploy", "revert", "verify"):
        (out / folder).mkdir(exist_ok=True)
    lines = ["%syntax-version=1.0.0", "%project=pgdblink_safe", ""]
    written = []
    previous = None
    table = f"{ident(settings.schema)}.installed_migrations"
    for rendered in migrations:
        name = _stem(rendered)
        requires = f" [{previous}]" if previous else ""
        # A fixed planning time per migration: Sqitch derives change ids from it, so every
        # export of a migration must plan it identically.
        planned = (_PLANNED_EPOCH + timedelta(minutes=rendered.version)).strftime(
            "%Y-%m-%dT%H:%M:%SZ"
        )
        lines.append(
            f"{name}{requires} {planned} pgdblink-safe <pgdblink-safe@localhost> "
            f"# pgdblink_safe migration {rendered.version}"
        )
        deploy = out / "deploy" / f"{name}.sql"
        deploy.write_text(f"BEGIN;\n{_body(rendered, settings)}COMMIT;\n")
        revert = out / "revert" / f"{name}.sql"
        revert.write_text(f"BEGIN;\n{_revert(rendered, settings)}COMMIT;\n")
        verify = out / "verify" / f"{name}.sql"
        # Fails (division by zero) unless the migration's row is there.
        verify.write_text(
            f"SELECT 1 / pg_catalog.count(*) FROM {table} WHERE version = {rendered.version};\n"
        )
        written += [deploy, revert, verify]
        previous = name
    plan = out / "sqitch.plan"
    plan.write_text("\n".join(lines) + "\n")
    return [plan, *written]


def _extension(_migrations: list[RenderedMigration], settings: Settings, out: Path) -> list[Path]:
    return _ext.write_extension(settings, out)


def _pg_tle(_migrations: list[RenderedMigration], settings: Settings, out: Path) -> list[Path]:
    path = out / f"{_ext.NAME}--pg_tle.sql"
    path.write_text(_ext.pg_tle_script(settings))
    return [path]


_WRITERS: dict[str, Callable[[list[RenderedMigration], Settings, Path], list[Path]]] = {
    "plain": _plain,
    "flyway": _flyway,
    "alembic": _alembic,
    "dbmate": _dbmate,
    "sqitch": _sqitch,
    "extension": _extension,
    "pg_tle": _pg_tle,
}


def export(settings: Settings, fmt: str, out: Path) -> list[Path]:
    """Write every migration for ``fmt`` into ``out``; returns the files written.

    Exporting again into the same directory (after upgrading this package, say) adds the new
    migrations and leaves identical files alone. A file that exists with other content is
    never overwritten: nothing is written then.
    """
    if fmt not in _WRITERS:
        raise ConfigurationError(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    with tempfile.TemporaryDirectory() as scratch:
        staged = _WRITERS[fmt](render_migrations(settings), settings, Path(scratch))
        relative = [p.relative_to(scratch) for p in staged]

        def conflicts(r: Path) -> bool:
            old, new = (out / r).read_bytes(), (Path(scratch) / r).read_bytes()
            # The Sqitch plan may grow by new changes; nothing else may change.
            return not new.startswith(old) if r.name == "sqitch.plan" else old != new

        differing = [str(r) for r in relative if (out / r).exists() and conflicts(r)]
        if differing:
            raise ConfigurationError(
                f"{out} already has {', '.join(differing[:3])}"
                f"{' and more' if len(differing) > 3 else ''} with other content (another "
                "configuration, or an older package): export into another directory"
            )
        written = []
        for r in relative:
            target = out / r
            if target.exists() and r.name != "sqitch.plan":
                continue  # identical, checked above; the plan grows with new migrations
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(scratch) / r, target)
            written.append(target)
    return written
