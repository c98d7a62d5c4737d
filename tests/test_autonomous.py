"""Autonomous transactions: statements that commit on their own, through a connection to the
local server itself, whatever their caller does."""

import os
import threading
import time
from typing import Any

import psycopg
import pytest
from calls import Conn, error_of, foreign_server, scalar, timed, user_mapping
from psycopg import sql
from servers import LocalCluster, Server

import pgdblink_safe

AUDIT = "CREATE TABLE audit (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)"


def autonomous(conn: Conn, statement: str, timeout: str | None = None) -> str:
    """``autonomous_exec(statement, timeout)``."""
    return str(
        scalar(conn, "SELECT dblink_safe.autonomous_exec(%s, %s::interval)", statement, timeout)
    )


def autonomous_value(conn: Conn, query: str, row_type: str = "text") -> Any:
    """The first value of ``autonomous_query(query, NULL::row_type)``."""
    return scalar(
        conn,
        sql.SQL("SELECT * FROM dblink_safe.autonomous_query(%s, NULL::{})").format(
            sql.SQL(row_type)
        ),
        query,
    )


def notes(conn: Conn) -> list[str]:
    return [row[0] for row in conn.execute("SELECT note FROM audit ORDER BY id").fetchall()]


def log(note: str) -> str:
    return sql.SQL("INSERT INTO audit (note) VALUES ({})").format(sql.Literal(note)).as_string()


@pytest.fixture
def audit(installed: Conn) -> Conn:
    installed.execute(AUDIT)
    return installed


def autonomous_backends(local: Server, dbname: str, role: str | None = None) -> list[int]:
    """Backends of ``dbname`` that a dblink connection opened (application_name is dblink's
    default, the client's: psycopg's connections set none either, so tell by backend type and
    by not being a test connection: the toolkit's remote sessions run no query of the tests)."""
    with local.connect(dbname) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid() "
            "AND query LIKE 'SELECT pg_catalog.set_config(''search_path''%%' "
            "AND (%s::text IS NULL OR usename = %s)",
            [role, role],
        ).fetchall()
    return [row[0] for row in rows]


# --- it commits on its own ---------------------------------------------------------------


def test_a_log_row_survives_the_callers_rollback(audit: Conn) -> None:
    with pytest.raises(psycopg.errors.DivisionByZero), audit.transaction():
        assert autonomous(audit, log("kept")) == "INSERT 0 1"
        audit.execute(log("rolled back"))
        audit.execute("SELECT 1 / 0")
    assert notes(audit) == ["kept"]


def test_a_log_row_survives_an_exception_blocks_rollback(audit: Conn) -> None:
    audit.execute(
        "DO $$BEGIN "
        "  INSERT INTO audit (note) VALUES ('undone'); "
        "  PERFORM dblink_safe.autonomous_exec('INSERT INTO audit (note) VALUES (''logged'')'); "
        "  PERFORM 1 / 0; "
        "EXCEPTION WHEN division_by_zero THEN "
        "  PERFORM dblink_safe.autonomous_exec('INSERT INTO audit (note) VALUES (''handled'')'); "
        "END$$"
    )
    assert notes(audit) == ["logged", "handled"]


def test_a_trigger_logs_while_its_statement_fails(audit: Conn) -> None:
    audit.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, amount int CHECK (amount > 0));"
        "CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN "
        "  PERFORM dblink_safe.autonomous_exec(format("
        "    'INSERT INTO audit (note) VALUES (%L)', "
        "    'order ' || NEW.id || ' for ' || NEW.amount)); "
        "  RETURN NEW; END$$;"
        "CREATE TRIGGER log_order BEFORE INSERT ON orders "
        "FOR EACH ROW EXECUTE FUNCTION log_order()"
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        audit.execute("INSERT INTO orders VALUES (1, 10), (2, -5)")
    assert scalar(audit, "SELECT count(*) FROM orders") == 0
    assert notes(audit) == ["order 1 for 10", "order 2 for -5"]


def test_inside_a_procedure_that_commits_and_rolls_back(audit: Conn) -> None:
    audit.execute(
        "CREATE PROCEDURE batch() LANGUAGE plpgsql AS $$BEGIN "
        "  INSERT INTO audit (note) VALUES ('step 1'); COMMIT; "
        "  PERFORM dblink_safe.autonomous_exec('INSERT INTO audit (note) VALUES (''progress'')'); "
        "  INSERT INTO audit (note) VALUES ('step 2'); ROLLBACK; "
        "  PERFORM dblink_safe.autonomous_exec('INSERT INTO audit (note) VALUES (''done'')'); "
        "END$$"
    )
    audit.execute("CALL batch()")
    assert notes(audit) == ["step 1", "progress", "done"]


def test_a_read_only_caller_logs_in_a_transaction_of_its_own(audit: Conn) -> None:
    with audit.transaction():
        audit.execute("SET TRANSACTION READ ONLY")
        assert autonomous(audit, log("read-only caller")) == "INSERT 0 1"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), audit.transaction():
            audit.execute(log("refused locally"))
    assert notes(audit) == ["read-only caller"]


def test_a_query_returns_typed_rows_and_commits(audit: Conn) -> None:
    audit.execute("CREATE TYPE entry AS (id bigint, note text)")
    rows = audit.execute(
        "SELECT * FROM dblink_safe.autonomous_query("
        "'INSERT INTO audit (note) VALUES (''a''), (''b'') RETURNING id, note', NULL::entry)"
    ).fetchall()
    assert [row[1] for row in rows] == ["a", "b"]
    assert autonomous_value(audit, "SELECT count(*) FROM audit", "bigint") == 2
    err = error_of(
        audit.execute, "SELECT * FROM dblink_safe.autonomous_query('SELECT 1; SELECT 2', NULL::int)"
    )
    assert err.sqlstate == "0A000"


# --- one connection per session and role, healed -----------------------------------------


def test_a_thousand_calls_use_one_remote_backend(audit: Conn, local: Server, local_db: str) -> None:
    first = autonomous_value(audit, "SELECT pg_backend_pid()", "int")
    audit.execute(
        "DO $$BEGIN FOR i IN 1..1000 LOOP "
        "PERFORM dblink_safe.autonomous_exec(format('INSERT INTO audit (note) VALUES (%L)', i)); "
        "END LOOP; END$$"
    )
    assert autonomous_value(audit, "SELECT pg_backend_pid()", "int") == first
    assert scalar(audit, "SELECT count(*) FROM audit") == 1000
    assert autonomous_backends(local, local_db) == [first]
    listed = audit.execute("SELECT conn_name, reconnects FROM dblink_safe.connections()").fetchall()
    assert listed == [(f"autonomous:{scalar(audit, 'SELECT current_user')}", 0)]


def test_a_terminated_autonomous_backend_is_replaced(audit: Conn, local: Server) -> None:
    first = autonomous_value(audit, "SELECT pg_backend_pid()", "int")
    local.execute(sql.SQL("SELECT pg_terminate_backend({}, 5000)").format(sql.Literal(first)))
    assert autonomous(audit, log("after kill")) == "INSERT 0 1"
    assert autonomous_value(audit, "SELECT pg_backend_pid()", "int") != first
    assert notes(audit) == ["after kill"]


def test_it_runs_with_the_callers_search_path(audit: Conn) -> None:
    audit.execute("CREATE SCHEMA app; CREATE TABLE app.audit (note text)")
    audit.execute("SET search_path = app, public")
    assert autonomous(audit, "INSERT INTO audit (note) VALUES ('app')") == "INSERT 0 1"
    audit.execute("SET search_path = public")
    assert autonomous(audit, "INSERT INTO audit (note) VALUES ('public')") == "INSERT 0 1"
    assert scalar(audit, "SELECT array_agg(note) FROM app.audit") == ["app"]
    assert notes(audit) == ["public"]
    # Only for the autonomous transaction: the remote session keeps its own setting.
    assert autonomous_value(audit, "SELECT current_setting('search_path')") == "public"
    audit.execute("SET search_path = app, public")
    assert autonomous_value(audit, "SELECT current_setting('search_path')") == "app, public"


class superuser_role:
    """A LOGIN SUPERUSER role (the local socket needs no password for it), dropped after."""

    def __init__(self, local: Server, dbname: str, name: str) -> None:
        self.local, self.dbname, self.name = local, dbname, name

    def __enter__(self) -> str:
        self.local.execute(
            sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(sql.Identifier(self.name))
        )
        return self.name

    def __exit__(self, *exc: object) -> None:
        _drop_role(self.local, self.dbname, self.name)


def _drop_role(local: Server, dbname: str, name: str) -> None:
    role = sql.Identifier(name)
    with local.connect(dbname) as conn:
        for (pid,) in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE usename = %s", [name]
        ).fetchall():
            conn.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
        conn.execute(sql.SQL("DROP OWNED BY {}").format(role))
    local.execute(sql.SQL("DROP ROLE {}").format(role))


def test_set_role_and_security_definer_callers_get_connections_of_their_role(
    audit: Conn, local: Server, local_db: str
) -> None:
    short = f"auditor_{os.getpid()}"
    # A name of 63 bytes: its dblink name would not fit, so it is hashed.
    long = f"owner_{os.getpid()}_".ljust(63, "x")
    with superuser_role(local, local_db, short), superuser_role(local, local_db, long):
        me = scalar(audit, "SELECT current_user")
        remote_user = "SELECT current_user::text"
        audit.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(short)))
        assert autonomous_value(audit, remote_user) == short
        audit.execute("RESET ROLE")
        assert autonomous_value(audit, remote_user) == me
        audit.execute(
            sql.SQL(
                "CREATE FUNCTION whoami() RETURNS text LANGUAGE sql SECURITY DEFINER "
                "AS $$SELECT v FROM dblink_safe.autonomous_query("
                "'SELECT current_user::text', NULL::text) AS t(v)$$; "
                "ALTER FUNCTION whoami() OWNER TO {}"
            ).format(sql.Identifier(long))
        )
        assert scalar(audit, "SELECT whoami()") == long
        names = {row[0] for row in audit.execute("SELECT conn_name FROM dblink_safe.connections()")}
        assert f"autonomous:{short}" in names and f"autonomous:{me}" in names
        assert any(name.startswith("autonomous#") and len(name) == 43 for name in names)


# --- self-deadlock is an error -----------------------------------------------------------


def test_waiting_for_a_table_the_caller_locked_is_40P01_within_a_second(audit: Conn) -> None:
    with audit.transaction(force_rollback=True):
        audit.execute("LOCK TABLE audit IN ACCESS EXCLUSIVE MODE")
        took, _, err = timed(autonomous, audit, log("blocked"))
    assert err is not None and err.sqlstate == "40P01", err
    assert took < 1.0, took
    assert "relation public.audit" in str(err), err
    assert err.diag.message_hint and "caller" in err.diag.message_hint
    # The connection stays usable: the same backend, nothing committed.
    pid = autonomous_value(audit, "SELECT pg_backend_pid()", "int")
    assert autonomous(audit, log("after")) == "INSERT 0 1"
    assert autonomous_value(audit, "SELECT pg_backend_pid()", "int") == pid
    assert notes(audit) == ["after"]


def test_waiting_for_a_row_the_caller_updated_is_40P01_within_a_second(audit: Conn) -> None:
    audit.execute(log("row"))
    with audit.transaction(force_rollback=True):
        audit.execute("UPDATE audit SET note = 'mine' WHERE note = 'row'")
        took, _, err = timed(
            autonomous, audit, "UPDATE audit SET note = 'theirs' WHERE note = 'row'"
        )
    assert err is not None and err.sqlstate == "40P01", err
    assert took < 1.0, took
    assert "transaction" in str(err) and "audit" in str(err), err
    assert notes(audit) == ["row"]
    assert autonomous(audit, "UPDATE audit SET note = 'theirs'") == "UPDATE 1"


def test_a_lock_held_by_another_session_is_waited_for(
    audit: Conn, local: Server, local_db: str
) -> None:
    other = local.connect(local_db)
    try:
        other.execute("BEGIN; LOCK TABLE audit IN ACCESS EXCLUSIVE MODE")
        release = threading.Timer(0.5, lambda: other.execute("COMMIT"))
        release.start()
        took, status, err = timed(autonomous, audit, log("waited"))
        release.join()
    finally:
        other.close()
    assert err is None and status == "INSERT 0 1", err
    assert took >= 0.4, took
    assert notes(audit) == ["waited"]


# --- errors follow safe_dblink_exec's rules ----------------------------------------------


def test_bad_input_and_remote_errors(audit: Conn) -> None:
    assert error_of(autonomous, audit, None).sqlstate == "22004"  # type: ignore[arg-type]
    assert error_of(autonomous, audit, " ; ").sqlstate == "22023"
    assert error_of(autonomous, audit, log("x"), "0 s").sqlstate == "22023"
    err = error_of(autonomous, audit, "INSERT INTO nowhere VALUES (1)")
    assert err.sqlstate == "42P01"
    err = error_of(autonomous, audit, log("first") + "; SELECT 1 / 0")
    assert err.sqlstate == "22012"
    assert error_of(autonomous, audit, "SELECT 1, 2").sqlstate == "2F003"
    assert notes(audit) == []
    assert autonomous(audit, log("a") + "; " + log("b")) == "INSERT 0 1"
    assert autonomous(audit, log("c") + " -- a comment at the end") == "INSERT 0 1"
    assert notes(audit) == ["a", "b", "c"]
    # A transaction of sql's own left open is rolled back, not carried into the next call.
    err = error_of(autonomous, audit, "BEGIN; " + log("left open"))
    assert err.sqlstate == "0A000", err
    err = error_of(
        audit.execute,
        "SELECT * FROM dblink_safe.autonomous_query('BEGIN; SELECT 1', NULL::int)",
    )
    assert err.sqlstate is not None, err
    assert autonomous(audit, "BEGIN; " + log("d") + "; COMMIT") == "COMMIT"
    assert autonomous_value(audit, "SELECT now() = statement_timestamp()", "boolean") is True
    assert notes(audit) == ["a", "b", "c", "d"]


def test_a_timeout_cancels_and_the_next_call_reconnects(audit: Conn) -> None:
    took, _, err = timed(autonomous, audit, "SELECT pg_sleep(5)", "300 ms")
    assert err is not None and err.sqlstate == "57014", err
    assert took < 1.5, took
    assert autonomous(audit, log("next")) == "INSERT 0 1"
    assert notes(audit) == ["next"]


def test_a_connection_lost_while_running_is_08007(audit: Conn, local: Server) -> None:
    pid = autonomous_value(audit, "SELECT pg_backend_pid()", "int")
    killer = threading.Timer(
        0.3,
        lambda: local.execute(sql.SQL("SELECT pg_terminate_backend({})").format(sql.Literal(pid))),
    )
    killer.start()
    err = error_of(autonomous, audit, "SELECT pg_sleep(3); " + log("lost"))
    killer.join()
    assert err.sqlstate == "08007", err
    assert autonomous(audit, log("healed")) == "INSERT 0 1"
    assert notes(audit) == ["healed"]


def test_a_caller_cancelled_while_waiting_cancels_the_statement(audit: Conn) -> None:
    audit.execute("SET statement_timeout = '300ms'")
    took, _, err = timed(autonomous, audit, "SELECT pg_sleep(3); " + log("cancelled"))
    audit.execute("RESET statement_timeout")
    assert err is not None and err.sqlstate == "57014", err
    assert took < 1.5, took
    time.sleep(0.2)
    assert notes(audit) == []
    assert autonomous(audit, log("next")) == "INSERT 0 1"


# --- how it reaches its own database -----------------------------------------------------


def test_an_ordinary_role_goes_through_the_foreign_server_with_scram(
    conn: Conn, local: Server, local_db: str
) -> None:
    if not isinstance(local, LocalCluster):
        pytest.skip("needs a local server whose pg_hba.conf the tests can change")
    role = f"app_{os.getpid()}"
    secret = "s3cret-autonomous"
    pgdblink_safe.install(conn, pgdblink_safe.Settings(autonomous_server="self"))
    conn.execute(AUDIT)
    local.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(secret)
        )
    )
    hba = local.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n" + original)
    local.execute("SELECT pg_catalog.pg_reload_conf()")
    try:
        ident = sql.Identifier(role)
        pgdblink_safe.install(conn, grant=[role])
        conn.execute(sql.SQL("GRANT INSERT, SELECT ON audit TO {}").format(ident))
        foreign_server(conn, "self", local, local_db)
        conn.execute(sql.SQL("GRANT USAGE ON FOREIGN SERVER self TO {}").format(ident))
        # No mapping yet: the error says what to do, and nothing ran.
        app_dsn = local.conninfo(local_db, user=role, password=secret)
        with psycopg.connect(app_dsn, autocommit=True, connect_timeout=10) as app:
            err = error_of(autonomous, app, log("no mapping"))
            assert err.sqlstate is not None
            user_mapping(conn, "self", role, user=role, password=secret)
            with pytest.raises(psycopg.errors.DivisionByZero), app.transaction():
                assert autonomous(app, log("app")) == "INSERT 0 1"
                app.execute("SELECT 1 / 0")
            assert autonomous_value(app, "SELECT current_user::text") == role
            if local.version_num >= 160000:
                # The remote session's own word on how it logged in.
                assert autonomous_value(app, "SELECT system_user") == f"scram-sha-256:{role}"
            # A server that leads to another database is refused before anything runs.
            conn.execute("ALTER SERVER self OPTIONS (SET dbname 'postgres')")
            conn.execute(
                "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
                "WHERE usename = %s AND pid <> %s",
                [role, app.info.backend_pid],
            )
            err = error_of(autonomous, app, log("elsewhere"))
            assert err.sqlstate == "28000", err
            assert secret not in str(err) and secret not in (err.diag.message_detail or "")
        assert notes(conn) == ["app"]
    finally:
        hba.write_text(original)
        local.execute("SELECT pg_catalog.pg_reload_conf()")
        _drop_role(local, local_db, role)


def test_an_ordinary_role_without_the_setting_is_told_how_to_set_it_up(
    audit: Conn, local: Server, local_db: str
) -> None:
    role = f"plain_{os.getpid()}"
    local.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(role)))
    try:
        pgdblink_safe.install(audit, grant=[role])
        audit.execute(sql.SQL("GRANT INSERT ON audit TO {}").format(sql.Identifier(role)))
        audit.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(role)))
        err = error_of(autonomous, audit, log("refused"))
        audit.execute("RESET ROLE")
        assert err.diag.message_hint and "autonomous-server" in err.diag.message_hint, err
        assert notes(audit) == []
    finally:
        _drop_role(local, local_db, role)


def test_on_a_hot_standby_the_write_fails_with_the_servers_error(
    installed: Conn, local: Server, local_db: str
) -> None:
    if not isinstance(local, LocalCluster):
        pytest.skip(f"needs a local server this process can copy; {local.label} is not one")
    installed.execute(AUDIT)
    standby = LocalCluster(binaries=local.binaries, label="standby")
    try:
        standby.start_standby(local)
        with standby.connect(local_db) as conn:
            assert scalar(conn, "SELECT pg_is_in_recovery()") is True
            err = error_of(autonomous, conn, log("on standby"))
            assert err.sqlstate == "25006", err
            assert "read-only" in str(err)
            # Reads work, on the standby itself.
            assert autonomous_value(conn, "SELECT pg_is_in_recovery()", "boolean") is True
    finally:
        standby.stop()
