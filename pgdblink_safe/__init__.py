"""pgdblink_safe: safe dblink wrappers for PL/pgSQL, rendered and installed from Python."""

from importlib.metadata import PackageNotFoundError, version

from pgdblink_safe.errors import (
    ChecksumMismatchError,
    ConfigurationError,
    DblinkMissingError,
    InstallError,
    LockTimeoutError,
    PgDblinkSafeError,
)
from pgdblink_safe.generator import render_migrations, render_script
from pgdblink_safe.installer import Status, install, status, uninstall
from pgdblink_safe.settings import Settings

try:
    __version__ = version("pgdblink-safe")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "ChecksumMismatchError",
    "ConfigurationError",
    "DblinkMissingError",
    "InstallError",
    "LockTimeoutError",
    "PgDblinkSafeError",
    "Settings",
    "Status",
    "__version__",
    "install",
    "render_migrations",
    "render_script",
    "status",
    "uninstall",
]
