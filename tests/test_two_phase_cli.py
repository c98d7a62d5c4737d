"""`pgdblink-safe resolve` and the two-phase doctor findings, on real prepared transactions."""

import configparser
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pglast
import psycopg
import pytest
from psycopg import sql
from servers import LocalCluster, Server, wait_for

import pgdblink_safe
from pgdblink_safe import doctor

Conn = psycopg.Connection[Any]
SECRET = "Sekr3t-two-phase"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgdblink_safe", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def prepared_gids(remote: Server, remote_db: str) -> list[str]:
    rows = remote.execute(
        "SELECT gid FROM pg_prepared_xacts WHERE database = current_database() ORDER BY gid",
        dbname=remote_db,
    )
    return [row[0] for row in rows]


def remote_notes(remote: Server, remote_db: str) -> list[str]:
    return [row[0] for row in remote.execute("SELECT note FROM items ORDER BY id", remote_db)]


@pytest.fixture
def prepared(remote: Server, remote_db: str) -> Iterator[None]:
    """Rolls back what a test left prepared in ``remote_db``, which DROP DATABASE refuses."""
    yield
    for gid in prepared_gids(remote, remote_db):
        remote.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)), remote_db)


def two_phase_session(local: Server, local_db: str, target: str, note: str) -> Conn:
    """A session whose transaction prepared a remote INSERT (phase 1), still open."""
    session = local.connect(local_db, autocommit=False)
    session.execute(
        "SELECT dblink_safe.ensure_dblink_conn('c', %s, scope => 'transaction', "
        "remote_tx => true, two_phase => true)",
        [target],
    )
    session.execute(
        "SELECT dblink_safe.safe_dblink_exec('c', %s)",
        [f"INSERT INTO items (note) VALUES ('{note}')"],
    )
    session.execute("SET CONSTRAINTS ALL IMMEDIATE")
    return session


def orphan(installed: Conn, local: Server, local_db: str, target: str, note: str = "x") -> None:
    """A remote transaction prepared by a local one whose backend was then terminated."""
    session = two_phase_session(local, local_db, target, note)
    pid = session.info.backend_pid
    installed.execute("SELECT pg_terminate_backend(%s)", [pid])
    local.wait_backends_gone([pid], local_db)
    session.close()


def committed_without_phase_two(local: Server, local_db: str, target: str, note: str) -> None:
    """A local transaction committed with its commit record; the session then closed before
    a next call finished the remote transaction."""
    session = two_phase_session(local, local_db, target, note)
    session.commit()
    session.close()


def resolve_json(dsn: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = run("resolve", "--dsn", dsn, "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


# -- resolve -------------------------------------------------------------------------------


def test_an_orphan_is_rolled_back_after_a_dry_run(
    installed: Conn,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    target: str,
    prepared: None,
) -> None:
    orphan(installed, local, local_db, target)
    [gid] = prepared_gids(remote, remote_db)
    prefix = installed.execute("SELECT dblink_safe._gid_prefix()").fetchone()
    assert prefix is not None and gid.startswith(prefix[0])
    dsn = local.client_conninfo(local_db)

    young = run("resolve", "--dsn", dsn, "--min-age", "1 hour")
    assert young.returncode == 1, young.stderr
    assert re.search(rf"^too young +.* {re.escape(gid)}$", young.stdout, re.M), young.stdout

    dry = run("resolve", "--dsn", dsn, "--min-age", "0", "--dry-run")
    assert dry.returncode == 1, dry.stderr
    assert re.search(rf"^would roll back +.* {re.escape(gid)}$", dry.stdout, re.M), dry.stdout
    assert dry.stdout.splitlines()[-1] == "dry run, nothing changed: finished 0, still in doubt 1"
    assert f"resolving prepared transactions of database {local_db}" in dry.stderr
    assert prepared_gids(remote, remote_db) == [gid]
    # The dry run left the record of the last real run (the one that found it too young).
    assert installed.execute(
        "SELECT finished, in_doubt FROM dblink_safe.resolver_runs"
    ).fetchone() == (0, 1)

    done = run("resolve", "--dsn", dsn, "--min-age", "0")
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(rf"^rolled back +.* {re.escape(gid)}$", done.stdout, re.M), done.stdout
    assert done.stdout.splitlines()[-1] == "finished 1, still in doubt 0"
    assert prepared_gids(remote, remote_db) == []
    assert remote_notes(remote, remote_db) == []
    assert installed.execute(
        "SELECT finished, in_doubt FROM dblink_safe.resolver_runs"
    ).fetchone() == (1, 0)

    again = run("resolve", "--dsn", dsn, "--min-age", "0")
    assert again.returncode == 0
    assert again.stdout.strip() == "finished 0, still in doubt 0"


def test_json_shape_and_a_committed_transaction(
    installed: Conn,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    target: str,
    prepared: None,
) -> None:
    committed_without_phase_two(local, local_db, target, "kept")
    [gid] = prepared_gids(remote, remote_db)
    dsn = local.client_conninfo(local_db)

    code, dry = resolve_json(dsn, "--min-age", "0", "--dry-run")
    assert code == 1
    assert set(dry) == {"database", "schema", "min_age", "dry_run", "rows", "summary"}
    assert (dry["database"], dry["schema"], dry["min_age"], dry["dry_run"]) == (
        local_db,
        "dblink_safe",
        "0 seconds",
        True,
    )
    [row] = dry["rows"]
    assert set(row) == {"target", "gid", "local_xid", "decision", "sqlstate", "message", "in_doubt"}
    assert (row["gid"], row["decision"], row["in_doubt"]) == (gid, "would commit", True)
    assert row["local_xid"] == gid.split(":")[3]
    assert row["target"] == target
    assert dry["summary"] == {"finished": 0, "in_doubt": 1, "forgotten": 0}

    code, done = resolve_json(dsn, "--min-age", "0")
    assert code == 0
    assert [(r["gid"], r["decision"], r["in_doubt"]) for r in done["rows"]] == [
        (gid, "committed", False),
        (gid, "forgotten", False),
    ]
    assert done["summary"] == {"finished": 1, "in_doubt": 0, "forgotten": 1}
    assert remote_notes(remote, remote_db) == ["kept"]
    assert installed.execute("SELECT count(*) FROM dblink_safe.prepared_xacts").fetchone() == (0,)


def test_an_unreachable_target_is_in_doubt_and_its_password_is_not_shown(
    installed: Conn, local: Server, local_db: str
) -> None:
    gone = f"host=127.0.0.1 port=1 dbname=gone user=etl password={SECRET} connect_timeout=2"
    installed.execute("INSERT INTO dblink_safe.two_phase_targets (target) VALUES (%s)", [gone])
    result = run("resolve", "--dsn", local.client_conninfo(local_db))
    assert result.returncode == 1, result.stderr
    [line, summary] = result.stdout.splitlines()
    assert line.startswith("unreachable  host=127.0.0.1 port=1 dbname=gone user=etl"), line
    assert " -  08001: could not open dblink connection" in line
    assert summary == "finished 0, still in doubt 1"
    assert SECRET not in result.stdout + result.stderr
    code, data = resolve_json(local.client_conninfo(local_db))
    assert code == 1
    assert [(r["decision"], r["gid"], r["sqlstate"]) for r in data["rows"]] == [
        ("unreachable", None, "08001")
    ]


def test_connection_failure_is_exit_2_without_password() -> None:
    result = run(
        "resolve", "--dsn", f"host=127.0.0.1 port=1 user=x password={SECRET} connect_timeout=2"
    )
    assert result.returncode == 2
    assert result.stderr.startswith("Error: could not connect")
    assert SECRET not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_toolkit_missing_is_exit_2_with_its_sqlstate(local: Server, local_db: str) -> None:
    result = run("resolve", "--dsn", local.client_conninfo(local_db))
    assert result.returncode == 2
    assert re.search(r"\(SQLSTATE (3F000|42883)\)$", result.stderr.strip()), result.stderr
    assert result.stdout == ""


def test_a_second_resolver_is_exit_2_with_55P03(
    installed: Conn,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    target: str,
    prepared: None,
) -> None:
    orphan(installed, local, local_db, target)
    with local.connect(local_db, autocommit=False) as first:
        # The first resolver holds its lock until its transaction ends.
        first.execute("SELECT * FROM dblink_safe.resolve_prepared('0', dry_run => true)")
        result = run("resolve", "--dsn", local.client_conninfo(local_db), "--min-age", "0")
        first.rollback()
    assert result.returncode == 2
    assert "another resolve_prepared is running" in result.stderr
    assert result.stderr.strip().endswith("(SQLSTATE 55P03)")
    assert len(prepared_gids(remote, remote_db)) == 1


def test_a_role_under_row_security_is_exit_2_with_42501(
    conn: Conn, local: Server, local_db: str
) -> None:
    role = f"resolver_app_{os.getpid()}"
    local.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        pgdblink_safe.install(conn, grant=[role])
        conn.execute(
            sql.SQL("GRANT SELECT ON dblink_safe.prepared_xacts TO {}").format(sql.Identifier(role))
        )
        dsn = psycopg.conninfo.make_conninfo(local.client_conninfo(local_db), user=role)
        result = run("resolve", "--dsn", dsn)
        assert result.returncode == 2
        assert result.stderr.strip().endswith("(SQLSTATE 42501)"), result.stderr
        assert "must run as the owner" in result.stderr
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        local.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_min_age_takes_seconds_or_an_interval(
    installed: Conn, local: Server, local_db: str
) -> None:
    dsn = local.client_conninfo(local_db)
    assert resolve_json(dsn, "--min-age", "90")[1]["min_age"] == "90 seconds"
    assert resolve_json(dsn, "--min-age", "2 minutes")[1]["min_age"] == "2 minutes"
    bad = run("resolve", "--dsn", dsn, "--min-age", "soon")
    assert bad.returncode == 2
    assert "(SQLSTATE 22007)" in bad.stderr


# -- --print-schedule ----------------------------------------------------------------------


def schedule(scheduler: str, *args: str) -> str:
    result = run("resolve", "--print-schedule", scheduler, *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def cron_calls(text: str) -> list[tuple[str, list[str]]]:
    """(function, its string arguments) of each SELECT cron.*(...) the text holds."""
    calls = []
    for raw in pglast.parse_sql(text):
        target = raw.stmt.targetList[0].val
        name = ".".join(part.sval for part in target.funcname)
        calls.append((name, [arg.val.sval for arg in target.args]))
    return calls


def test_pg_cron_schedule_parses_and_its_command_runs(
    installed: Conn, local: Server, local_db: str
) -> None:
    text = schedule("pg_cron", "--dsn", f"{local.client_conninfo(local_db)} password={SECRET}")
    assert SECRET not in text
    calls = cron_calls(text)
    command = "SELECT count(*) FROM dblink_safe.resolve_prepared()"
    assert calls == [
        ("cron.schedule", ["pgdblink_safe_resolve", "* * * * *", command]),
        (
            "cron.schedule_in_database",
            [f"pgdblink_safe_resolve_{local_db}", "* * * * *", command, local_db],
        ),
    ]
    installed.execute("INSERT INTO dblink_safe.two_phase_targets (target) VALUES ('nowhere')")
    assert installed.execute(command).fetchone() == (1,)
    row = installed.execute("SELECT ran_by, in_doubt FROM dblink_safe.resolver_runs").fetchone()
    assert row == (local.user, 1)


def test_pg_cron_schedule_quotes_the_schema_and_min_age() -> None:
    [(_, first), (_, second)] = cron_calls(
        schedule("pg_cron", "--schema", "Ops $$ tools", "--min-age", "30", "--dsn", "dbname=x")
    )
    wanted = "SELECT count(*) FROM \"Ops $$ tools\".resolve_prepared(min_age => '30 seconds')"
    assert first[2] == second[2] == wanted
    assert second[3] == "x"


def _pg_cron_available(binaries: Any) -> str | None:
    """Why pg_cron cannot run on servers of these binaries, or None when it can."""
    pg_config = binaries.bindir / "pg_config"
    if not pg_config.exists():
        return "no pg_config beside the server"
    found = subprocess.run(
        [str(pg_config), "--sharedir", "--pkglibdir"],
        capture_output=True,
        text=True,
        timeout=30,
        env=binaries.env(),
    ).stdout.split()
    if len(found) != 2:
        return "pg_config did not say where extensions are"
    sharedir, pkglibdir = map(Path, found)
    if not (sharedir / "extension" / "pg_cron.control").exists():
        return f"pg_cron is not installed for {binaries.bindir} (postgresql-N-cron)"
    if not (pkglibdir / "pg_cron.so").exists():
        return f"no pg_cron.so in {pkglibdir}"
    return None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_pg_cron_runs_the_printed_job(remote: Server, remote_db: str, prepared: None) -> None:
    """The printed schedule_in_database, run as printed in pg_cron's database: within a
    minute pg_cron runs the resolver in the toolkit's database, which rolls back an orphan."""
    binaries = getattr(remote, "binaries", None)
    if binaries is None:
        pytest.skip("the test servers are not clusters this run started")
    why = _pg_cron_available(binaries)
    if why:
        pytest.skip(why)
    cluster = LocalCluster(binaries, label="pg_cron")
    cluster.start(
        {
            "shared_preload_libraries": "'pg_cron'",
            "cron.database_name": "'postgres'",
            "cron.host": "'127.0.0.1'",
        }
    )
    try:
        cluster.execute("CREATE EXTENSION pg_cron")
        cluster.create_database("app")
        cluster.execute("CREATE EXTENSION dblink", dbname="app")
        with cluster.connect("app") as app:
            pgdblink_safe.install(app)
            orphan(app, cluster, "app", remote.conninfo(remote_db))
        assert len(prepared_gids(remote, remote_db)) == 1
        text = schedule("pg_cron", "--dsn", cluster.client_conninfo("app"))
        printed = [s for s in pglast.split(text) if "schedule_in_database" in s]
        assert len(printed) == 1
        cluster.execute(printed[0])
        job = cluster.execute("SELECT jobname, schedule, database FROM cron.job")
        assert job == [("pgdblink_safe_resolve_app", "* * * * *", "app")]

        def succeeded() -> bool:
            rows = cluster.execute("SELECT status, return_message FROM cron.job_run_details")
            assert all(status != "failed" for status, _ in rows), rows
            return any(status == "succeeded" for status, _ in rows)

        # A run within resolve_prepared's default min_age (5 s) of the orphan leaves it as
        # too young; the next one, a minute later, rolls it back.
        wait_for(
            lambda: succeeded() and prepared_gids(remote, remote_db) == [],
            130,
            "pg_cron to run the resolver and roll the orphan back",
            interval=0.5,
        )
        ran = cluster.execute("SELECT finished FROM dblink_safe.resolver_runs", dbname="app")
        assert ran == [(1,)]
    finally:
        cluster.stop()


def test_crontab_line_runs_and_holds_no_password(
    installed: Conn, local: Server, local_db: str
) -> None:
    dsn = f"{local.client_conninfo(local_db)} password={SECRET}"
    text = schedule("cron", "--dsn", dsn, "--min-age", "10")
    assert SECRET not in text
    [line] = [line for line in text.splitlines() if not line.startswith("#")]
    fields = line.split(maxsplit=5)
    assert fields[:5] == ["*"] * 5
    command = fields[5]
    assert command.endswith(" >/dev/null")
    words = shlex.split(command.removesuffix(" >/dev/null"))
    assert Path(words[0]).name == "pgdblink-safe" and Path(words[0]).is_absolute()
    assert words[1:3] == ["resolve", "--dsn"] and words[4:] == ["--min-age", "10 seconds"]
    assert "password" not in words[3]
    # As cron would run it, through sh (with the password from elsewhere: trust here).
    done = subprocess.run(
        ["sh", "-c", command.replace(">/dev/null", "")],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "finished 0, still in doubt 0"


def test_crontab_without_dsn_has_a_placeholder() -> None:
    text = schedule("cron")
    assert "--dsn 'host=HOST dbname=DATABASE user=OWNER'" in text


def test_systemd_units(installed: Conn, local: Server, local_db: str) -> None:
    dsn = f"{local.client_conninfo(local_db)} password={SECRET}"
    text = schedule("systemd", "--dsn", dsn)
    assert SECRET not in text
    units = re.split(r"^# /etc/systemd/system/(\S+)\n", text, flags=re.M)
    assert units[0] == ""
    files = dict(zip(units[1::2], units[2::2], strict=True))
    assert set(files) == {"pgdblink-safe-resolve.service", "pgdblink-safe-resolve.timer"}
    parsed = {}
    for name, body in files.items():
        parser = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(body)
        parsed[name] = parser
    service = parsed["pgdblink-safe-resolve.service"]
    timer = parsed["pgdblink-safe-resolve.timer"]
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["SuccessExitStatus"] == "1"
    assert timer["Timer"]["OnCalendar"] == "minutely"
    assert timer["Install"]["WantedBy"] == "timers.target"
    exec_start = service["Service"]["ExecStart"].replace("%%", "%").replace("$$", "$")
    done = subprocess.run(shlex.split(exec_start), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "finished 0, still in doubt 0"


# -- doctor --------------------------------------------------------------------------------


def doctor_findings(conn: Conn, **ages: Any) -> dict[str, list[doctor.Finding]]:
    found: dict[str, list[doctor.Finding]] = {}
    for finding in doctor.diagnose(conn, two_phase_ages=doctor.TwoPhaseAges(**ages)):
        found.setdefault(finding.code, []).append(finding)
    return found


def doctor_cli(local: Server, local_db: str) -> subprocess.CompletedProcess[str]:
    return run("doctor", "--dsn", local.client_conninfo(local_db))


@pytest.fixture
def keepalives(local: Server) -> Iterator[None]:
    with local.settings(tcp_keepalives_idle="60"):
        yield


@pytest.fixture
def spare(remote: Server) -> Iterator[LocalCluster]:
    """A throwaway remote server that takes 100 prepared transactions (above max_connections
    of the local server)."""
    binaries = getattr(remote, "binaries", None)
    if binaries is None:
        pytest.skip("the test servers are not clusters this run started")
    cluster = LocalCluster(binaries, label="spare")
    cluster.start({"max_prepared_transactions": "100"})
    try:
        yield cluster
    finally:
        cluster.stop()


def test_max_prepared_transactions_of_targets(
    installed: Conn,
    local: Server,
    local_db: str,
    target: str,
    spare: LocalCluster,
    keepalives: None,
) -> None:
    assert local.execute("SHOW max_connections") == [("60",)]
    installed.execute(
        "INSERT INTO dblink_safe.two_phase_targets (target) VALUES (%s), (%s)",
        [target, spare.conninfo()],
    )
    installed.execute("SELECT count(*) FROM dblink_safe.resolve_prepared()")
    found = doctor_findings(installed)
    assert set(found) == {"PGS012"}
    [low] = found["PGS012"]
    assert low.subject == f"target {target}"
    assert low.message == "max_prepared_transactions is 20 there, below max_connections 60 here"

    spare.execute("ALTER SYSTEM SET max_prepared_transactions = 0")
    spare.restart()
    result = doctor_cli(local, local_db)
    assert result.returncode == 1
    pgs012 = [line for line in result.stdout.splitlines() if line.startswith("PGS012")]
    assert len(pgs012) == 2
    assert any(
        spare.conninfo() in line
        and line.endswith("max_prepared_transactions is 0 there: PREPARE TRANSACTION fails")
        for line in pgs012
    ), pgs012


def test_an_unreachable_target_is_a_finding(
    installed: Conn, local: Server, local_db: str, keepalives: None
) -> None:
    gone = f"host=127.0.0.1 port=1 dbname=gone user=etl password={SECRET} connect_timeout=2"
    installed.execute("INSERT INTO dblink_safe.two_phase_targets (target) VALUES (%s)", [gone])
    installed.execute("SELECT count(*) FROM dblink_safe.resolve_prepared()")
    result = doctor_cli(local, local_db)
    assert result.returncode == 1, result.stderr
    [line] = [line for line in result.stdout.splitlines() if line.startswith("PGS")]
    assert line.startswith(
        "PGS016  a two-phase target cannot be reached: target host=127.0.0.1 port=1 dbname=gone"
    ), line
    assert line.endswith("failed: Connection refused (SQLSTATE 08001)"), line
    assert SECRET not in result.stdout + result.stderr


def test_an_old_prepared_transaction_is_a_finding(
    installed: Conn,
    local: Server,
    local_db: str,
    remote: Server,
    remote_db: str,
    target: str,
    prepared: None,
) -> None:
    orphan(installed, local, local_db, target)
    # A prepared transaction under another GID prefix is not this database's.
    remote.execute("BEGIN; PREPARE TRANSACTION 'pgdblink_safe:someone:else'", remote_db)
    before = doctor_findings(installed)
    assert "PGS013" not in before  # younger than a minute
    found = doctor_findings(installed, prepared=doctor.TwoPhaseAges().prepared * 0)
    [old] = found["PGS013"]
    assert old.subject == f"target {target}"
    assert re.fullmatch(
        r"1 transaction\(s\) prepared by this database for more than 0 s, the oldest for \d+ s",
        old.message,
    ), old.message
    run("resolve", "--dsn", local.client_conninfo(local_db), "--min-age", "0")
    assert "PGS013" not in doctor_findings(installed, prepared=doctor.TwoPhaseAges().prepared * 0)


def test_commit_record_backlog_and_a_stale_resolver_are_findings(
    installed: Conn, local: Server, local_db: str, target: str
) -> None:
    assert "PGS015" not in doctor_findings(installed)  # two-phase commit never used
    installed.execute("INSERT INTO dblink_safe.two_phase_targets (target) VALUES (%s)", [target])
    found = doctor_findings(installed)
    assert [f.message for f in found["PGS015"]] == ["it has never run in this database"]
    installed.execute(
        "INSERT INTO dblink_safe.prepared_xacts (gid, target, conn_name, participant, "
        "local_xid, prepared_at) "
        "VALUES ('pgdblink_safe:old', %s, 'c', '1/x', '1', now() - interval '1 hour')",
        [target],
    )
    installed.execute(
        "INSERT INTO dblink_safe.resolver_runs (ran_at, ran_by, finished, in_doubt) "
        "VALUES (now() - interval '2 hours', 'postgres', 0, 0)"
    )
    result = doctor_cli(local, local_db)
    assert result.returncode == 1
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line[:3] == "PGS"}
    assert lines["PGS014"] == (
        "PGS014  commit records pile up: table dblink_safe.prepared_xacts: 1 commit record(s) "
        "older than 10 min, the oldest 60 min old"
    )
    assert re.fullmatch(
        r"PGS015  the resolver has not run recently: resolve_prepared: it last ran 2 h "
        r"ago, at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d[+-]\d{4}",
        lines["PGS015"],
    ), lines["PGS015"]
    installed.execute("DELETE FROM dblink_safe.prepared_xacts")
    installed.execute("UPDATE dblink_safe.resolver_runs SET ran_at = now()")
    assert not {"PGS014", "PGS015"} & set(doctor_findings(installed))


def test_doctor_skips_two_phase_checks_at_version_1(
    conn: Conn, local: Server, local_db: str, keepalives: None
) -> None:
    pgdblink_safe.install(conn, to_version=1)
    result = run("doctor", "--dsn", local.client_conninfo(local_db), "--json")
    assert result.returncode == 1, result.stderr
    assert [f["code"] for f in json.loads(result.stdout)] == ["PGS003"]


def test_resolve_runs_at_read_committed_whatever_the_default(
    installed: Conn, local: Server, local_db: str
) -> None:
    installed.execute(
        sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = 'serializable'").format(
            sql.Identifier(local_db)
        )
    )
    # resolve_prepared itself refuses anything but READ COMMITTED.
    with (
        local.connect(local_db) as fresh,
        pytest.raises(psycopg.errors.InvalidTransactionState),
    ):
        fresh.execute("SELECT * FROM dblink_safe.resolve_prepared()")
    result = run("resolve", "--dsn", local.client_conninfo(local_db))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "finished 0, still in doubt 0"
