"""The pgdblink-safe command line: a thin layer over the generator and the installer."""

import dataclasses
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click
import psycopg

from pgdblink_safe import __version__, bench, installer
from pgdblink_safe._conninfo import scrub
from pgdblink_safe.errors import ConfigurationError, InstallError, PgDblinkSafeError
from pgdblink_safe.generator import render_script
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
                type=int,
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


@click.group()
@click.version_option(__version__, prog_name="pgdblink-safe")
def cli() -> None:
    """Install and inspect pgdblink_safe, safe dblink wrappers for PL/pgSQL.

    \b
    Example:
        pgdblink-safe install --dsn "host=db1 dbname=app user=admin"
    """


@cli.command()
@schema_option
@click.option(
    "--dblink-schema",
    default="public",
    show_default=True,
    help="Schema the dblink extension lives in (install looks it up instead).",
)
@tunable_options(show_default=True)
@click.option(
    "--after-version",
    type=int,
    default=0,
    show_default=True,
    help="Render only the migrations newer than this version.",
)
def render(schema: str, dblink_schema: str, after_version: int, **tunables: int) -> None:
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
@click.option(
    "--lock-timeout",
    type=float,
    default=10.0,
    show_default=True,
    help="Seconds to wait for another installer to finish.",
)
@click.option(
    "--grant",
    "grants",
    multiple=True,
    metavar="ROLE",
    help="Let ROLE call the wrappers (USAGE on the schema, EXECUTE on its functions); "
    "repeatable. Roles granted once keep it through later migrations.",
)
def install(
    dsn: str,
    schema: str,
    create_extension: bool,
    lock_timeout: float,
    grants: tuple[str, ...],
    **tunables: int | None,
) -> None:
    """Apply the pending migrations to a database; running it again changes nothing.

    Each migration commits together with the row that records it. Settings default to what
    the schema was installed with.

    \b
    Example:
        pgdblink-safe install --dsn postgresql://admin@db1/app --create-extension \\
            --grant app_writer --grant etl_jobs
    """
    chosen = {k: v for k, v in tunables.items() if v is not None}
    with _connect(dsn) as conn:
        settings = None
        if chosen:
            current = installer.status(conn, schema).settings or Settings(schema=schema)
            settings = Settings.from_dict(current.as_dict() | chosen)
        applied = installer.install(
            conn,
            settings,
            schema=schema,
            create_extension=create_extension,
            grant=grants,
            lock_timeout_s=lock_timeout,
            progress=_progress,
        )
        state = installer.status(conn, schema)
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
    click.echo(f"installed version: {version if version is not None else '(not installed)'}")
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


def _table(title: str, columns: tuple[str, str], rows: list[tuple[str, str, str]]) -> list[str]:
    width = max(len(title), *(len(label) for label, _, _ in rows))
    first, second = (len(c) for c in columns)
    return [f"{title:<{width}}   {columns[0]}   {columns[1]}"] + [
        f"{label:<{width}}   {a:>{first}}   {b:>{second}}" for label, a, b in rows
    ]


def _bench_lines(result: bench.BenchResult) -> list[str]:
    def ratio(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.2f}"

    lines = [
        f"server            PostgreSQL {result.server_version}",
        f"toolkit           schema {result.schema}, version {result.installed_version}, "
        f"validation window {result.validation_window_ms} ms",
        f"calls             {result.calls} of each, interleaved on one connection "
        f"(after {result.warmup_calls} warm-up)",
    ]
    if not result.same_remote_backend:
        lines.append("warning           the connection was replaced during the measurement")
    lines += _table(
        "",
        ("median µs", "p99 µs"),
        [
            ("raw dblink_exec", f"{result.raw.median_us:.1f}", f"{result.raw.p99_us:.1f}"),
            (
                "minimal wrapper (floor)",
                f"{result.floor.median_us:.1f}",
                f"{result.floor.p99_us:.1f}",
            ),
            ("safe_dblink_exec", f"{result.safe.median_us:.1f}", f"{result.safe.p99_us:.1f}"),
            ("ratio floor / raw", ratio(result.floor_median_ratio), ratio(result.floor_p99_ratio)),
            ("ratio safe / raw", ratio(result.median_ratio), ratio(result.p99_ratio)),
        ],
    )
    safe, plain = result.safe_recovery, result.plain_recovery
    lines += _table(
        f"recovery after pg_terminate_backend ({result.rounds} rounds)",
        ("median ms", "max ms"),
        [
            (
                "safe_dblink_exec (reconnects itself)",
                f"{safe.median_ms:.1f}",
                f"{safe.max_ms:.1f}",
            ),
            (
                "plain: fail, disconnect, connect, exec",
                f"{plain.median_ms:.1f}",
                f"{plain.max_ms:.1f}",
            ),
        ],
    )
    return lines


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
    help="Calls of each function for the latency figures.",
)
@click.option(
    "--rounds",
    type=click.IntRange(min=1),
    default=20,
    show_default=True,
    help="Terminated remote backends to recover from, for each side.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def bench_command(
    dsn: str, schema: str, target: str | None, calls: int, rounds: int, as_json: bool
) -> None:
    """Measure the wrappers' overhead against raw dblink, and how fast each recovers.

    Times dblink_exec and safe_dblink_exec server-side, interleaved on one dblink connection
    (so both reach the same remote backend), then the first statement after the remote
    backend was terminated: safe_dblink_exec, and plain dblink's catch, disconnect, connect
    and retry. Only backends the benchmark opened itself are terminated. The toolkit must
    be installed; helpers live in pg_temp and the dblink connections are closed at the end.

    \b
    Example:
        pgdblink-safe bench --dsn "dbname=app" --target "host=db2 dbname=app" --json
    """
    with _connect(dsn, also_secret=target or "") as conn:
        if target is None:
            password = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
            target = bench.default_target(conn, None if password is None else str(password))
        result = bench.run_bench(
            conn, target, calls=calls, rounds=rounds, schema=schema, progress=_progress
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
