"""The extension form (PGXS, CREATE/ALTER EXTENSION, dump and restore) and the pg_tle script."""

import itertools
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pglast
import psycopg
import pytest
from psycopg import sql
from servers import Server
from test_deploy import full_catalog

import pgdblink_safe
from pgdblink_safe import _extension
from pgdblink_safe.export import export
from pgdblink_safe.settings import Settings

Conn = psycopg.Connection[Any]
NAME = _extension.NAME
CURRENT = _extension.current_version()
FIRST = _extension.steps()[0].version


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgdblink_safe", *args],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def statements(script: str) -> list[Any]:
    """The parse trees of an extension script, without its psql guard line."""
    body = "\n".join(line for line in script.splitlines() if not line.startswith("\\"))
    return [raw.stmt for raw in pglast.parse_sql(body)]


@pytest.fixture
def fresh_db(local: Server) -> Iterator[str]:
    """A database without dblink, dropped afterwards."""
    name = f"ext_{os.getpid()}_{os.urandom(3).hex()}"
    local.create_database(name)
    yield name
    local.drop_database(name)


@pytest.fixture
def other_db(local: Server) -> Iterator[str]:
    name = f"ext_other_{os.getpid()}_{os.urandom(3).hex()}"
    local.create_database(name)
    yield name
    local.drop_database(name)


# ---- the exported files -------------------------------------------------------------------


def test_the_export_writes_the_extension_files(exported: Path) -> None:
    names = {str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file()}
    for variant in _extension.VARIANTS:
        assert f"{variant}/{NAME}--{CURRENT}.sql" in names
        assert f"{variant}/{NAME}--{FIRST}.sql" in names
        for previous, step in itertools.pairwise(_extension.steps()):
            assert f"{variant}/{NAME}--{previous.version}--{step.version}.sql" in names
    assert {f"{NAME}.control", f"pg16/{NAME}.control", "Makefile", "META.json"} <= names
    control = (exported / f"{NAME}.control").read_text()
    assert "requires = 'dblink'" in control
    assert "relocatable = false" in control
    assert "schema = 'dblink_safe'" in control
    assert f"default_version = '{CURRENT}'" in control
    assert "trusted = false" in control
    assert "no_relocate" not in control  # an unknown parameter to PostgreSQL 14 and 15
    assert "no_relocate = 'dblink'" in (exported / f"pg16/{NAME}.control").read_text()


def test_extension_scripts_hold_no_transaction_control_nor_bookkeeping(exported: Path) -> None:
    scripts = sorted(exported.glob("pg*/*.sql"))
    assert len(scripts) == 2 * (len(_extension.steps()) + 1)
    for path in scripts:
        text = path.read_text()
        parsed = statements(text)
        kinds = {type(stmt).__name__ for stmt in parsed}
        assert "TransactionStmt" not in kinds, path
        # No bookkeeping table: the extension's version is its record.
        assert "CreateStmt" not in kinds, path
        assert "CreateSchemaStmt" not in kinds, path  # CREATE EXTENSION creates the schema
        if path.parent.name == "pg16":
            assert "@extschema:dblink@" in text and "public.dblink" not in text, path
        else:
            assert "@extschema" not in text and "public.dblink" in text, path


#: The two entry points without a SET clause, which pass the caller's search_path on (see
#: test_security.CALLERS_SEARCH_PATH), as pgspot names them.
CALLERS_SEARCH_PATH_ALLOWED = [
    arg
    for caller in (
        "dblink_safe.autonomous_exec(sql text,timeout interval)",
        "dblink_safe.autonomous_query(sql text,row_type anyelement,timeout interval)",
    )
    for arg in ("--proc-without-search-path", caller)
]


def test_install_scripts_pass_pgspot_and_updates_replace_only_their_own_functions(
    exported: Path, tmp_path: Path
) -> None:
    pgspot = shutil.which("pgspot") or str(Path(sys.executable).with_name("pgspot"))
    for path in sorted(exported.glob("pg*/*.sql")):
        script = tmp_path / path.name
        text = path.read_text()
        script.write_text("\n".join(line for line in text.splitlines() if line[:1] != "\\"))
        result = subprocess.run(
            [pgspot, *CALLERS_SEARCH_PATH_ALLOWED, str(script)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        findings = [line for line in result.stdout.splitlines() if re.match(r"PS\d{3}:", line)]
        if "--" in path.stem.split(f"{NAME}--", 1)[1]:
            # CREATE OR REPLACE of functions the previous version created: members of the
            # extension, which PostgreSQL (14.5 and later) refuses to apply to a non-member.
            assert all(f.startswith("PS002: Unsafe function creation") for f in findings), path
            assert len(findings) == len(
                re.findall(r"^CREATE OR REPLACE (?:FUNCTION|PROCEDURE)", text, re.M)
            )
        else:
            assert findings == [], (path, findings)
            assert "CREATE OR REPLACE" not in text


SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*)?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?\Z"
)

#: The license names of the PGXN Meta Spec 1.0.0.
PGXN_LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd", "freebsd",
    "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1", "lgpl_3_0", "mit",
    "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5", "postgresql", "qpl_1_0", "ssleay",
    "sun", "zlib", "open_source", "restricted", "unrestricted", "unknown",
}  # fmt: skip


def test_meta_json_has_what_the_pgxn_meta_spec_requires(exported: Path) -> None:
    meta = json.loads((exported / "META.json").read_text())
    for field in ("name", "abstract", "version", "maintainer", "license", "provides", "meta-spec"):
        assert meta.get(field), f"META.json lacks the required field {field!r}"
    assert re.fullmatch(r"[^\s/\\]{2,}", meta["name"])
    assert SEMVER.match(meta["version"]), meta["version"]
    assert meta["license"] in PGXN_LICENSES
    assert meta["meta-spec"]["version"] == "1.0.0"
    assert meta["release_status"] in ("stable", "testing", "unstable")
    assert isinstance(meta["maintainer"], list | str) and meta["maintainer"]
    for extension, provided in meta["provides"].items():
        assert re.fullmatch(r"[^\s/\\]{2,}", extension)
        assert provided["version"] == meta["version"] == CURRENT
        assert (exported / provided["file"]).is_file(), provided["file"]
    for phase in meta["prereqs"].values():
        for relation in phase.values():
            for version in relation.values():
                assert SEMVER.match(version), version


def test_extension_versions_follow_the_release_steps() -> None:
    steps = _extension.steps()
    assert [s.number for s in steps] == list(range(1, len(steps) + 1))
    assert steps[0].version == "0.1.0" and steps[0].released
    for step in steps:
        assert SEMVER.match(step.version)
        if not step.released:
            assert step.version.endswith(f"-dev{step.number}")
    assert _extension.step_of(CURRENT) == len(steps)


def test_version_names_the_toolkit_and_extension_versions() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert f"extension version {CURRENT}" in result.stdout
    assert f"toolkit version {len(_extension.steps()):04d}" in result.stdout


# ---- the extension on a real server ---------------------------------------------------------


def test_create_extension_cascade_installs_the_current_code(
    local: Server, extension_files: Path, fresh_db: str, other_db: str
) -> None:
    with local.connect(fresh_db) as ext, local.connect(other_db) as cli:
        ext.execute(f"CREATE EXTENSION {NAME} CASCADE")
        cli.execute("CREATE EXTENSION dblink")
        pgdblink_safe.install(cli)
        state = pgdblink_safe.status(ext)
        assert (state.form, state.extension_version) == ("extension", CURRENT)
        assert state.installed_version == len(_extension.steps()) and state.pending == []
        # The settings it was exported with, as the migration form records them.
        assert state.settings == Settings() == pgdblink_safe.status(cli).settings
        from_extension, from_cli = (
            full_catalog(ext, "dblink_safe"),
            full_catalog(cli, "dblink_safe"),
        )
        # The migration form's bookkeeping table is its own; every function is identical.
        extra = {k for k in from_cli if k not in from_extension}
        assert "relation dblink_safe.installed_migrations" in extra
        assert all("installed_migrations" in k for k in extra), extra
        assert {k: v for k, v in from_cli.items() if k in from_extension} == from_extension
        members = ext.execute(
            "SELECT count(*) FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e "
            "ON e.oid = d.refobjid WHERE e.extname = %s AND d.deptype = 'e'",
            [NAME],
        ).fetchone()
        functions = [k for k in from_extension if k.startswith("function ")]
        assert members is not None and members[0] == len(functions)


def test_the_extension_heals_a_terminated_connection(
    local: Server, remote: Server, extension_files: Path, fresh_db: str, target: str
) -> None:
    with local.connect(fresh_db) as conn:
        conn.execute(f"CREATE EXTENSION {NAME} CASCADE")
        conn.execute("SELECT dblink_safe.ensure_dblink_conn('ext', %s)", [target])
        remote.terminate_backends(psycopg.conninfo.conninfo_to_dict(target)["dbname"])
        row = conn.execute(
            "SELECT dblink_safe.safe_dblink_exec('ext', 'INSERT INTO items (note) VALUES (''x'')')"
        ).fetchone()
        assert row == ("INSERT 0 1",)


def test_alter_extension_update_from_the_release_equals_a_fresh_create(
    local: Server, extension_files: Path, fresh_db: str, other_db: str
) -> None:
    with local.connect(fresh_db) as old, local.connect(other_db) as new:
        old.execute(f"CREATE EXTENSION {NAME} VERSION '{FIRST}' CASCADE")
        assert pgdblink_safe.status(old).installed_version == 1
        assert len(pgdblink_safe.status(old).pending) == len(_extension.steps()) - 1
        old.execute(f"ALTER EXTENSION {NAME} UPDATE")
        new.execute(f"CREATE EXTENSION {NAME} CASCADE")
        assert pgdblink_safe.status(old).extension_version == CURRENT
        assert full_catalog(old, "dblink_safe") == full_catalog(new, "dblink_safe")


def test_a_dump_restores_the_extension(
    local: Server, extension_files: Path, fresh_db: str, other_db: str, tmp_path: Path
) -> None:
    binaries = local.binaries  # type: ignore[attr-defined]
    with local.connect(fresh_db) as conn:
        conn.execute(f"CREATE EXTENSION {NAME} CASCADE")
        conn.execute("GRANT USAGE ON SCHEMA dblink_safe TO PUBLIC")
        before = full_catalog(conn, "dblink_safe")
    dump = tmp_path / "db.dump"
    env = binaries.env()
    subprocess.run(
        [str(binaries.bindir / "pg_dump"), "-Fc", "-f", str(dump), "-d", local.conninfo(fresh_db)],
        check=True,
        timeout=120,
        env=env,
    )
    restored = subprocess.run(
        [str(binaries.bindir / "pg_restore"), "--exit-on-error", "-d", local.conninfo(other_db),
         str(dump)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )  # fmt: skip
    assert restored.returncode == 0, restored.stderr
    with local.connect(other_db) as conn:
        assert pgdblink_safe.status(conn).form == "extension"
        assert full_catalog(conn, "dblink_safe") == before
        assert conn.execute("SELECT count(*) FROM dblink_safe.connections()").fetchone() == (0,)


def test_each_form_refuses_to_install_over_the_other(
    local: Server, extension_files: Path, fresh_db: str, other_db: str
) -> None:
    with local.connect(fresh_db) as ext:
        ext.execute(f"CREATE EXTENSION {NAME} CASCADE")
        with pytest.raises(pgdblink_safe.InstallError, match="installed as an extension"):
            pgdblink_safe.install(ext)
    for command in ("install", "upgrade"):
        result = run(command, "--dsn", local.client_conninfo(fresh_db))
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "ALTER EXTENSION pgdblink_safe UPDATE" in lines[0], lines
    with local.connect(other_db) as cli:
        cli.execute("CREATE EXTENSION dblink")
        pgdblink_safe.install(cli)
        with pytest.raises(psycopg.errors.DuplicateObject) as caught:
            cli.execute(f"CREATE EXTENSION {NAME}")
        assert "already installed in schema dblink_safe by migrations" in str(caught.value)
        assert pgdblink_safe.status(cli).form == "migrations"


def test_status_doctor_and_uninstall_know_the_extension(
    local: Server, extension_files: Path, fresh_db: str
) -> None:
    with local.connect(fresh_db) as conn:
        conn.execute(f"CREATE EXTENSION {NAME} CASCADE")
    dsn = local.client_conninfo(fresh_db)
    status = run("status", "--dsn", dsn)
    assert status.returncode == 0, status.stderr
    assert f"form:              extension {CURRENT} (pg_extension)" in status.stdout
    as_json = json.loads(run("status", "--dsn", dsn, "--json").stdout)
    assert as_json["form"] == "extension" and as_json["extension_version"] == CURRENT
    doctor = run("doctor", "--dsn", dsn, "--json")
    assert "PGS003" not in {f["code"] for f in json.loads(doctor.stdout)}, doctor.stdout
    removed = run("uninstall", "--dsn", dsn)
    assert removed.returncode == 0, removed.stderr
    with local.connect(fresh_db) as conn:
        assert conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = %s", [NAME]
        ).fetchone() == (0,)
        assert conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = 'dblink_safe'"
        ).fetchone() == (0,)
        assert pgdblink_safe.status(conn).form is None


def test_an_older_extension_is_a_doctor_finding(
    local: Server, extension_files: Path, fresh_db: str
) -> None:
    with local.connect(fresh_db) as conn:
        conn.execute(f"CREATE EXTENSION {NAME} VERSION '{FIRST}' CASCADE")
    findings = json.loads(run("doctor", "--dsn", local.client_conninfo(fresh_db), "--json").stdout)
    pgs003 = [f for f in findings if f["code"] == "PGS003"]
    assert pgs003 and f"(extension {FIRST})" in pgs003[0]["message"], findings


# ---- a role that is not a superuser --------------------------------------------------------


@pytest.fixture
def app_role(local: Server, fresh_db: str) -> Iterator[str]:
    role = f"ext_app_{os.getpid()}"
    local.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    local.execute(
        sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(fresh_db), sql.Identifier(role)
        )
    )
    try:
        yield role
    finally:
        local.drop_database(fresh_db)
        local.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_extension_is_not_trusted_and_the_migration_form_is_the_path_without_superuser(
    local: Server, extension_files: Path, fresh_db: str, app_role: str
) -> None:
    local.execute("CREATE EXTENSION dblink", dbname=fresh_db)
    with local.connect(fresh_db, user=app_role) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege) as caught:
            conn.execute(f"CREATE EXTENSION {NAME}")
        assert "permission denied to create extension" in str(caught.value)
        pgdblink_safe.install(conn)
        state = pgdblink_safe.status(conn)
        assert state.form == "migrations" and state.installed_version == len(_extension.steps())


# ---- dblink's schema: @extschema:dblink@ on 16+, rendered in and checked on 14/15 ------------


@pytest.mark.pg(min=16, reason="@extschema:dblink@ and no_relocate")
def test_dblink_in_any_schema_and_not_movable_on_16(
    local: Server, extension_files: Path, fresh_db: str
) -> None:
    with local.connect(fresh_db) as conn:
        conn.execute("CREATE SCHEMA ext_tools")
        conn.execute("CREATE EXTENSION dblink SCHEMA ext_tools")
        conn.execute(f"CREATE EXTENSION {NAME}")
        source = conn.execute(
            "SELECT prosrc FROM pg_catalog.pg_proc WHERE proname = 'connections'"
        ).fetchone()
        assert source is not None and "ext_tools.dblink_get_connections" in source[0]
        conn.execute("CREATE SCHEMA elsewhere")
        with pytest.raises(psycopg.errors.FeatureNotSupported):
            conn.execute("ALTER EXTENSION dblink SET SCHEMA elsewhere")


@pytest.mark.pg(max=15, reason="the scripts for 14 and 15 have dblink's schema rendered in")
def test_dblink_elsewhere_than_exported_is_a_clear_error_on_15(
    local: Server, extension_files: Path, fresh_db: str
) -> None:
    with local.connect(fresh_db) as conn:
        conn.execute("CREATE SCHEMA ext_tools")
        conn.execute("CREATE EXTENSION dblink SCHEMA ext_tools")
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as caught:
            conn.execute(f"CREATE EXTENSION {NAME}")
        assert "exported for dblink in schema public" in str(caught.value)
        assert "--dblink-schema" in (caught.value.diag.message_hint or "")


# ---- pg_tle ----------------------------------------------------------------------------------


def _tle_calls(script: str) -> list[tuple[str, list[Any]]]:
    calls = []
    for stmt in statements(script):
        if type(stmt).__name__ != "SelectStmt":
            continue
        call = stmt.targetList[0].val
        name = ".".join(part.sval for part in call.funcname)
        calls.append((name, list(call.args)))
    return calls


def _text(arg: Any) -> str:
    return str(arg.val.sval)


def test_the_pg_tle_script_parses_and_registers_every_step(tmp_path: Path) -> None:
    (path,) = export(Settings(), "pg_tle", tmp_path)
    script = path.read_text()
    calls = _tle_calls(script)
    names = [name for name, _ in calls]
    steps = _extension.steps()
    assert names == (
        ["pgtle.install_extension"]
        + ["pgtle.install_update_path"] * (len(steps) - 1)
        + ["pgtle.set_default_version"]
    )
    install = calls[0][1]
    assert [_text(a) for a in install[:3]] == [NAME, FIRST, _extension.COMMENT]
    requires = install[4]
    assert type(requires).__name__ == "NamedArgExpr" and requires.name == "requires"
    assert [e.val.sval for e in requires.arg.elements] == ["dblink"]
    for (_, args), (previous, step) in zip(calls[1:], itertools.pairwise(steps), strict=False):
        assert [_text(a) for a in args[:3]] == [NAME, previous.version, step.version]
    assert [_text(a) for a in calls[-1][1]] == [NAME, CURRENT]
    # Idempotent: every registration is skipped when pg_tle already has it.
    selects = [s for s in statements(script) if type(s).__name__ == "SelectStmt"]
    for stmt in selects[:-1]:
        condition = stmt.whereClause
        assert type(condition).__name__ == "BoolExpr" and condition.boolop.name == "NOT_EXPR"
        assert type(condition.args[0]).__name__ == "SubLink"
    kinds = [type(s).__name__ for s in statements(script)]
    assert kinds[0] == "TransactionStmt" and kinds[-1] == "TransactionStmt"


def test_the_sql_the_pg_tle_script_embeds_builds_the_toolkit(
    local: Server, tmp_path: Path, fresh_db: str, other_db: str
) -> None:
    (path,) = export(Settings(), "pg_tle", tmp_path)
    calls = _tle_calls(path.read_text())
    bodies = [_text(calls[0][1][3])] + [_text(args[3]) for _, args in calls[1:-1]]
    with local.connect(fresh_db) as tle, local.connect(other_db) as cli:
        tle.execute("CREATE EXTENSION dblink")
        with tle.transaction():
            for body in bodies:
                parsed = statements(body)
                assert "TransactionStmt" not in {type(stmt).__name__ for stmt in parsed}
                # Each script ends by recording its settings in the extension's comment, which
                # only a script run by CREATE EXTENSION can do: run the rest.
                assert type(parsed[-1]).__name__ == "CommentStmt"
                assert parsed[-1].objtype.name == "OBJECT_EXTENSION"
                record = _extension._record(Settings())
                assert body.endswith(record)
                tle.execute(body.removesuffix(record).encode())
        cli.execute("CREATE EXTENSION dblink")
        pgdblink_safe.install(cli)
        from_tle, from_cli = full_catalog(tle, "dblink_safe"), full_catalog(cli, "dblink_safe")
        assert {k: v for k, v in from_cli.items() if k in from_tle} == from_tle
        extra = {k for k in from_cli if k not in from_tle}
        assert "relation dblink_safe.installed_migrations" in extra
        assert all("installed_migrations" in k for k in extra), extra
