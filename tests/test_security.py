"""Safe to install, no secrets leaked, an ordinary role with password auth, hostile search_path."""

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from calls import Conn, ensure, error_of, exec_, foreign_server, rows, scalar, user_mapping
from psycopg import sql
from servers import LocalCluster, Server

import pgdblink_safe
from pgdblink_safe.errors import InstallError
from pgdblink_safe.generator import latest_version, render_script

#: Appears in every connection string of these tests; must never come back out.
SECRET = "Sw0rdf1sh-pgdblink-7d1c"
_counter = iter(range(1_000_000))


def toolkit_functions(conn: Conn, schema: str = "dblink_safe") -> list[tuple[Any, ...]]:
    return conn.execute(
        "SELECT p.oid::regprocedure::text, p.proconfig, p.prosecdef, "
        "pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE') "
        "FROM pg_catalog.pg_proc p WHERE p.pronamespace = %s::regnamespace ORDER BY 1",
        [sql.Identifier(schema).as_string(conn)],
    ).fetchall()


# --- safe to install -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema", "dblink_schema"),
    [("dblink_safe", "public"), ('Ops "Tools"', "extensions")],
)
def test_rendered_sql_has_no_pgspot_findings(
    tmp_path: Path, schema: str, dblink_schema: str
) -> None:
    script = tmp_path / "install.sql"
    script.write_text(
        render_script(pgdblink_safe.Settings(schema=schema, dblink_schema=dblink_schema))
    )
    pgspot = shutil.which("pgspot") or str(Path(sys.executable).with_name("pgspot"))
    # The two entry points that pass the caller's search_path on (CALLERS_SEARCH_PATH), as
    # pgspot names them: the schema unquoted.
    callers = [
        f"{schema}.autonomous_exec(sql text,timeout interval)",
        f"{schema}.autonomous_query(sql text,row_type anyelement,timeout interval)",
    ]
    allowed = [arg for caller in callers for arg in ("--proc-without-search-path", caller)]
    result = subprocess.run(
        [pgspot, *allowed, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Errors: 0 Warnings: 0 Unknown: 0" in result.stdout


def test_plpgsql_check_finds_nothing(installed: Conn) -> None:
    if (
        scalar(
            installed,
            "SELECT count(*) FROM pg_catalog.pg_available_extensions WHERE name = 'plpgsql_check'",
        )
        == 0
    ):
        if os.environ.get("PGDBLINK_SAFE_REQUIRE_PLPGSQL_CHECK"):
            pytest.fail("PGDBLINK_SAFE_REQUIRE_PLPGSQL_CHECK is set but plpgsql_check is missing")
        pytest.skip(
            "plpgsql_check is not available to this server "
            "(Debian package postgresql-15-plpgsql-check; CI installs it for PostgreSQL 15)"
        )
    installed.execute("CREATE EXTENSION plpgsql_check")
    checked = scalar(
        installed,
        "SELECT count(*) FROM pg_catalog.pg_proc p "
        "WHERE p.pronamespace = 'dblink_safe'::regnamespace "
        "AND p.prolang = (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'plpgsql')",
    )
    # The session's commit-hook table must exist for the statements that use it to be
    # checked; trigger functions are checked against a table shaped like it.
    installed.execute("SELECT dblink_safe._hook('tx:probe', false)")
    installed.execute("CREATE TEMP TABLE hook_shape (link text NOT NULL, remote_tx boolean)")
    findings = installed.execute(
        "SELECT p.oid::regprocedure::text, c.lineno, c.level, c.message "
        "FROM pg_catalog.pg_proc p "
        "CROSS JOIN LATERAL plpgsql_check_function_tb(p.oid, "
        "    relid => CASE WHEN p.prorettype = 'pg_catalog.trigger'::regtype "
        "                  THEN 'pg_temp.hook_shape'::regclass ELSE 0 END, "
        "    anyelememttype => 'pg_catalog.pg_class'::regtype, all_warnings => true) AS c "
        "WHERE p.pronamespace = 'dblink_safe'::regnamespace "
        "AND p.prolang = (SELECT oid FROM pg_catalog.pg_language WHERE lanname = 'plpgsql')"
    ).fetchall()
    assert checked >= 15
    assert findings == []


#: The entry points that pass the caller's search_path on: a SET clause would hide it, so they
#: have none, and name everything they call with its schema.
CALLERS_SEARCH_PATH = {
    "dblink_safe.autonomous_exec(text,interval)",
    "dblink_safe.autonomous_query(text,anyelement,interval)",
}


def test_every_function_pins_search_path_is_invoker_and_closed_to_public(
    installed: Conn,
) -> None:
    functions = toolkit_functions(installed)
    assert len(functions) >= 20
    for signature, config, security_definer, public_execute in functions:
        if signature in CALLERS_SEARCH_PATH:
            assert config is None, signature
        else:
            assert config == ["search_path=pg_catalog, pg_temp"], signature
        assert security_definer is False, signature
        assert public_execute is False, signature


def test_grant_gives_a_role_the_wrappers_and_survives_migrations(
    conn: Conn, local: Server, local_db: str, target: str
) -> None:
    with ordinary_role(local, local_db) as role:
        # Version 1 first: migration 0002 drops and recreates functions, which loses grants
        # unless the installer carries them over.
        pgdblink_safe.install(conn, grant=[role], to_version=1)
        assert scalar(conn, "SELECT max(version) FROM dblink_safe.installed_migrations") == 1
        pgdblink_safe.install(conn)
        assert scalar(conn, "SELECT max(version) FROM dblink_safe.installed_migrations") == (
            latest_version()
        )
        rights = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p "
            "WHERE p.pronamespace = 'dblink_safe'::regnamespace "
            "AND NOT pg_catalog.has_function_privilege(%s, p.oid, 'EXECUTE')",
            [role],
        ).fetchall()
        assert rights == []
        # Superuser-only dblink rule: a connection string without a password is refused to
        # an ordinary role (2F003), which proves the call really ran as that role.
        with local.connect(local_db, user=role) as app:
            err = error_of(ensure, app, target)
            assert err.sqlstate == "2F003"
            assert scalar(app, "SELECT count(*) FROM dblink_safe.connections()") == 0


def test_grant_of_an_unknown_role_is_refused_before_anything_changes(conn: Conn) -> None:
    with pytest.raises(InstallError, match="'no_such_role_x' do not exist"):
        pgdblink_safe.install(conn, grant=["no_such_role_x"])
    assert scalar(conn, "SELECT to_regnamespace('dblink_safe') IS NULL") is True


def test_installed_schema_others_may_create_in_is_refused(
    installed: Conn, local: Server, local_db: str
) -> None:
    with ordinary_role(local, local_db) as role:
        installed.execute(
            sql.SQL("GRANT CREATE ON SCHEMA dblink_safe TO {}").format(sql.Identifier(role))
        )
        with pytest.raises(InstallError, match=f"{role} may CREATE in schema 'dblink_safe'"):
            pgdblink_safe.install(installed)
        installed.execute(
            sql.SQL("REVOKE CREATE ON SCHEMA dblink_safe FROM {}").format(sql.Identifier(role))
        )
        assert pgdblink_safe.install(installed) == []


def test_installed_schema_owned_by_another_role_is_refused(
    installed: Conn, local: Server, local_db: str
) -> None:
    with ordinary_role(local, local_db) as owner, ordinary_role(local, local_db) as installer:
        installed.execute(
            sql.SQL("ALTER SCHEMA dblink_safe OWNER TO {}").format(sql.Identifier(owner))
        )
        try:
            installed.execute(
                sql.SQL("GRANT USAGE ON SCHEMA dblink_safe TO {}").format(sql.Identifier(installer))
            )
            installed.execute(
                sql.SQL("GRANT SELECT ON dblink_safe.installed_migrations TO {}").format(
                    sql.Identifier(installer)
                )
            )
            with (
                local.connect(local_db, user=installer) as other,
                pytest.raises(InstallError, match=f"owned by '{owner}', not by the installing"),
            ):
                pgdblink_safe.install(other)
        finally:
            installed.execute("ALTER SCHEMA dblink_safe OWNER TO postgres")


# --- an ordinary role, a foreign server and password authentication ------------------


@dataclass
class PasswordRemote:
    role: str
    password: str
    server_name: str


@pytest.fixture
def password_remote(installed: Conn, remote: Server, remote_db: str) -> Iterator[PasswordRemote]:
    """A remote role that must give a password, and a dblink foreign server for it."""
    if not isinstance(remote, LocalCluster):
        pytest.skip("needs a remote server whose pg_hba.conf the tests can change")
    role = f"rapp_{os.getpid()}_{next(_counter)}"
    remote.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(SECRET)
        )
    )
    remote.execute(
        sql.SQL("GRANT SELECT, INSERT ON items TO {}").format(sql.Identifier(role)), remote_db
    )
    hba = remote.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + original)
    remote.execute("SELECT pg_catalog.pg_reload_conf()")
    foreign_server(installed, "remote_srv", remote, remote_db, connect_timeout="5")
    try:
        yield PasswordRemote(role, SECRET, "remote_srv")
    finally:
        hba.write_text(original)
        remote.execute("SELECT pg_catalog.pg_reload_conf()")
        remote.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)), remote_db)
        for pid in remote.backend_pids(remote_db):
            remote.execute(sql.SQL("SELECT pg_terminate_backend({})").format(sql.Literal(pid)))
        remote.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


class ordinary_role:
    """A LOGIN role without any attribute, dropped with everything it was given."""

    def __init__(self, local: Server, dbname: str) -> None:
        self.local, self.dbname = local, dbname
        self.name = f"app_{os.getpid()}_{next(_counter)}"

    def __enter__(self) -> str:
        self.local.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(self.name)))
        return self.name

    def __exit__(self, *exc: object) -> None:
        role = sql.Identifier(self.name)
        with self.local.connect(self.dbname) as conn:
            for (pid,) in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE usename = %s", [self.name]
            ).fetchall():
                conn.execute("SELECT pg_terminate_backend(%s)", [pid])
            for (server,) in conn.execute(
                "SELECT srvname FROM pg_catalog.pg_user_mappings WHERE usename = %s", [self.name]
            ).fetchall():
                conn.execute(
                    sql.SQL("DROP USER MAPPING FOR {} SERVER {}").format(
                        role, sql.Identifier(server)
                    )
                )
            conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
        self.local.execute(sql.SQL("DROP ROLE {}").format(role))


def test_ordinary_role_through_a_foreign_server_with_password_auth(
    installed: Conn,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    password_remote: PasswordRemote,
) -> None:
    with ordinary_role(local, local_db) as role:
        pgdblink_safe.install(installed, grant=[role])
        ident = sql.Identifier(role)
        installed.execute(sql.SQL("GRANT USAGE ON FOREIGN SERVER remote_srv TO {}").format(ident))
        user_mapping(installed, "remote_srv", role, user=password_remote.role, password=SECRET)
        with local.connect(local_db, user=role) as app:
            assert scalar(app, "SELECT current_user") == role
            assert ensure(app, "remote_srv") == "connected"
            status = exec_(app, "INSERT INTO items (note) VALUES ('app')")
            assert status == "INSERT 0 1"
            # Healing works for the ordinary role too: the remote backend is killed.
            pids = remote.backend_pids(remote_db)
            assert pids
            remote.terminate_backends(remote_db)
            assert exec_(app, "INSERT INTO items (note) VALUES ('app')") == "INSERT 0 1"
            listed = app.execute(
                "SELECT conn_name, target, reconnects FROM dblink_safe.connections()"
            ).fetchall()
            assert listed == [("r", "remote_srv", 1)]
            notes = app.execute(
                "SELECT note FROM dblink_safe.safe_dblink_query('r', "
                "'SELECT note FROM items ORDER BY id', NULL::text) AS t(note)"
            ).fetchall()
            assert notes == [("app",), ("app",)]
            fanned = app.execute(
                "SELECT conn_name, sqlstate, status FROM dblink_safe.fanout_exec("
                "ARRAY['r'], 'INSERT INTO items (note) VALUES (''fan'')')"
            ).fetchall()
            assert fanned == [("r", None, "INSERT 0 1")]
            counted = app.execute(
                "SELECT conn_name, value FROM dblink_safe.fanout("
                "ARRAY['r'], 'SELECT count(*) FROM items', NULL::bigint)"
            ).fetchall()
            assert counted == [("r", 3)]
            # A node that cannot be healed says why, without the password.
            installed.execute(
                sql.SQL(
                    "ALTER USER MAPPING FOR {} SERVER remote_srv OPTIONS (SET password {})"
                ).format(ident, sql.Literal(f"{SECRET}-wrong"))
            )
            remote.terminate_backends(remote_db)
            failed = app.execute(
                "SELECT sqlstate, message FROM dblink_safe.fanout_exec("
                "ARRAY['r'], 'INSERT INTO items (note) VALUES (''fan'')')"
            ).fetchall()
            assert len(failed) == 1 and failed[0][0] is not None
            assert SECRET not in failed[0][1]
        assert int(remote.execute("SELECT count(*) FROM items", remote_db)[0][0]) == 3
        installed.execute(sql.SQL("DROP USER MAPPING FOR {} SERVER remote_srv").format(ident))


def test_wrong_password_never_shows_the_password(
    installed: Conn, local: Server, password_remote: PasswordRemote, remote: Server
) -> None:
    start = local.log_position()
    remote_start = remote.log_position()
    notices: list[str] = []
    installed.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    wrong = f"{SECRET}-wrong"
    user_mapping(installed, "remote_srv", user=password_remote.role, password=wrong)
    errors = [
        error_of(ensure, installed, "remote_srv"),
        error_of(
            ensure,
            installed,
            remote.conninfo("postgres", user=password_remote.role, password=wrong),
            "s",
        ),
    ]
    for err in errors:
        # dblink reports every failed connect as 08001; the reason is in DETAIL.
        assert err.sqlstate == "08001", err
        assert "password authentication failed" in (err.diag.message_detail or ""), err
        assert_no_secret(err, SECRET)
    assert SECRET not in "".join(notices)
    assert SECRET not in local.log_since(start)
    assert SECRET not in remote.log_since(remote_start)
    assert scalar(installed, "SELECT public.dblink_get_connections()") is None


def assert_no_secret(err: psycopg.Error, secret: str) -> None:
    diag = err.diag
    for part in (
        str(err),
        diag.message_primary,
        diag.message_detail,
        diag.message_hint,
        diag.context,
        diag.internal_query,
    ):
        assert secret not in (part or ""), part


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unreachable host", {"08001", "08006"}),
        # Parsed by libpq's rules before anything connects: 22023, a fixed message.
        ("bad option", {"22023"}),
        ("malformed", {"22023"}),
        ("unknown database", {"08001", "3D000"}),
    ],
)
def test_connection_errors_never_show_the_password(
    installed: Conn, local: Server, remote: Server, case: str, expected: set[str]
) -> None:
    good = remote.conninfo("postgres", password=SECRET)
    target = {
        "unreachable host": remote.conninfo("postgres", port="1", password=SECRET),
        "bad option": good + " no_such_option=1",
        "malformed": f"host={remote.host} password='{SECRET} port=",
        "unknown database": remote.conninfo("no_such_db_x", password=SECRET),
    }[case]
    start = local.log_position()
    notices: list[str] = []
    installed.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
    err = error_of(ensure, installed, target, max_attempts=1)
    assert err.sqlstate in expected, (err.sqlstate, str(err))
    assert_no_secret(err, SECRET)
    # Fragments too: a masked message must not leak the password's first half either.
    assert SECRET[:8] not in str(err) + (err.diag.message_detail or "")
    assert SECRET not in "".join(notices)
    assert SECRET not in local.log_since(start)
    assert scalar(installed, "SELECT public.dblink_get_connections()") is None
    assert scalar(installed, "SELECT count(*) FROM dblink_safe.connections()") == 0


def test_remote_errors_and_listing_never_show_the_password(
    installed: Conn, local: Server, remote: Server, remote_db: str
) -> None:
    start = local.log_position()
    target = remote.conninfo(remote_db, password=SECRET)
    assert ensure(installed, target) == "connected"
    for statement in ("SELECT 1/0", "INSERT INTO no_such_table VALUES (1)", "not sql"):
        err = error_of(exec_, installed, statement)
        assert err.sqlstate in {"22012", "42P01", "42601"}
        assert_no_secret(err, SECRET)
    err = error_of(exec_, installed, "SELECT pg_sleep(2)", timeout="50 milliseconds")
    assert err.sqlstate == "57014"
    assert_no_secret(err, SECRET)
    listing = installed.execute("SELECT * FROM dblink_safe.connections()").fetchall()
    assert listing and SECRET not in repr(listing)
    assert "********" in repr(listing)
    assert SECRET not in local.log_since(start)


def test_cli_errors_never_show_the_password(local: Server, local_db: str) -> None:
    dsn = local.conninfo(local_db, port="1", password=SECRET)
    result = subprocess.run(
        [sys.executable, "-m", "pgdblink_safe", "status", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


# --- a hostile search_path ---------------------------------------------------------------

_TRAPS = [
    ("dblink_exec", "text, text", "text"),
    ("dblink_is_busy", "text", "integer"),
    ("dblink_error_message", "text", "text"),
    ("dblink_get_connections", "", "text[]"),
    ("dblink_connect", "text, text", "text"),
    ("dblink_disconnect", "text", "text"),
    ("current_setting", "text, boolean", "text"),
    ("set_config", "text, text, boolean", "text"),
    ("split_part", "text, text, integer", "text"),
    ("encode", "bytea, text", "text"),
    ("convert_to", "text, name", "bytea"),
    ("clock_timestamp", "", "timestamptz"),
    ("btrim", "text", "text"),
    ("md5", "text", "text"),
    ("jsonb_build_object", "text, text", "jsonb"),
]


def test_hostile_search_path_captures_nothing(
    installed: Conn, target: str, remote: Server, remote_db: str
) -> None:
    installed.execute("CREATE SCHEMA evil")
    for name, args, returns in _TRAPS:
        body = sql.SQL("BEGIN RAISE EXCEPTION {}; END").format(
            sql.Literal(f"captured by evil.{name}")
        )
        installed.execute(
            sql.SQL("CREATE FUNCTION {}({}) RETURNS {} LANGUAGE plpgsql AS {}").format(
                sql.Identifier("evil", name),
                sql.SQL(args),
                sql.SQL(returns),
                sql.Literal(body.as_string(installed)),
            )
        )
    for op, left in (("=", "text"), ("<>", "text"), ("||", "text"), ("-", "double precision")):
        trap = sql.Identifier("evil", f"trap_{ord(op[0])}_{len(op)}")
        installed.execute(
            sql.SQL(
                "CREATE FUNCTION {}(a {}, b {}) RETURNS boolean LANGUAGE plpgsql "
                "AS $$BEGIN RAISE EXCEPTION 'captured by evil operator'; END$$"
            ).format(trap, sql.SQL(left), sql.SQL(left))
        )
        installed.execute(
            sql.SQL("CREATE OPERATOR evil.{} (LEFTARG = {}, RIGHTARG = {}, FUNCTION = {})").format(
                sql.SQL(op), sql.SQL(left), sql.SQL(left), trap
            )
        )
    installed.execute("SET search_path = evil, public, pg_catalog")
    # The traps work: an unqualified call in this session is captured.
    with pytest.raises(psycopg.errors.RaiseException, match=r"captured by evil\.dblink_exec"):
        installed.execute("SELECT dblink_exec('r', 'SELECT 1')")
    with pytest.raises(psycopg.errors.RaiseException, match="captured by evil operator"):
        installed.execute("SELECT 'a'::text = 'a'::text")

    calls = [
        ("SELECT dblink_safe.ensure_dblink_conn('r', %s)", (target,)),
        ("SELECT dblink_safe.safe_dblink_exec('r', 'INSERT INTO items (note) VALUES (''e'')')", ()),
        ("SELECT dblink_safe.safe_dblink_exec('r', 'INSERT INTO items (note) VALUES (''e'')')", ()),
        (
            "SELECT dblink_safe.safe_dblink_exec('r', 'INSERT INTO items (note) VALUES (''e'')', "
            "resolve => true, timeout => interval '5 seconds')",
            (),
        ),
        ("SELECT count(*) FROM dblink_safe.safe_dblink_query('r', 'SELECT 1', NULL::int)", ()),
        ("SELECT count(*) FROM dblink_safe.connections()", ()),
    ]
    for query, params in calls:
        installed.execute(query, params or None)
    remote.terminate_backends(remote_db)
    installed.execute(
        "SELECT dblink_safe.safe_dblink_exec('r', 'INSERT INTO items (note) VALUES (''e'')')"
    )
    assert scalar(installed, "SELECT dblink_safe.safe_dblink_disconnect_all()") == 1
    assert rows(remote, remote_db, "e") == 4


# --- bad input ---------------------------------------------------------------------------

_BAD_INPUT = [
    ("SELECT dblink_safe.ensure_dblink_conn(NULL, %(t)s)", "22004", "conn_name"),
    ("SELECT dblink_safe.ensure_dblink_conn('', %(t)s)", "22023", "conn_name"),
    ("SELECT dblink_safe.ensure_dblink_conn('  ', %(t)s)", "22023", "conn_name"),
    ("SELECT dblink_safe.ensure_dblink_conn(repeat('é', 32), %(t)s)", "22023", "conn_name"),
    ("SELECT dblink_safe.ensure_dblink_conn('r', NULL)", "22004", "target"),
    ("SELECT dblink_safe.ensure_dblink_conn('r', ' ')", "22023", "target"),
    (
        "SELECT dblink_safe.ensure_dblink_conn('r', %(t)s, max_lifetime => interval '-1 s')",
        "22023",
        "max_lifetime",
    ),
    (
        "SELECT dblink_safe.ensure_dblink_conn('r', %(t)s, max_idle => interval '400 days')",
        "22023",
        "max_idle",
    ),
    (
        "SELECT dblink_safe.ensure_dblink_conn('r', %(t)s, max_attempts => 0)",
        "22023",
        "max_attempts",
    ),
    (
        "SELECT dblink_safe.ensure_dblink_conn('r', %(t)s, retry_budget => interval '2 hours')",
        "22023",
        "retry_budget",
    ),
    ("SELECT dblink_safe.safe_dblink_exec(NULL, 'SELECT 1')", "22004", "conn_name"),
    ("SELECT dblink_safe.safe_dblink_exec('r', NULL)", "22004", "sql"),
    (
        "SELECT dblink_safe.safe_dblink_exec('r', 'SELECT 1', idempotent => NULL)",
        "22004",
        "idempotent",
    ),
    ("SELECT dblink_safe.safe_dblink_exec('r', 'SELECT 1', resolve => NULL)", "22004", "resolve"),
    (
        "SELECT dblink_safe.safe_dblink_exec('r', 'SELECT 1', timeout => interval '0')",
        "22023",
        "timeout",
    ),
    (
        "SELECT dblink_safe.safe_dblink_exec('r', 'SELECT 1', timeout => interval '-5 s')",
        "22023",
        "timeout",
    ),
    (
        "SELECT dblink_safe.safe_dblink_exec('r', 'SELECT 1', timeout => interval '1000 years')",
        "22023",
        "timeout",
    ),
    (
        "SELECT dblink_safe.safe_dblink_exec('r', 'SELECT 1', max_attempts => -1)",
        "22023",
        "max_attempts",
    ),
    (
        "SELECT dblink_safe.safe_dblink_exec('r', 'SELECT 1', max_attempts => 1000000)",
        "22023",
        "max_attempts",
    ),
    (
        "SELECT dblink_safe.safe_dblink_exec('r', 'SELECT 1', "
        "validation_window => interval '-1 s')",
        "22023",
        "validation_window",
    ),
    (
        "SELECT dblink_safe.safe_dblink_exec('r', 'SELECT 1', retry_budget => interval '-1 s')",
        "22023",
        "retry_budget",
    ),
    ("SELECT * FROM dblink_safe.safe_dblink_query('r', NULL, NULL::int)", "22004", "sql"),
    ("SELECT dblink_safe.safe_dblink_exec('r', '')", "22023", "sql"),
    ("SELECT dblink_safe.safe_dblink_exec('r', E' ;\n')", "22023", "sql"),
    ("SELECT dblink_safe.safe_dblink_exec('r', '-- only a comment')", "22023", "neither"),
    ("SELECT * FROM dblink_safe.safe_dblink_query('r', ' ', NULL::int)", "22023", "sql"),
    (
        "SELECT * FROM dblink_safe.safe_dblink_query('r', 'SELECT 1', NULL::int, "
        "timeout => interval '-1 s')",
        "22023",
        "timeout",
    ),
    (
        "SELECT * FROM dblink_safe.safe_dblink_query(NULL, 'SELECT 1', NULL::int)",
        "22004",
        "conn_name",
    ),
    ("SELECT dblink_safe.safe_dblink_disconnect(NULL)", "22004", "conn_name"),
    ("SELECT dblink_safe.safe_dblink_exec('never_opened', 'SELECT 1')", "08003", "never_opened"),
]


@pytest.mark.parametrize(("query", "sqlstate", "named"), _BAD_INPUT)
def test_bad_input_is_answered_and_changes_nothing(
    installed: Conn,
    target: str,
    remote: Server,
    remote_db: str,
    query: str,
    sqlstate: str,
    named: str,
) -> None:
    # A healthy connection under the same name: a rejected call must leave it as it was.
    assert ensure(installed, target) == "connected"
    before = installed.execute(
        "SELECT conn_name, uses, reconnects, opened_at FROM dblink_safe.connections()"
    ).fetchall()
    sessions = len(remote.backend_pids(remote_db))
    with pytest.raises(psycopg.Error) as info:
        installed.execute(query, {"t": target} if "%(t)s" in query else None)
    err = info.value
    assert err.sqlstate == sqlstate, (query, err.sqlstate, str(err))
    assert named in (err.diag.message_primary or ""), str(err)
    after = installed.execute(
        "SELECT conn_name, uses, reconnects, opened_at FROM dblink_safe.connections()"
    ).fetchall()
    assert after == before
    assert scalar(installed, "SELECT public.dblink_get_connections()") == ["r"]
    assert len(remote.backend_pids(remote_db)) == sessions
