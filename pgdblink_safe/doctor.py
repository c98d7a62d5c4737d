"""`pgdblink-safe doctor`: what in a database makes dblink connections break, hang or leak."""

import textwrap
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import sql

from pgdblink_safe import _extension
from pgdblink_safe._conninfo import scrub
from pgdblink_safe._sqlquote import ident
from pgdblink_safe.generator import latest_version
from pgdblink_safe.installer import find_dblink_schema, status


@dataclass(frozen=True)
class Finding:
    code: str
    subject: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


#: code -> (title, explanation). Codes are stable: scripts may match on them.
EXPLANATIONS: dict[str, tuple[str, str]] = {
    "PGS001": (
        "dblink is missing",
        "The dblink extension is not installed in this database, so nothing can use it. "
        "Install it with CREATE EXTENSION dblink, or `pgdblink-safe install --create-extension`.",
    ),
    "PGS002": (
        "dblink is too old",
        "The installed dblink extension is older than 1.2, the version every supported "
        "PostgreSQL ships. Run ALTER EXTENSION dblink UPDATE.",
    ),
    "PGS003": (
        "the toolkit is missing or behind",
        "pgdblink_safe is not installed in the schema, or at an older version than this "
        "package: its fixes are not in the database. Run `pgdblink-safe install` or "
        "`pgdblink-safe upgrade` (add --dry-run to see what would change); when it is "
        "installed as an extension, install the new version's files and run ALTER EXTENSION "
        "pgdblink_safe UPDATE.",
    ),
    "PGS004": (
        "this server ends idle sessions",
        "idle_session_timeout or idle_in_transaction_session_timeout is set on this server. "
        "dblink connections to it are cut after that much idleness; the toolkit reconnects "
        "before the next statement, but a remote transaction left idle that long is lost "
        "(08006). Raise the setting for the roles dblink uses (ALTER ROLE ... SET), or keep "
        "remote transactions shorter than it.",
    ),
    "PGS005": (
        "server-side keepalives are off",
        "tcp_keepalives_idle is 0 (the operating system's default, typically 2 hours): a "
        "dblink peer that vanished without a word keeps its backend on this server for hours. "
        "Set tcp_keepalives_idle, tcp_keepalives_interval and tcp_keepalives_count (e.g. 60, "
        "10, 6), or tcp_user_timeout.",
    ),
    "PGS006": (
        "a dblink foreign server lacks timeout options",
        "Connections opened through this foreign server do not get connect_timeout, "
        "keepalives or tcp_user_timeout: a connect to an unreachable host, or a statement to a "
        "peer that vanished, can wait for minutes. The toolkit adds these options to "
        "connection strings, never to foreign servers. From PostgreSQL 16 on, dblink's "
        "connect ignores connect_timeout and only tcp_user_timeout bounds it. ALTER SERVER ... "
        "OPTIONS (ADD connect_timeout '10', ADD keepalives '1', ADD keepalives_idle '30', ADD "
        "tcp_user_timeout '10000').",
    ),
    "PGS007": (
        "a user mapping a non-superuser cannot use",
        "dblink refuses a non-superuser a connection that does not send a password (SQLSTATE "
        "2F003). This user mapping of a dblink foreign server is for a role that is not a "
        "superuser and has no password option. Add one: ALTER USER MAPPING ... OPTIONS (ADD "
        "password '...').",
    ),
    "PGS008": (
        "dblink_connect_u is open to non-superusers",
        "dblink_connect_u connects without dblink's password check, with the server's own "
        "authentication (its .pgpass, its trust rules). A role other than a superuser may "
        "execute it, directly or through PUBLIC. REVOKE EXECUTE ON FUNCTION "
        "dblink_connect_u(text), dblink_connect_u(text, text) FROM PUBLIC (and from those "
        "roles).",
    ),
    "PGS009": (
        "a function body holds a password",
        "A function's source contains what looks like a password in a connection string. "
        "Anyone who can read pg_proc can read it. Use a foreign server with a user mapping "
        "instead (see the README's Security section). The password itself is never shown.",
    ),
    "PGS010": (
        "pg_tle extensions and pg_dump",
        "pg_tle is installed in this database. Extensions registered with pg_tle live in "
        "functions of the pgtle schema, and a dump restores them only into a database where "
        "pg_tle is in shared_preload_libraries and CREATE EXTENSION pg_tle ran before the "
        "restore; older pg_tle releases also dumped CREATE EXTENSION before the functions that "
        "define it (aws/pg_tle#44), failed on versions registered but never created (#190), "
        "and on an extension created at a version other than its default (#245). Keep "
        "pg_tle current, create pgdblink_safe at its default version, and test a restore; "
        "running the script of `pgdblink-safe export --format pg_tle` on the restored "
        "database registers any version the restore missed.",
    ),
    "PGS011": (
        "autonomous transactions cannot reach this database",
        "autonomous_exec and autonomous_query open a connection to their own database: through "
        "the foreign server named by the autonomous_server setting, or, when it is empty, "
        "through the server's own socket, which dblink lets only superusers use without a "
        "password. Found when the setting is empty and roles that are not superusers may "
        "call autonomous_exec, or when it names a foreign server that does not exist, is not "
        "a dblink_fdw server, or leads to another database. Reinstall with "
        "`--autonomous-server NAME`, create the server (`CREATE SERVER NAME FOREIGN DATA "
        "WRAPPER dblink_fdw OPTIONS (host ..., port ..., dbname ...)`) and give each role a "
        "user mapping on it with its own user name and password; see the README's "
        "Autonomous transactions section.",
    ),
    "PGS012": (
        "a two-phase target takes too few prepared transactions",
        "Two-phase commit (ensure_dblink_conn(..., two_phase => true)) prepares the remote "
        "transaction of each committing session: a remote whose max_prepared_transactions is "
        "0 refuses it (SQLSTATE 55000), and one whose limit is below this server's "
        "max_connections can refuse a session when many commit at once, or when prepared "
        "transactions are left for the resolver. Set max_prepared_transactions on the remote "
        "to at least this server's max_connections (plus what other servers that prepare "
        "there need) and restart it; never lower it below the number of transactions "
        "prepared there, or it will not start.",
    ),
    "PGS013": (
        "a remote holds old prepared transactions",
        "A transaction this database prepared on a remote has been waiting for its second "
        "phase for more than a minute. Until it is committed or rolled back it keeps its "
        "locks (pg_locks shows them with pid NULL) and holds back the remote's xmin horizon, "
        "so VACUUM cannot remove dead rows there, and it survives restarts. The session that "
        "prepared it normally finishes it at once; one that died leaves it to the resolver. "
        "Run `pgdblink-safe resolve` (--dry-run first shows what it would do) and schedule it "
        "(`pgdblink-safe resolve --print-schedule pg_cron`, cron or systemd).",
    ),
    "PGS014": (
        "commit records pile up",
        "prepared_xacts holds commit records older than 10 minutes. Each marks a remote "
        "transaction prepared by a local transaction that committed; the resolver removes it "
        "once the remote transaction is finished. Records this old mean the resolver has not "
        "run, cannot reach their targets, or fails there. Run `pgdblink-safe resolve` and "
        "read its decisions (unreachable and failed say why), and schedule it.",
    ),
    "PGS015": (
        "the resolver has not run recently",
        "Two-phase commit has been used in this database (two_phase_targets is not empty), "
        "but resolve_prepared has not run in the last 10 minutes, or never (resolver_runs "
        "records its last run that was not a dry run). Without it, a remote transaction "
        "whose session died between the two phases stays prepared, holding its locks. "
        "Schedule it every minute: `pgdblink-safe resolve --print-schedule pg_cron` (or "
        "cron, systemd) prints what to install.",
    ),
    "PGS016": (
        "a two-phase target cannot be reached",
        "doctor could not connect to a target two-phase commit was used with (listed in "
        "two_phase_targets), or could not read its settings and prepared transactions, "
        "through ensure_dblink_conn as the role running doctor. The resolver cannot finish "
        "transactions prepared there either. Check the target (server up, foreign server and "
        "user mapping, network); a target that is gone for good and holds no prepared "
        "transactions can be deleted from two_phase_targets.",
    ),
}


@dataclass(frozen=True)
class TwoPhaseAges:
    """How old a prepared transaction, a commit record and the resolver's last run may get."""

    prepared: timedelta = timedelta(minutes=1)
    commit_record: timedelta = timedelta(minutes=10)
    resolver: timedelta = timedelta(minutes=10)


#: The README's reference of the codes sits between these lines (scripts/doctor_reference.py).
REFERENCE_START = "<!-- doctor codes: generated by scripts/doctor_reference.py; edit doctor.py -->"
REFERENCE_END = "<!-- end of doctor codes -->"


def reference() -> str:
    """The codes and their explanations as Markdown, for the README."""
    parts = []
    for code, (title, text) in sorted(EXPLANATIONS.items()):
        item = f"- **`{code}` {title}.** {text}"
        parts.append(
            textwrap.fill(
                item,
                width=95,
                subsequent_indent="  ",
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return "\n".join(parts) + "\n"


def _settings_findings(conn: psycopg.Connection[Any]) -> list[Finding]:
    found = []
    rows = conn.execute(
        "SELECT name, setting, unit FROM pg_catalog.pg_settings WHERE name IN "
        "('idle_session_timeout', 'idle_in_transaction_session_timeout', "
        "'tcp_keepalives_idle') ORDER BY name"
    ).fetchall()
    values = {name: (int(setting), unit) for name, setting, unit in rows}
    for name in ("idle_in_transaction_session_timeout", "idle_session_timeout"):
        if values.get(name, (0, None))[0] > 0:
            setting, unit = values[name]
            found.append(
                Finding("PGS004", name, f"{name} is {setting} {unit or ''}".rstrip() + " here")
            )
    if values.get("tcp_keepalives_idle", (1, None))[0] == 0:
        found.append(Finding("PGS005", "tcp_keepalives_idle", "tcp_keepalives_idle is 0 here"))
    return found


def _dblink_findings(conn: psycopg.Connection[Any], dblink_schema: str) -> list[Finding]:
    found = []
    row = conn.execute(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'dblink'"
    ).fetchone()
    if row is not None and tuple(int(p) for p in str(row[0]).split(".")) < (1, 2):
        found.append(Finding("PGS002", "dblink", f"dblink is at version {row[0]}"))
    for (signature,) in conn.execute(
        "SELECT p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p "
        "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname = %s AND p.proname = 'dblink_connect_u' AND ("
        "  pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE') OR EXISTS ("
        "    SELECT 1 FROM pg_catalog.pg_roles r WHERE NOT r.rolsuper AND r.rolcanlogin"
        "    AND pg_catalog.has_function_privilege(r.oid, p.oid, 'EXECUTE'))) ORDER BY 1",
        [dblink_schema],
    ).fetchall():
        found.append(Finding("PGS008", signature, f"{signature} is executable by non-superusers"))
    for server, missing in conn.execute(
        "SELECT s.srvname, ARRAY(SELECT o FROM pg_catalog.unnest(ARRAY['connect_timeout', "
        "  'keepalives', 'tcp_user_timeout']) AS o WHERE NOT EXISTS ("
        "    SELECT 1 FROM pg_catalog.unnest(COALESCE(s.srvoptions, '{}')) AS opt "
        "    WHERE pg_catalog.split_part(opt, '=', 1) = o) ORDER BY o) "
        "FROM pg_catalog.pg_foreign_server s "
        "JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw "
        "WHERE w.fdwname = 'dblink_fdw' ORDER BY 1"
    ).fetchall():
        if missing:
            found.append(
                Finding("PGS006", f"server {server}", f"missing options: {', '.join(missing)}")
            )
    for server, role in conn.execute(
        "SELECT s.srvname, CASE WHEN m.umuser = 0 THEN 'PUBLIC' "
        "  ELSE pg_catalog.pg_get_userbyid(m.umuser) END "
        "FROM pg_catalog.pg_user_mapping m "
        "JOIN pg_catalog.pg_foreign_server s ON s.oid = m.umserver "
        "JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw "
        "LEFT JOIN pg_catalog.pg_roles r ON r.oid = m.umuser "
        "WHERE w.fdwname = 'dblink_fdw' AND NOT COALESCE(r.rolsuper, false) "
        "AND NOT EXISTS (SELECT 1 FROM pg_catalog.unnest(COALESCE(m.umoptions, '{}')) AS opt "
        "  WHERE pg_catalog.split_part(opt, '=', 1) = 'password') ORDER BY 1, 2"
    ).fetchall():
        found.append(
            Finding("PGS007", f"user mapping for {role} on server {server}", "no password option")
        )
    return found


def _password_findings(conn: psycopg.Connection[Any], schema: str) -> list[Finding]:
    # Only the function is reported; the matching text never leaves the server. The
    # toolkit's own functions hold password patterns (to mask them), not passwords.
    rows = conn.execute(
        "SELECT p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p "
        "JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace "
        "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', %s) "
        "AND (p.prosrc ~* $re$password\\s*=\\s*'?[[:alnum:]!#%%*+./:;<>?@^_~-]{3}$re$ "
        "  OR p.prosrc ~* $re$postgres(ql)?://[^:/@\\s]+:[^@/\\s]+@$re$) ORDER BY 1",
        [schema],
    ).fetchall()
    return [Finding("PGS009", r[0], "its source holds a password") for r in rows]


def _autonomous_findings(conn: psycopg.Connection[Any], schema: str, server: str) -> list[Finding]:
    if not server:
        row = conn.execute(
            "SELECT pg_catalog.array_agg(r.rolname::text ORDER BY r.rolname) "
            "FROM pg_catalog.pg_roles r WHERE NOT r.rolsuper AND r.rolname !~ '^pg_' "
            "AND pg_catalog.has_function_privilege(r.oid, "
            "  pg_catalog.to_regprocedure(%s), 'EXECUTE')",
            [f"{ident(schema)}.autonomous_exec(text,interval)"],
        ).fetchone()
        if row is None or not row[0]:
            return []
        return [
            Finding(
                "PGS011",
                "autonomous_server",
                "not set, and roles that are not superusers may call autonomous_exec: "
                + ", ".join(row[0]),
            )
        ]
    row = conn.execute(
        "SELECT w.fdwname::text, (SELECT pg_catalog.substr(o, 8) "
        "  FROM pg_catalog.unnest(COALESCE(s.srvoptions, '{}')) AS o WHERE o LIKE 'dbname=%%') "
        "FROM pg_catalog.pg_foreign_server s "
        "JOIN pg_catalog.pg_foreign_data_wrapper w ON w.oid = s.srvfdw WHERE s.srvname = %s",
        [server],
    ).fetchone()
    subject = f"server {server}"
    if row is None:
        return [Finding("PGS011", subject, "named by autonomous_server, does not exist")]
    if row[0] != "dblink_fdw":
        return [Finding("PGS011", subject, f"is a {row[0]} server, not a dblink_fdw one")]
    here = conn.execute("SELECT pg_catalog.current_database()::text").fetchone()
    if here is not None and row[1] is not None and row[1] != here[0]:
        return [Finding("PGS011", subject, f"leads to database {row[1]}, not {here[0]}")]
    return []


def _has_two_phase_tables(conn: psycopg.Connection[Any], schema: str) -> bool:
    """Whether the toolkit's two-phase tables exist (version 2 on) and this role may read them."""
    row = conn.execute(
        "SELECT pg_catalog.bool_and(c.oid IS NOT NULL "
        "  AND pg_catalog.has_table_privilege(c.oid, 'SELECT')) "
        "FROM pg_catalog.unnest(ARRAY['prepared_xacts', 'two_phase_targets', "
        "  'resolver_runs']) AS t(name) "
        "LEFT JOIN pg_catalog.pg_class c ON c.relname = t.name "
        "  AND c.relnamespace = (SELECT n.oid FROM pg_catalog.pg_namespace n "
        "    WHERE n.nspname = %s)",
        [schema],
    ).fetchone()
    return row is not None and row[0] is True


def _remote_state(
    conn: psycopg.Connection[Any],
    schema: str,
    dblink_schema: str,
    target: str,
    prefix: str,
    older_than: timedelta,
) -> tuple[int, int, timedelta | None]:
    """The remote's max_prepared_transactions, how many of this database's GIDs there are
    older than ``older_than``, and the age of the oldest of them."""
    link = "pgdblink_safe_doctor"
    remote_sql = sql.SQL(
        "SELECT pg_catalog.current_setting('max_prepared_transactions')::integer, "
        "pg_catalog.count(p.gid) FILTER (WHERE p.prepared < pg_catalog.now() - {}::interval), "
        "(pg_catalog.now() - pg_catalog.min(p.prepared))::text "
        "FROM (SELECT 1) AS one LEFT JOIN pg_catalog.pg_prepared_xacts AS p "
        "ON p.database = pg_catalog.current_database() "
        "AND pg_catalog.starts_with(p.gid, {})"
    ).format(sql.Literal(f"{older_than.total_seconds()} seconds"), sql.Literal(prefix))
    conn.execute(
        sql.SQL("SELECT {}.ensure_dblink_conn(%s, %s, max_attempts => 1)").format(
            sql.Identifier(schema)
        ),
        [link, target],
    )
    try:
        row = conn.execute(
            sql.SQL(
                "SELECT r.mpt, r.old, r.oldest::interval FROM {}.dblink(%s, %s) "
                "AS r(mpt integer, old bigint, oldest text)"
            ).format(sql.Identifier(dblink_schema)),
            [link, remote_sql.as_string(conn)],
        ).fetchone()
    finally:
        conn.execute(
            sql.SQL("SELECT {}.safe_dblink_disconnect(%s)").format(sql.Identifier(schema)),
            [link],
        )
    assert row is not None
    return int(row[0]), int(row[1]), row[2]


def _age(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"


def _two_phase_findings(
    conn: psycopg.Connection[Any], schema: str, dblink_schema: str, ages: TwoPhaseAges
) -> list[Finding]:
    found = []
    qualified = sql.Identifier(schema)
    setting = conn.execute("SELECT pg_catalog.current_setting('max_connections')").fetchone()
    max_connections = int(setting[0]) if setting else 0
    prefix_row = conn.execute(sql.SQL("SELECT {}._gid_prefix()").format(qualified)).fetchone()
    prefix = str(prefix_row[0]) if prefix_row else ""
    targets = conn.execute(
        sql.SQL(
            "SELECT t.target, {}._mask_target(t.target) FROM {}.two_phase_targets AS t ORDER BY 2"
        ).format(qualified, qualified)
    ).fetchall()
    for target, shown in targets:
        subject = f"target {shown}"
        try:
            mpt, old, oldest = _remote_state(
                conn, schema, dblink_schema, target, prefix, ages.prepared
            )
        except psycopg.Error as exc:
            state = f" (SQLSTATE {exc.sqlstate})" if exc.sqlstate else ""
            # The toolkit's error says which connection; its detail says why.
            why = [exc.diag.message_primary or str(exc).strip()]
            why += (exc.diag.message_detail or "").splitlines()[:1]
            message = scrub(": ".join(w for w in why if w), target)
            found.append(Finding("PGS016", subject, f"{message}{state}"))
            continue
        if mpt == 0:
            found.append(
                Finding(
                    "PGS012",
                    subject,
                    "max_prepared_transactions is 0 there: PREPARE TRANSACTION fails",
                )
            )
        elif mpt < max_connections:
            found.append(
                Finding(
                    "PGS012",
                    subject,
                    f"max_prepared_transactions is {mpt} there, below max_connections "
                    f"{max_connections} here",
                )
            )
        if old:
            found.append(
                Finding(
                    "PGS013",
                    subject,
                    f"{old} transaction(s) prepared by this database for more than "
                    f"{_age(ages.prepared)}, the oldest for {_age(oldest or ages.prepared)}",
                )
            )
    backlog = conn.execute(
        sql.SQL(
            "SELECT pg_catalog.count(*), pg_catalog.now() - pg_catalog.min(p.prepared_at) "
            "FROM {}.prepared_xacts AS p WHERE p.prepared_at < pg_catalog.now() - %s"
        ).format(qualified),
        [ages.commit_record],
    ).fetchone()
    if backlog is not None and backlog[0]:
        found.append(
            Finding(
                "PGS014",
                f"table {schema}.prepared_xacts",
                f"{backlog[0]} commit record(s) older than {_age(ages.commit_record)}, the "
                f"oldest {_age(backlog[1])} old",
            )
        )
    if targets:
        last = conn.execute(
            sql.SQL(
                "SELECT r.ran_at, pg_catalog.now() - r.ran_at FROM {}.resolver_runs AS r"
            ).format(qualified)
        ).fetchone()
        if last is None:
            found.append(Finding("PGS015", "resolve_prepared", "it has never run in this database"))
        elif last[1] > ages.resolver:
            found.append(
                Finding(
                    "PGS015",
                    "resolve_prepared",
                    f"it last ran {_age(last[1])} ago, at {last[0]:%Y-%m-%d %H:%M:%S%z}",
                )
            )
    return found


def diagnose(
    conn: psycopg.Connection[Any],
    schema: str = "dblink_safe",
    *,
    two_phase_ages: TwoPhaseAges = TwoPhaseAges(),
) -> list[Finding]:
    """Every finding for the database ``conn`` is connected to, most fundamental first."""
    found: list[Finding] = []
    dblink_schema = find_dblink_schema(conn)
    if dblink_schema is None:
        found.append(Finding("PGS001", "dblink", "the dblink extension is not installed"))
    state = status(conn, schema)
    if state.form == "extension" and state.installed_version is None:
        found.append(
            Finding(
                "PGS003",
                f"schema {schema}",
                f"extension version {state.extension_version} is unknown to this package, "
                f"which has {_extension.current_version()}",
            )
        )
    elif state.installed_version is None:
        found.append(Finding("PGS003", f"schema {schema}", "pgdblink_safe is not installed"))
    elif state.installed_version < latest_version():
        found.append(
            Finding(
                "PGS003",
                f"schema {schema}",
                f"installed version {state.installed_version}, this package has "
                f"{latest_version()}"
                + (f" (extension {state.extension_version})" if state.form == "extension" else ""),
            )
        )
    found += _settings_findings(conn)
    if dblink_schema is not None:
        found += _dblink_findings(conn, dblink_schema)
    found += _password_findings(conn, schema)
    settings = state.settings if state.installed_version is not None else None
    if settings is not None:
        found += _autonomous_findings(conn, schema, settings.autonomous_server)
    if settings is not None and dblink_schema is not None and _has_two_phase_tables(conn, schema):
        found += _two_phase_findings(conn, schema, dblink_schema, two_phase_ages)
    row = conn.execute(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_tle'"
    ).fetchone()
    if row is not None:
        found.append(Finding("PGS010", "pg_tle", f"pg_tle {row[0]} is installed"))
    return found
