"""`pgdblink-safe resolve`: finish the two-phase transactions their sessions left prepared."""

import os
import re
import shlex
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgdblink_safe._conninfo import SECRET_KEYWORDS
from pgdblink_safe._sqlquote import ident, literal
from pgdblink_safe.errors import ConfigurationError

DEFAULT_MIN_AGE = "5 seconds"

#: Decisions that leave a prepared transaction, or a target, for a later run.
IN_DOUBT = frozenset(
    {
        "in progress",
        "too young",
        "unreachable",
        "failed",
        "unknown",
        "elsewhere",
        "would commit",
        "would roll back",
    }
)
#: Decisions that ended a prepared transaction (this run, or its own session meanwhile).
FINISHED = frozenset({"committed", "rolled back", "already finished"})
#: Decisions about commit records whose prepared transaction is gone.
FORGOTTEN = frozenset({"forgotten", "would forget"})

SCHEDULERS = ("pg_cron", "cron", "systemd")
JOB_NAME = "pgdblink_safe_resolve"
UNIT_NAME = "pgdblink-safe-resolve"


@dataclass(frozen=True)
class Decision:
    """One row of resolve_prepared: what was done with a GID, or why a target was skipped."""

    target: str
    gid: str | None
    local_xid: str | None
    decision: str
    sqlstate: str | None
    message: str | None

    @property
    def in_doubt(self) -> bool:
        return self.decision in IN_DOUBT

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"in_doubt": self.in_doubt}


@dataclass(frozen=True)
class Summary:
    finished: int
    in_doubt: int
    forgotten: int

    @classmethod
    def of(cls, decisions: list[Decision]) -> "Summary":
        return cls(
            finished=sum(d.decision in FINISHED for d in decisions),
            in_doubt=sum(d.in_doubt for d in decisions),
            forgotten=sum(d.decision in FORGOTTEN for d in decisions),
        )

    def line(self) -> str:
        text = f"finished {self.finished}, still in doubt {self.in_doubt}"
        if self.forgotten:
            text += f", commit records forgotten {self.forgotten}"
        return text

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def min_age_interval(value: str) -> str:
    """``--min-age`` as interval text: a bare number is seconds, anything else is PostgreSQL's."""
    text = value.strip()
    if not text:
        raise ConfigurationError("--min-age must not be empty")
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        return f"{text} seconds"
    return text


def run(conn: psycopg.Connection[Any], schema: str, min_age: str, dry_run: bool) -> list[Decision]:
    """resolve_prepared in a READ COMMITTED transaction of its own, which it needs."""
    query = sql.SQL(
        "SELECT r.target, r.gid, r.local_xid::text, r.decision, r.sqlstate, r.message "
        "FROM {}.resolve_prepared(%s::interval, %s) AS r"
    ).format(sql.Identifier(schema))
    previous = conn.isolation_level
    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
    try:
        with conn.transaction():
            rows = conn.execute(query, [min_age, dry_run]).fetchall()
    finally:
        conn.isolation_level = previous
    return [Decision(*row) for row in rows]


def lines(decisions: list[Decision]) -> list[str]:
    """One aligned line per decision: decision, target, GID, then SQLSTATE and message."""
    if not decisions:
        return []
    width = max(len(d.decision) for d in decisions)
    target_width = max(len(d.target) for d in decisions)
    out = []
    for d in decisions:
        line = f"{d.decision:<{width}}  {d.target:<{target_width}}  {d.gid or '-'}"
        if d.sqlstate or d.message:
            line += f"  {d.sqlstate or ''}: {d.message or ''}".rstrip()
        out.append(line)
    return out


def _database(dsn: str) -> str | None:
    """The database a DSN names (or PGDATABASE), None when it is libpq's default or unknown."""
    try:
        parsed = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return None
    name = str(parsed.get("dbname") or os.environ.get("PGDATABASE") or "")
    if not name or "=" in name or "://" in name:
        return None
    return name


def _dsn_without_secrets(dsn: str) -> str:
    """The DSN as key=value pairs without its password: that belongs in a .pgpass file."""
    try:
        parsed = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        raise ConfigurationError("--dsn is not a connection string libpq accepts") from exc
    kept = {k: str(v) for k, v in parsed.items() if k not in SECRET_KEYWORDS and v is not None}
    first = [k for k in ("host", "port", "dbname", "user") if k in kept]
    ordered = {k: kept[k] for k in first} | kept
    return psycopg.conninfo.make_conninfo("", **ordered)


def _dollar_quote(text: str) -> str:
    tag = "$$"
    while tag in text:
        tag = f"$r{len(tag)}$"
    return f"{tag}{text}{tag}"


def _call(schema: str, min_age: str) -> str:
    args = "" if min_age == DEFAULT_MIN_AGE else f"min_age => {literal(min_age)}"
    return f"SELECT count(*) FROM {ident(schema)}.resolve_prepared({args})"


def _command(dsn: str, schema: str, min_age: str) -> list[str]:
    """The resolve command a scheduler runs: this executable, the DSN without a password."""
    found = Path(sys.executable).parent / "pgdblink-safe"
    program = str(found) if found.exists() else shutil.which("pgdblink-safe") or "pgdblink-safe"
    shown = _dsn_without_secrets(dsn) if dsn else "host=HOST dbname=DATABASE user=OWNER"
    words = [program, "resolve", "--dsn", shown]
    if schema != "dblink_safe":
        words += ["--schema", schema]
    if min_age != DEFAULT_MIN_AGE:
        words += ["--min-age", min_age]
    return words


def schedule(scheduler: str, dsn: str, schema: str, min_age: str) -> str:
    """What to install so that ``scheduler`` runs the resolver every minute."""
    if scheduler == "pg_cron":
        return _pg_cron(dsn, schema, min_age)
    if scheduler == "cron":
        return _crontab(dsn, schema, min_age)
    if scheduler == "systemd":
        return _systemd(dsn, schema, min_age)
    raise ConfigurationError(f"unknown scheduler {scheduler!r}: choose one of {SCHEDULERS}")


def _pg_cron(dsn: str, schema: str, min_age: str) -> str:
    command = _dollar_quote(_call(schema, min_age))
    database = _database(dsn)
    shown = database or "DATABASE"
    # Job names are unique per role: one named after the database keeps the jobs of several
    # databases scheduled from the same pg_cron database apart.
    return (
        "-- As the role that installed the toolkit (it must own "
        f"{ident(schema)}.prepared_xacts) or a superuser.\n"
        f"-- In {shown} itself, when pg_cron is installed there (cron.database_name):\n"
        f"SELECT cron.schedule({literal(JOB_NAME)}, '* * * * *', {command});\n"
        "-- Or in the database pg_cron is installed in, when that is another one:\n"
        f"SELECT cron.schedule_in_database({literal(f'{JOB_NAME}_{shown}')}, '* * * * *',\n"
        f"    {command}, {literal(shown)});\n"
        "-- Each run is in cron.job_run_details; pgdblink-safe doctor reports a resolver "
        "that has not run.\n"
    )


def _crontab(dsn: str, schema: str, min_age: str) -> str:
    command = shlex.join(_command(dsn, schema, min_age))
    # cron runs a line through sh; a % there would end the command.
    command = command.replace("%", "\\%")
    return (
        "# crontab -e, as an OS account whose ~/.pgpass has the password for --dsn.\n"
        "# The summary goes to /dev/null; errors (exit 2) reach cron's mail.\n"
        f"* * * * * {command} >/dev/null\n"
    )


def _systemd_quote(words: list[str]) -> str:
    """An ExecStart= command line: systemd expands % and $ in it unless doubled."""
    return shlex.join(words).replace("%", "%%").replace("$", "$$")


def _systemd(dsn: str, schema: str, min_age: str) -> str:
    database = _database(dsn) or "DATABASE"
    exec_start = _systemd_quote(_command(dsn, schema, min_age))
    return (
        f"# /etc/systemd/system/{UNIT_NAME}.service\n"
        "[Unit]\n"
        f"Description=pgdblink_safe: finish two-phase transactions left prepared ({database})\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=oneshot\n"
        "# An OS account whose ~/.pgpass has the password for --dsn.\n"
        "User=postgres\n"
        f"ExecStart={exec_start}\n"
        "# Exit 1 is a transaction still in doubt, left for the next run; 2 is an error.\n"
        "SuccessExitStatus=1\n"
        "\n"
        f"# /etc/systemd/system/{UNIT_NAME}.timer\n"
        "[Unit]\n"
        f"Description=Run {UNIT_NAME}.service every minute\n"
        "\n"
        "[Timer]\n"
        "OnCalendar=minutely\n"
        "AccuracySec=1s\n"
        "\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
        "\n"
        f"# systemctl daemon-reload && systemctl enable --now {UNIT_NAME}.timer\n"
    )
