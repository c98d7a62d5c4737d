"""The configuration a rendering of the PL/pgSQL library is made for."""

import hashlib
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from pgdblink_safe.errors import ConfigurationError

_GUC_PART = re.compile(r"[a-z_][a-z0-9_]*\Z")


@dataclass(frozen=True)
class Settings:
    """Everything a rendering depends on; the defaults are the checked-in migrations'."""

    #: Schema that holds the toolkit's functions and its bookkeeping table.
    schema: str = "dblink_safe"
    #: Schema the dblink extension lives in (the installer looks it up).
    dblink_schema: str = "public"
    #: A connection idle for longer than this is proved alive by a round trip before use.
    validation_window_ms: int = 1000
    #: libpq options added to connection-string targets unless the caller set them.
    connect_timeout_s: int = 10
    keepalives_idle_s: int = 30
    keepalives_interval_s: int = 10
    keepalives_count: int = 3
    tcp_user_timeout_ms: int = 60000
    #: Reconnect attempts, and the time they may take, before a call gives up (08001).
    max_attempts: int = 5
    retry_budget_ms: int = 10000
    #: Exponential backoff between attempts: first wait and cap (full jitter below the cap).
    backoff_base_ms: int = 50
    backoff_max_ms: int = 2000
    #: How long a commit whose reply was lost may stay "in progress" before it is 08007.
    resolve_wait_ms: int = 5000
    #: Recycle a connection older than this (0 = never), less up to 10 % jitter.
    max_lifetime_ms: int = 0
    #: Recycle a connection idle for longer than this instead of probing it (0 = never).
    max_idle_ms: int = 0
    #: Backstop for remote_tx: the remote ends a transaction left idle this long (its
    #: idle_in_transaction_session_timeout), so a rolled-back local transaction cannot hold
    #: remote locks longer than this even when no later toolkit call closes its connection.
    remote_tx_idle_timeout_ms: int = 30000
    #: How long the remote COMMIT of remote_tx may take at local commit before its outcome is
    #: resolved with pg_xact_status.
    remote_commit_timeout_ms: int = 30000
    #: The foreign server autonomous_exec and autonomous_query reach this database through
    #: (a user mapping per role holds its password); empty: this server's own socket and
    #: port, which only roles that may connect without a password can use.
    autonomous_server: str = ""

    def __post_init__(self) -> None:
        for name in ("schema", "dblink_schema"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or "\x00" in value:
                raise ConfigurationError(f"{name} must be a non-empty schema name, not {value!r}")
            if len(value.encode()) > 63:
                raise ConfigurationError(f"{name} {value!r} is longer than 63 bytes")
        if self.schema in ("public", "information_schema") or self.schema.startswith("pg_"):
            raise ConfigurationError(
                f"schema {self.schema!r} is not a dedicated schema: "
                "the toolkit needs one of its own"
            )
        if (
            not isinstance(self.autonomous_server, str)
            or "\x00" in self.autonomous_server
            or len(self.autonomous_server.encode()) > 63
            or (self.autonomous_server and not self.autonomous_server.strip())
        ):
            raise ConfigurationError(
                "autonomous_server must be a foreign server name of at most 63 bytes, "
                f"or empty, not {self.autonomous_server!r}"
            )
        limits = {
            "validation_window_ms": (0, 86_400_000),
            "connect_timeout_s": (2, 3600),
            "keepalives_idle_s": (1, 86_400),
            "keepalives_interval_s": (1, 3600),
            "keepalives_count": (1, 100),
            "tcp_user_timeout_ms": (1000, 3_600_000),
            "max_attempts": (1, 100),
            "retry_budget_ms": (0, 3_600_000),
            "backoff_base_ms": (1, 60_000),
            "backoff_max_ms": (1, 600_000),
            "resolve_wait_ms": (0, 600_000),
            "max_lifetime_ms": (0, 31_536_000_000),
            "max_idle_ms": (0, 31_536_000_000),
            "remote_tx_idle_timeout_ms": (100, 86_400_000),
            "remote_commit_timeout_ms": (100, 3_600_000),
        }
        for name, (low, high) in limits.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigurationError(f"{name} must be a whole number from {low} to {high}")

    @property
    def guc_prefix(self) -> str:
        """Prefix of the session settings that hold per-connection state."""
        if _GUC_PART.match(self.schema):
            return self.schema
        return "pgdblink_safe_" + hashlib.sha256(self.schema.encode()).hexdigest()[:12]

    @property
    def tx_table(self) -> str:
        """The session's temporary table whose deferred trigger closes connections at commit."""
        return "pgdblink_safe_tx_" + hashlib.sha256(self.schema.encode()).hexdigest()[:12]

    @property
    def conninfo_defaults(self) -> str:
        """libpq keywords put before a caller's connection string (the caller's win)."""
        return self._conninfo_defaults(self.tcp_user_timeout_ms)

    @property
    def conninfo_defaults_16(self) -> str:
        """The defaults on PostgreSQL 16 and later, where dblink's connect ignores
        connect_timeout: tcp_user_timeout, capped at connect_timeout, bounds the handshake."""
        return self._conninfo_defaults(min(self.tcp_user_timeout_ms, self.connect_timeout_s * 1000))

    def _conninfo_defaults(self, tcp_user_timeout_ms: int) -> str:
        return (
            f"connect_timeout={self.connect_timeout_s} keepalives=1"
            f" keepalives_idle={self.keepalives_idle_s}"
            f" keepalives_interval={self.keepalives_interval_s}"
            f" keepalives_count={self.keepalives_count}"
            f" tcp_user_timeout={tcp_user_timeout_ms}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Settings":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigurationError(f"unknown setting(s): {', '.join(unknown)}")
        return cls(**values)
