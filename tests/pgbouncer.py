"""PgBouncer in front of a test server: a real process tests start, stop, restart and command.

    bouncer = PgBouncer(remote, pool_mode="transaction", server_idle_timeout=1).start()
    target = bouncer.conninfo("app")          # a dblink target that goes through PgBouncer
    bouncer.admin("SHOW SERVERS")             # rows of the admin console, as dicts
    bouncer.admin("KILL app"); bouncer.admin("RESUME app")
    bouncer.restart()                         # the process stops and starts on the same port
    bouncer.close()

Everything it writes (configuration, auth file, log, pid file, unix socket) lives in a
private directory owned by the account the process runs as: under root that is the
servers' OS user (PgBouncer refuses to run as root), otherwise the current user.
"""

import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg.rows import dict_row
from servers import Server, log_position, log_since, os_user_for_server

#: Where PgBouncer is looked for when PGDBLINK_SAFE_PGBOUNCER does not name it.
_CANDIDATES = ("pgbouncer", "/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer")
_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0

#: Settings every instance gets unless the caller passes its own value. Short login retry:
#: PgBouncer refuses clients this long after a failed server login (a restart of the server).
_DEFAULTS: dict[str, object] = {
    "max_client_conn": 200,
    "default_pool_size": 20,
    "server_login_retry": 1,
    "server_connect_timeout": 5,
    "client_login_timeout": 10,
    "query_wait_timeout": 30,
    "ignore_startup_parameters": "extra_float_digits",
    "log_connections": 1,
    "log_disconnections": 1,
    "log_pooler_errors": 1,
    "verbose": 0,
}


#: Instances not closed yet, closed at interpreter exit as a last resort.
_LIVE: "weakref.WeakSet[PgBouncer]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for instance in list(_LIVE):
        with contextlib.suppress(Exception):
            instance.close()


class PgBouncerError(RuntimeError):
    """PgBouncer did not start, stop or answer as expected; the message holds its log."""


def find_pgbouncer() -> str | None:
    """The PgBouncer binary to run, or None when it is not installed."""
    named = os.environ.get("PGDBLINK_SAFE_PGBOUNCER")
    if named:
        return named if os.access(named, os.X_OK) else None
    for candidate in _CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def pgbouncer_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run(
        [binary, "--version"], check=True, capture_output=True, text=True, timeout=10
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)(?:\.(\d+))?", out)
    if not match:
        raise PgBouncerError(f"cannot read the version of {binary}: {out!r}")
    return tuple(int(part or 0) for part in match.groups())


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _ini_value(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def _libpq_value(value: str) -> str:
    if value and re.fullmatch(r"[^\s'\\]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class PgBouncer:
    """One PgBouncer process forwarding every database name to ``server``.

    ``settings`` are written to the ``[pgbouncer]`` section as given (``server_lifetime=1``,
    ``default_pool_size=1``, ...); booleans become 1 and 0. Use it as a context manager or
    call ``close()``, which stops the process and removes its directory.
    """

    def __init__(
        self,
        server: Server,
        pool_mode: str = "session",
        *,
        host: str = "127.0.0.1",
        binary: str | None = None,
        **settings: object,
    ) -> None:
        if pool_mode not in ("session", "transaction", "statement"):
            raise ValueError(f"pool_mode must be session, transaction or statement: {pool_mode!r}")
        found = binary or find_pgbouncer()
        if found is None:
            raise PgBouncerError("PgBouncer is not installed (apt-get install pgbouncer)")
        self.binary = found
        self.version = pgbouncer_version(found)
        self.server = server
        self.pool_mode = pool_mode
        self.host = host
        self.port = 0
        self.settings = _DEFAULTS | settings
        self.os_user = os_user_for_server()
        self.base = Path(tempfile.mkdtemp(prefix="pgdblink_safe-pgbouncer-"))
        self._process: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._prepare_directory()
        _LIVE.add(self)

    # -- files ------------------------------------------------------------------------------

    @property
    def config_file(self) -> Path:
        return self.base / "pgbouncer.ini"

    @property
    def logfile(self) -> Path:
        return self.base / "pgbouncer.log"

    @property
    def _output_file(self) -> Path:
        return self.base / "pgbouncer.out"

    def _prepare_directory(self) -> None:
        self.base.chmod(0o700)
        if self.os_user is not None:
            os.chown(self.base, pwd.getpwnam(self.os_user).pw_uid, -1)

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text)
        path.chmod(0o600)
        if self.os_user is not None:
            os.chown(path, pwd.getpwnam(self.os_user).pw_uid, -1)

    def _database_entry(self) -> str:
        """``* = ...``: any database name the client asks for, on the server, same name."""
        info = psycopg.conninfo.conninfo_to_dict(self.server.conninfo())
        parts = {"host": str(info["host"]), "port": str(info["port"])}
        if info.get("password"):
            # The server wants a password: log in as its user with it, whoever the client is.
            parts["user"] = str(info["user"])
            parts["password"] = str(info["password"])
        return " ".join(f"{key}={_libpq_value(value)}" for key, value in parts.items())

    def _write_config(self) -> None:
        user = self.server.user
        self._write(self.base / "userlist.txt", f'"{user}" ""\n')
        lines = [
            "[databases]",
            f"* = {self._database_entry()}",
            "",
            "[pgbouncer]",
            f"listen_addr = {self.host}",
            f"listen_port = {self.port}",
            f"unix_socket_dir = {self.base}",
            "auth_type = trust",
            f"auth_file = {self.base / 'userlist.txt'}",
            f"admin_users = {user}",
            f"stats_users = {user}",
            f"pool_mode = {self.pool_mode}",
            f"logfile = {self.logfile}",
            f"pidfile = {self.base / 'pgbouncer.pid'}",
        ]
        lines += [f"{name} = {_ini_value(value)}" for name, value in self.settings.items()]
        self._write(self.config_file, "\n".join(lines) + "\n")

    # -- process ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process else None

    def start(self) -> Self:
        """Start the process (on a free port the first time, on the same port after that)."""
        if self._closed:
            raise PgBouncerError("this PgBouncer was closed")
        if self.running:
            return self
        fixed = self.port != 0
        for attempt in range(5):
            if not fixed:
                self.port = _free_port(self.host)
            self._write_config()
            position = self.log_position()
            if self._launch():
                return self
            log = self.log_since(position)
            if fixed or "Address already in use" not in log or attempt == 4:
                break
        raise PgBouncerError(f"PgBouncer did not start on port {self.port}:\n{self.log()}")

    def _launch(self) -> bool:
        with self._output_file.open("ab") as out:
            self._process = subprocess.Popen(
                [self.binary, str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                user=self.os_user,
                cwd=self.base,
                start_new_session=True,
            )
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            with contextlib.suppress(psycopg.Error), self._admin_connection(connect_timeout=2):
                return True
            time.sleep(0.02)
        self._kill()
        raise PgBouncerError(
            f"PgBouncer did not accept connections within {_START_TIMEOUT:g}s:\n{self.log()}"
        )

    def stop(self, mode: str = "immediate") -> None:
        """Stop the process: ``immediate`` drops every connection at once, ``safe`` waits.

        ``safe`` (PAUSE then SHUTDOWN) waits for clients to release their server
        connections: in session mode, for them to disconnect. Either way the process is
        killed after a bounded wait. Safe to call when it is not running.
        """
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            if mode == "immediate":
                # 1.23 made SIGTERM wait for clients; SIGQUIT is its immediate shutdown.
                sig = signal.SIGQUIT if self.version >= (1, 23) else signal.SIGTERM
            elif mode == "safe":
                sig = signal.SIGINT
            else:
                raise ValueError(f"mode must be immediate or safe, not {mode!r}")
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._kill()
        self._process = None
        self._wait_port_closed()

    def _kill(self) -> None:
        process = self._process
        if process is not None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(_STOP_TIMEOUT)
        self._process = None

    def _wait_port_closed(self) -> None:
        deadline = time.monotonic() + _STOP_TIMEOUT
        while time.monotonic() < deadline:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.settimeout(1)
                if sock.connect_ex((self.host, self.port)) != 0:
                    return
            time.sleep(0.02)
        raise PgBouncerError(f"port {self.port} still accepts connections after the stop")

    def restart(self, mode: str = "immediate") -> None:
        """Stop the process and start a new one on the same port with the same settings."""
        self.stop(mode)
        self.start()

    def reload(self, **settings: object) -> None:
        """Change settings (written to the file, then RELOAD on the console)."""
        self.settings |= settings
        self._write_config()
        self.admin("RELOAD")

    def close(self) -> None:
        """Stop the process and remove its directory; safe to call twice."""
        if self._closed:
            return
        try:
            self.stop()
        finally:
            self._closed = True
            _LIVE.discard(self)
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- clients ----------------------------------------------------------------------------

    def conninfo(self, dbname: str = "postgres", **options: str) -> str:
        """A connection string reaching ``dbname`` on the server through PgBouncer."""
        return self.server.conninfo(
            dbname, **({"host": self.host, "port": str(self.port)} | options)
        )

    def connect(self, dbname: str = "postgres", autocommit: bool = True) -> psycopg.Connection[Any]:
        """A client connection through PgBouncer."""
        return psycopg.connect(self.conninfo(dbname), autocommit=autocommit, connect_timeout=10)

    def _admin_connection(self, connect_timeout: int = 10) -> psycopg.Connection[Any]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.server.user,
            dbname="pgbouncer",
            autocommit=True,
            connect_timeout=connect_timeout,
        )

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run a command on the admin console; its rows as dicts ([] for commands)."""
        # The console speaks the simple query protocol only, which a ClientCursor uses.
        with (
            self._admin_connection() as conn,
            psycopg.ClientCursor(conn, row_factory=dict_row) as cur,
        ):
            cur.execute(command)
            return cur.fetchall() if cur.description else []

    def servers(self, dbname: str | None = None) -> list[dict[str, Any]]:
        """SHOW SERVERS, optionally only the server connections of ``dbname``."""
        rows = self.admin("SHOW SERVERS")
        return [row for row in rows if dbname is None or row["database"] == dbname]

    def clients(self, dbname: str | None = None) -> list[dict[str, Any]]:
        """SHOW CLIENTS, optionally only the client connections of ``dbname``."""
        rows = self.admin("SHOW CLIENTS")
        return [row for row in rows if dbname is None or row["database"] == dbname]

    # -- log --------------------------------------------------------------------------------

    def log_position(self) -> int:
        return log_position(self.logfile)

    def log_since(self, position: int) -> str:
        return log_since(self.logfile, position)

    def log(self) -> str:
        """The whole log, and what the process wrote to stdout/stderr when not in the log."""
        text = self.log_since(0)
        if self._output_file.exists():
            extra = [
                line
                for line in self._output_file.read_text(errors="replace").splitlines()
                if line not in text
            ]
            if extra:
                text += "\n----- output -----\n" + "\n".join(extra)
        return text
