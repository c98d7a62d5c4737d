"""Real-server fixtures: a local server running the wrappers and a remote one dblink talks to."""

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from servers import Server, ServerError, start_pair, unmet_version

import pgdblink_safe
from pgdblink_safe._extension import NAME, current_version
from pgdblink_safe.export import export
from pgdblink_safe.settings import Settings

_TEMPLATE = "pgdblink_safe_tpl"
_counter = itertools.count()


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[Server, Server]]:
    provider = os.environ.get("PGDBLINK_SAFE_PROVIDER", "embedded")
    try:
        local, remote = start_pair(provider)
    except ServerError as exc:
        if provider == "docker":
            pytest.skip(f"docker provider: {exc}")
        raise
    try:
        local.drop_database(_TEMPLATE)
        local.create_database(_TEMPLATE)
        local.execute("CREATE EXTENSION dblink", dbname=_TEMPLATE)
        yield local, remote
    finally:
        local.stop()
        remote.stop()


@pytest.fixture(scope="session")
def local(servers: tuple[Server, Server]) -> Server:
    return servers[0]


@pytest.fixture(scope="session")
def remote(servers: tuple[Server, Server]) -> Server:
    return servers[1]


@pytest.fixture(scope="session")
def local_version(local: Server) -> tuple[int, str]:
    """The local server's ``server_version_num`` and release (e.g. ``(160015, "16.15")``)."""
    return local.version_num, local.version


@pytest.fixture(autouse=True)
def _pg_version_marker(request: pytest.FixtureRequest) -> None:
    """Skip a test marked ``pg(min=..., max=..., reason=...)`` the local server does not fit.

    An autouse fixture runs before the test's other function-scoped fixtures, so a skipped
    test creates no database and installs nothing.
    """
    marker = request.node.get_closest_marker("pg")
    if marker is None:
        return
    unknown = set(marker.kwargs) - {"min", "max", "reason"}
    if marker.args or unknown or not {"min", "max"} & set(marker.kwargs):
        raise TypeError(f"use pg(min=16), pg(max=15) or both, with an optional reason=: {marker}")
    version_num, version = request.getfixturevalue("local_version")
    why = unmet_version(version_num, version, marker.kwargs.get("min"), marker.kwargs.get("max"))
    if why:
        reason = marker.kwargs.get("reason")
        pytest.skip(f"{why} ({reason})" if reason else why)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """Print what the servers logged during a failing test."""
    pair = item.funcargs.get("servers") if hasattr(item, "funcargs") else None
    marks = [(s, s.log_position()) for s in pair] if pair else []
    try:
        return (yield)
    except BaseException:
        for server, position in marks:
            log = server.log_since(position)
            if log:
                print(f"\n----- {server.label} server log during this test -----\n{log}")
        raise


def _new_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_counter)}"


@pytest.fixture
def local_db(local: Server) -> Iterator[str]:
    """A fresh database on the local server with dblink (in public) and nothing else."""
    name = _new_name("local")
    local.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(_TEMPLATE)
        )
    )
    yield name
    local.drop_database(name)


@pytest.fixture
def conn(local: Server, local_db: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to ``local_db``."""
    with local.connect(local_db) as connection:
        yield connection


#: PGDBLINK_SAFE_INSTALL_FORM=extension makes ``installed`` use CREATE EXTENSION: CI runs the
#: wrapper, resilience and transaction-scope tests so after `make install` of the exported
#: extension.
INSTALL_FORM = os.environ.get("PGDBLINK_SAFE_INSTALL_FORM", "migrations")


@pytest.fixture
def installed(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
    """``conn`` with the toolkit installed with the default settings, in the chosen form."""
    if INSTALL_FORM == "extension":
        conn.execute("CREATE EXTENSION pgdblink_safe CASCADE")
        row = conn.execute(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'pgdblink_safe'"
        ).fetchone()
        assert row is not None and row[0] == current_version(), row
    elif INSTALL_FORM == "migrations":
        pgdblink_safe.install(conn)
    else:
        raise ValueError(
            f"PGDBLINK_SAFE_INSTALL_FORM must be migrations or extension, not {INSTALL_FORM!r}"
        )
    return conn


@pytest.fixture
def remote_db(remote: Server) -> Iterator[str]:
    """A fresh database on the remote server with a table ``items`` to write to."""
    name = _new_name("remote")
    remote.create_database(name)
    remote.execute(
        "CREATE TABLE items (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)",
        dbname=name,
    )
    yield name
    remote.drop_database(name)


@pytest.fixture
def target(remote: Server, remote_db: str) -> str:
    """A libpq connection string for ``remote_db`` as the local server reaches it."""
    return remote.conninfo(remote_db)


@pytest.fixture
def commit_reply_lost(remote: Server, remote_db: str) -> Iterator[str]:
    """A target whose COMMITs wait for a standby that never comes, until terminated.

    A backend terminated in that wait has committed locally and never replies: the client
    sees a broken connection although the transaction committed. Only sessions opened with
    this target wait; the server's own commits stay asynchronous.
    """
    with remote.settings(synchronous_standby_names="never_there"):
        yield remote.conninfo(remote_db, options="-c synchronous_commit=on")


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("extension")
    export(Settings(), "extension", out)
    return out


@pytest.fixture(scope="session")
def extension_files(local: Server, exported: Path) -> Path:
    """The exported extension, installed into the local server with PGXS (``make install``)."""
    binaries = getattr(local, "binaries", None)
    if binaries is None:
        pytest.skip("the local server is not one this run started: its share directory is unknown")
    pg_config = binaries.bindir / "pg_config"
    if shutil.which("make") is None or not pg_config.exists():
        pytest.skip("make or pg_config is missing: the extension cannot be built with PGXS")
    found = subprocess.run(
        [str(pg_config), "--pgxs", "--sharedir"],
        capture_output=True,
        text=True,
        timeout=30,
        env=binaries.env(),
    ).stdout.split()
    if len(found) != 2 or not Path(found[0]).exists():
        pytest.skip(f"no PGXS for {binaries.bindir} (install postgresql-server-dev-N)")
    extension_dir = Path(found[1]) / "extension"
    if not os.access(extension_dir, os.W_OK):
        pytest.skip(f"{extension_dir} is not writable by this user: make install needs root")
    done = subprocess.run(
        ["make", "install", f"PG_CONFIG={pg_config}"],
        cwd=exported,
        capture_output=True,
        text=True,
        timeout=120,
        env=binaries.env() | {"PATH": os.environ["PATH"]},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (extension_dir / f"{NAME}--{current_version()}.sql").exists()
    return extension_dir
