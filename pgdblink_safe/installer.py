"""Install, inspect and remove the toolkit in a database through a psycopg connection."""

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus

from pgdblink_safe import _extension
from pgdblink_safe.errors import (
    ChecksumMismatchError,
    DblinkMissingError,
    InstallError,
    LockTimeoutError,
)
from pgdblink_safe.generator import (
    RenderedMigration,
    latest_version,
    migrations,
    record_statement,
    render_current,
    render_migration,
    render_migrations,
)
from pgdblink_safe.settings import Settings

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    name: str
    checksum: str
    applied_at: datetime
    applied_by: str
    settings: dict[str, Any]


@dataclass(frozen=True)
class Status:
    database: str
    schema: str
    dblink_schema: str | None
    installed_version: int | None
    latest_version: int
    applied: list[AppliedMigration]
    pending: list[str]
    #: How the toolkit is installed: "migrations" (pgdblink-safe install, or exported
    #: migrations), "extension" (CREATE EXTENSION, from files or pg_tle), or None.
    form: str | None = None
    #: pg_extension.extversion when installed as an extension.
    extension_version: str | None = None
    #: The settings the extension was exported with (kept in its comment).
    extension_settings: dict[str, Any] | None = None

    @property
    def settings(self) -> Settings | None:
        if self.form == "extension" and self.extension_settings is not None:
            # On 16 and later the scripts find dblink wherever it is, so report where it is.
            values = dict(self.extension_settings, schema=self.schema)
            if self.dblink_schema is not None:
                values["dblink_schema"] = self.dblink_schema
            return Settings.from_dict(values)
        return Settings.from_dict(self.applied[-1].settings) if self.applied else None

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for row in data["applied"]:
            row["applied_at"] = row["applied_at"].isoformat()
        return data


def _lock_key(schema: str) -> int:
    digest = hashlib.sha256(f"pgdblink_safe:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _require_idle(conn: psycopg.Connection[Any]) -> None:
    if conn.info.transaction_status != TransactionStatus.IDLE:
        raise InstallError(
            "the connection is inside a transaction: the installer commits each migration "
            "itself, so pass a connection that is not in a transaction"
        )


def find_dblink_schema(conn: psycopg.Connection[Any]) -> str | None:
    """The schema the dblink extension is installed in, or None when it is not installed."""
    row = conn.execute(
        "SELECT n.nspname FROM pg_catalog.pg_extension e "
        "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'dblink'"
    ).fetchone()
    return None if row is None else str(row[0])


@dataclass(frozen=True)
class InstalledExtension:
    schema: str
    version: str
    comment: str | None = None


def find_extension(conn: psycopg.Connection[Any]) -> InstalledExtension | None:
    """The pgdblink_safe extension of this database (CREATE EXTENSION), or None."""
    row = conn.execute(
        "SELECT n.nspname, e.extversion, pg_catalog.obj_description(e.oid, 'pg_extension') "
        "FROM pg_catalog.pg_extension e "
        "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = %s",
        [_extension.NAME],
    ).fetchone()
    if row is None:
        return None
    return InstalledExtension(str(row[0]), str(row[1]), None if row[2] is None else str(row[2]))


def _refuse_extension(conn: psycopg.Connection[Any]) -> None:
    found = find_extension(conn)
    if found is not None:
        raise InstallError(
            f"pgdblink_safe is installed as an extension (version {found.version}, schema "
            f"{found.schema!r}) in database {conn.info.dbname!r}: update it with ALTER "
            "EXTENSION pgdblink_safe UPDATE, or DROP EXTENSION pgdblink_safe before installing "
            "the migration form"
        )


def _read_applied(conn: psycopg.Connection[Any], schema: str) -> list[AppliedMigration] | None:
    """Applied migrations, or None when the schema holds no installation."""
    table = sql.Identifier(schema, "installed_migrations")
    # A query on pg_class, not to_regclass(): after waiting for the advisory lock this must
    # see a table another installer just committed, and the catalog caches may not yet.
    exists = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = 'installed_migrations')",
        [schema],
    ).fetchone()
    if not exists or not exists[0]:
        return None
    rows = conn.execute(
        sql.SQL(
            "SELECT version, name, checksum, applied_at, applied_by::text, settings "
            "FROM {} ORDER BY version"
        ).format(table)
    ).fetchall()
    return [AppliedMigration(*row) for row in rows]


def _schema_exists(conn: psycopg.Connection[Any], schema: str) -> bool:
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s)", [schema]
    ).fetchone()
    return bool(row and row[0])


def status(conn: psycopg.Connection[Any], schema: str = "dblink_safe") -> Status:
    """What is installed in ``schema`` and which migrations are still pending."""
    with conn.transaction():
        applied = _read_applied(conn, schema)
        dblink_schema = find_dblink_schema(conn)
        extension = find_extension(conn)
    if extension is not None and extension.schema == schema:
        step = _extension.step_of(extension.version)
        return Status(
            database=conn.info.dbname,
            schema=schema,
            dblink_schema=dblink_schema,
            installed_version=step,
            latest_version=latest_version(),
            applied=[],
            pending=[m.filename for m in migrations() if step is not None and m.version > step],
            form="extension",
            extension_version=extension.version,
            extension_settings=_extension.exported_settings(extension.comment),
        )
    done = {m.version for m in applied or []}
    return Status(
        database=conn.info.dbname,
        schema=schema,
        dblink_schema=dblink_schema,
        installed_version=max(done) if done else None,
        latest_version=latest_version(),
        applied=applied or [],
        pending=[m.filename for m in migrations() if m.version not in done],
        form="migrations" if applied is not None else None,
    )


def _lock(conn: psycopg.Connection[Any], schema: str, lock_timeout_s: float) -> None:
    try:
        conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", [_lock_key(schema)])
    except psycopg.errors.LockNotAvailable as exc:
        raise LockTimeoutError(
            f"another pgdblink-safe run has held the lock on schema {schema!r} for more than "
            f"{lock_timeout_s:g}s; try again when it has finished"
        ) from exc


def _set_timeouts(conn: psycopg.Connection[Any], lock_timeout_s: float, statement_s: float) -> None:
    conn.execute(
        "SELECT pg_catalog.set_config('lock_timeout', %s, true), "
        "pg_catalog.set_config('statement_timeout', %s, true)",
        [f"{int(lock_timeout_s * 1000)}ms", f"{int(statement_s * 1000)}ms"],
    )


def _verify(applied: list[AppliedMigration], settings: Settings) -> None:
    known = {m.version: m for m in migrations()}
    for row in applied:
        if row.version not in known:
            raise InstallError(
                f"the database has migration {row.version:04d}_{row.name}, which this package "
                f"does not know: it was installed by a newer pgdblink-safe (latest here is "
                f"{latest_version():04d})"
            )
        rendered = render_migration(known[row.version], Settings.from_dict(row.settings))
        if rendered.checksum != row.checksum:
            raise ChecksumMismatchError(
                f"migration {row.version:04d}_{row.name} was applied with checksum "
                f"{row.checksum[:12]}, but this package renders {rendered.checksum[:12]} for "
                "it: the migration changed after it was applied, or dblink moved to another "
                "schema; released migrations must never change"
            )
    if applied:
        recorded = Settings.from_dict(applied[-1].settings)
        if recorded != settings:
            changed = {
                k: (v, settings.as_dict()[k])
                for k, v in recorded.as_dict().items()
                if settings.as_dict()[k] != v
            }
            raise InstallError(
                f"schema {settings.schema!r} was installed with other settings "
                f"({', '.join(f'{k}: {a!r} -> {b!r}' for k, (a, b) in changed.items())}); "
                "uninstall and install again to change them"
            )


def _check_roles(conn: psycopg.Connection[Any], roles: Sequence[str]) -> None:
    missing = [
        role
        for role in roles
        if conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", [role]).fetchone()
        is None
    ]
    if missing:
        names = ", ".join(map(repr, missing))
        raise InstallError(f"role(s) {names} do not exist; nothing was granted")


def _check_schema_safety(conn: psycopg.Connection[Any], schema: str) -> None:
    """Refuse a schema the installing role does not own, or that others may create in.

    Anyone who may CREATE in the schema could add an overload that captures a call of the
    toolkit's functions; anyone who owns it could replace them.
    """
    row = conn.execute(
        "SELECT pg_catalog.pg_get_userbyid(n.nspowner), "
        "pg_catalog.pg_has_role(n.nspowner, 'USAGE') "
        "FROM pg_catalog.pg_namespace n WHERE n.nspname = %s",
        [schema],
    ).fetchone()
    if row is None:
        return
    owner, is_member = row
    if not is_member:
        raise InstallError(
            f"schema {schema!r} is owned by {owner!r}, not by the installing role "
            f"{conn.info.user!r}: install as its owner, or into another schema"
        )
    creators = [
        r[0]
        for r in conn.execute(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' "
            "ELSE pg_catalog.pg_get_userbyid(a.grantee) END "
            "FROM pg_catalog.pg_namespace n, "
            "LATERAL pg_catalog.aclexplode(n.nspacl) AS a "
            "WHERE n.nspname = %s AND a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner "
            "ORDER BY 1",
            [schema],
        )
    ]
    if creators:
        raise InstallError(
            f"role(s) {', '.join(creators)} may CREATE in schema {schema!r}, which would let "
            f"them capture the toolkit's calls: REVOKE CREATE ON SCHEMA {schema} FROM them first"
        )


#: What a role that calls the wrappers needs on the toolkit's tables.
_TABLE_GRANTS = {
    "prepared_xacts": "SELECT, INSERT, DELETE",
    "two_phase_targets": "SELECT, INSERT",
}


def _grant(conn: psycopg.Connection[Any], schema: str, roles: Sequence[str]) -> None:
    """What a role needs to call the wrappers: USAGE on the schema, EXECUTE on its functions.

    The wrappers run with the caller's rights, so the functions they call are granted too.
    """
    for role in roles:
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
        conn.execute(
            sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
        conn.execute(
            sql.SQL("GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA {} TO {}").format(
                sql.Identifier(schema), sql.Identifier(role)
            )
        )
        # Two-phase commit writes a commit record per prepared remote transaction (row
        # security keeps each role to its own) and records new targets for the resolver.
        for table, privileges in _TABLE_GRANTS.items():
            if conn.execute(
                "SELECT pg_catalog.to_regclass(%s) IS NOT NULL",
                [sql.Identifier(schema, table).as_string(conn)],
            ).fetchone() == (True,):
                conn.execute(
                    sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                        sql.SQL(privileges), sql.Identifier(schema, table), sql.Identifier(role)
                    )
                )


def granted_roles(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Roles other than the owner that hold USAGE on the toolkit's schema."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT DISTINCT pg_catalog.pg_get_userbyid(a.grantee) "
            "FROM pg_catalog.pg_namespace n, LATERAL pg_catalog.aclexplode(n.nspacl) AS a "
            "WHERE n.nspname = %s AND a.privilege_type = 'USAGE' AND a.grantee <> 0 "
            "AND a.grantee <> n.nspowner ORDER BY 1",
            [schema],
        )
    ]


def install(
    conn: psycopg.Connection[Any],
    settings: Settings | None = None,
    *,
    schema: str | None = None,
    create_extension: bool = False,
    grant: Sequence[str] = (),
    to_version: int | None = None,
    lock_timeout_s: float = 10.0,
    statement_timeout_s: float = 120.0,
    progress: Progress = _quiet,
) -> list[RenderedMigration]:
    """Apply the pending migrations; each commits together with the row that records it.

    ``settings`` defaults to what the schema was installed with (or the package defaults);
    the dblink schema is always looked up in the database. ``grant`` names roles that get
    what they need to call the wrappers; roles granted before keep it through every
    migration. ``to_version`` stops at that version instead of the latest. Returns what was
    applied, so an empty list means the database was already up to date.
    """
    _require_idle(conn)
    return _apply(
        conn,
        settings,
        schema=schema,
        create_extension=create_extension,
        grant=grant,
        to_version=to_version,
        lock_timeout_s=lock_timeout_s,
        statement_timeout_s=statement_timeout_s,
        progress=progress,
    )


@dataclass(frozen=True)
class Plan:
    """What an install or upgrade would do, found by doing it and rolling back."""

    migrations: list[str]
    created: list[str]
    replaced: list[str]
    dropped: list[str]


def catalog(conn: psycopg.Connection[Any], schema: str) -> dict[str, str]:
    """The toolkit schema's objects, each with a digest of its definition, grants and comment."""
    rows = conn.execute(
        """
        SELECT 'function ' || p.oid::pg_catalog.regprocedure::text,
               pg_catalog.md5(pg_catalog.concat_ws('|', p.prosrc, p.proconfig::text,
                   p.provolatile, p.prosecdef, p.proacl::text,
                   pg_catalog.obj_description(p.oid, 'pg_proc'),
                   pg_catalog.pg_get_function_result(p.oid),
                   pg_catalog.pg_get_function_arguments(p.oid)))
        FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = %(schema)s
        UNION ALL
        SELECT 'table ' || c.oid::pg_catalog.regclass::text,
               pg_catalog.md5(pg_catalog.concat_ws('|', c.relacl::text,
                   pg_catalog.obj_description(c.oid, 'pg_class'),
                   (SELECT pg_catalog.string_agg(a.attname || ' '
                        || pg_catalog.format_type(a.atttypid, a.atttypmod), ', '
                        ORDER BY a.attnum)
                    FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)))
        FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = %(schema)s
        UNION ALL
        SELECT 'schema ' || pg_catalog.quote_ident(n.nspname),
               pg_catalog.md5(pg_catalog.concat_ws('|', n.nspacl::text,
                   pg_catalog.obj_description(n.oid, 'pg_namespace'),
                   pg_catalog.pg_get_userbyid(n.nspowner)))
        FROM pg_catalog.pg_namespace n WHERE n.nspname = %(schema)s
        """,
        {"schema": schema},
    ).fetchall()
    return dict(sorted((str(name), str(digest)) for name, digest in rows))


def plan(
    conn: psycopg.Connection[Any],
    settings: Settings | None = None,
    *,
    schema: str | None = None,
    create_extension: bool = False,
    to_version: int | None = None,
    lock_timeout_s: float = 10.0,
    statement_timeout_s: float = 120.0,
) -> Plan:
    """Apply what ``install`` would inside one transaction, compare the catalog, roll back."""
    _require_idle(conn)
    target_schema = schema or (settings.schema if settings else Settings().schema)
    with conn.transaction(force_rollback=True):
        before = catalog(conn, target_schema)
        applied = _apply(
            conn,
            settings,
            schema=target_schema,
            create_extension=create_extension,
            to_version=to_version,
            lock_timeout_s=lock_timeout_s,
            statement_timeout_s=statement_timeout_s,
        )
        after = catalog(conn, target_schema)
    return Plan(
        migrations=[f"{m.version:04d}_{m.name}" for m in applied],
        created=[name for name in after if name not in before],
        replaced=[name for name in after if name in before and before[name] != after[name]],
        dropped=[name for name in before if name not in after],
    )


def _apply(
    conn: psycopg.Connection[Any],
    settings: Settings | None,
    *,
    schema: str | None,
    create_extension: bool,
    lock_timeout_s: float,
    statement_timeout_s: float,
    grant: Sequence[str] = (),
    to_version: int | None = None,
    progress: Progress = _quiet,
) -> list[RenderedMigration]:
    latest = latest_version()
    if to_version is not None and not 1 <= to_version <= latest:
        raise InstallError(f"to_version must be from 1 to {latest}, not {to_version}")
    target_schema = schema or (settings.schema if settings else Settings().schema)
    applied_now: list[RenderedMigration] = []
    with conn.transaction():
        _set_timeouts(conn, lock_timeout_s, statement_timeout_s)
        _lock(conn, target_schema, lock_timeout_s)
        _refuse_extension(conn)
        dblink_schema = find_dblink_schema(conn)
        if dblink_schema is None:
            if not create_extension:
                raise DblinkMissingError(
                    f"the dblink extension is not installed in database {conn.info.dbname!r}: "
                    "run CREATE EXTENSION dblink, or install with --create-extension"
                )
            progress("creating extension dblink")
            conn.execute("CREATE EXTENSION dblink")
            dblink_schema = find_dblink_schema(conn)
            if dblink_schema is None:
                raise DblinkMissingError(
                    f"CREATE EXTENSION dblink ran in database {conn.info.dbname!r}, yet the "
                    "extension is not listed in pg_extension afterwards"
                )
        _check_roles(conn, grant)
        applied = _read_applied(conn, target_schema)
        if applied is None and _schema_exists(conn, target_schema):
            raise InstallError(
                f"schema {target_schema!r} already exists and holds no pgdblink_safe "
                "installation: choose another schema or drop that one"
            )
        _check_schema_safety(conn, target_schema)
        if to_version is not None and applied and applied[-1].version > to_version:
            raise InstallError(
                f"schema {target_schema!r} is at version {applied[-1].version}, beyond "
                f"{to_version}: migrations are never undone"
            )
        if settings is None:
            base = Settings.from_dict(applied[-1].settings) if applied else Settings()
        else:
            base = settings
        settings = dataclasses.replace(base, schema=target_schema, dblink_schema=dblink_schema)
        _verify(applied or [], settings)
    done = {m.version for m in applied or []}
    pending = [
        rendered
        for rendered in render_migrations(settings)
        if rendered.version not in done and (to_version is None or rendered.version <= to_version)
    ]
    if not done and pending and pending[-1].version == latest:
        applied_now = _install_current(
            conn, settings, pending, lock_timeout_s, statement_timeout_s, progress
        )
    for rendered in [] if applied_now else pending:
        started = time.monotonic()
        progress(f"applying {rendered.version:04d}_{rendered.name}")
        with conn.transaction():
            _set_timeouts(conn, lock_timeout_s, statement_timeout_s)
            _lock(conn, settings.schema, lock_timeout_s)
            # Another installer may have applied it while this one waited for the lock.
            current = {m.version for m in _read_applied(conn, settings.schema) or []}
            if rendered.version in current:
                progress(f"  {rendered.version:04d} was applied meanwhile by another run")
                continue
            holders = granted_roles(conn, settings.schema) if rendered.version > 1 else []
            conn.execute(rendered.sql.encode())  # bytes: several statements, no placeholders
            # A step that creates or recreates functions starts them without grants.
            _grant(conn, settings.schema, holders)
            _record(conn, settings, rendered)
        applied_now.append(rendered)
        progress(f"  done in {(time.monotonic() - started) * 1000:.0f} ms")
    if grant:
        with conn.transaction():
            _set_timeouts(conn, lock_timeout_s, statement_timeout_s)
            _lock(conn, settings.schema, lock_timeout_s)
            _grant(conn, settings.schema, grant)
        progress(f"granted use of schema {settings.schema} to {', '.join(grant)}")
    return applied_now


def _record(conn: psycopg.Connection[Any], settings: Settings, rendered: RenderedMigration) -> None:
    conn.execute(
        record_statement(settings),
        {
            "version": rendered.version,
            "name": rendered.name,
            "checksum": rendered.checksum,
            "settings": json.dumps(settings.as_dict(), sort_keys=True),
        },
    )


def _install_current(
    conn: psycopg.Connection[Any],
    settings: Settings,
    steps: list[RenderedMigration],
    lock_timeout_s: float,
    statement_timeout_s: float,
    progress: Progress,
) -> list[RenderedMigration]:
    """Create the current code at once and record every step as applied, in one transaction.

    Returns the steps recorded, or nothing when another installer got there first (the
    caller then applies whatever that one left pending, step by step).
    """
    started = time.monotonic()
    progress(f"installing version {steps[-1].version:04d} (the current code)")
    with conn.transaction():
        _set_timeouts(conn, lock_timeout_s, statement_timeout_s)
        _lock(conn, settings.schema, lock_timeout_s)
        if _read_applied(conn, settings.schema) is not None:
            progress("  installed meanwhile by another run")
            return []
        conn.execute(render_current(settings).encode())  # bytes: no placeholders
        for rendered in steps:
            _record(conn, settings, rendered)
    progress(f"  done in {(time.monotonic() - started) * 1000:.0f} ms")
    return steps


def uninstall(
    conn: psycopg.Connection[Any],
    schema: str = "dblink_safe",
    *,
    lock_timeout_s: float = 10.0,
    progress: Progress = _quiet,
) -> bool:
    """Drop the toolkit's schema and everything in it; False when nothing was installed.

    Refuses when objects outside the schema depend on the toolkit (a view calling a wrapper,
    say), naming them, instead of dropping them too.
    """
    _require_idle(conn)
    with conn.transaction():
        _set_timeouts(conn, lock_timeout_s, 120.0)
        _lock(conn, schema, lock_timeout_s)
        if not _schema_exists(conn, schema):
            return False
        extension = find_extension(conn)
        as_extension = extension is not None and extension.schema == schema
        if not as_extension and _read_applied(conn, schema) is None:
            raise InstallError(
                f"schema {schema!r} holds no pgdblink_safe installation; nothing was dropped"
            )
        dependents = [
            row[0]
            for row in conn.execute(
                "SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) "
                "FROM pg_catalog.pg_depend d, "
                "LATERAL pg_catalog.pg_identify_object(d.refclassid, d.refobjid, 0) AS r, "
                "LATERAL pg_catalog.pg_identify_object(d.classid, d.objid, 0) AS o "
                "WHERE d.deptype = 'n' AND r.schema = %s AND o.schema IS DISTINCT FROM %s "
                # A row security policy has no schema of its own: the toolkit's are on its
                # own tables.
                "AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_policy p "
                "JOIN pg_catalog.pg_class c ON c.oid = p.polrelid "
                "WHERE d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass "
                "AND p.oid = d.objid AND c.relnamespace = %s::pg_catalog.regnamespace) "
                "ORDER BY 1",
                [schema, schema, sql.Identifier(schema).as_string(conn)],
            )
        ]
        if dependents:
            raise InstallError(
                f"objects outside schema {schema!r} depend on the toolkit: "
                f"{'; '.join(dependents)}. Drop or change them first; nothing was dropped"
            )
        if as_extension:
            # The schema came from CREATE EXTENSION (the control file's schema) and is no
            # member of the extension: it goes too once the extension has emptied it.
            progress(f"dropping extension {_extension.NAME} and schema {schema}")
            conn.execute(sql.SQL("DROP EXTENSION {}").format(sql.Identifier(_extension.NAME)))
            conn.execute(sql.SQL("DROP SCHEMA {}").format(sql.Identifier(schema)))
            return True
        progress(f"dropping schema {schema}")
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
    return True
