"""`pgdblink-safe doctor`: what in a database makes dblink connections break, hang or leak."""

import textwrap
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from pgdblink_safe import _extension
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
}


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


def diagnose(conn: psycopg.Connection[Any], schema: str = "dblink_safe") -> list[Finding]:
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
    row = conn.execute(
        "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pg_tle'"
    ).fetchone()
    if row is not None:
        found.append(Finding("PGS010", "pg_tle", f"pg_tle {row[0]} is installed"))
    return found
