"""The exceptions pgdblink_safe raises."""


class PgDblinkSafeError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigurationError(PgDblinkSafeError):
    """A setting passed to the generator or installer is not acceptable."""


class InstallError(PgDblinkSafeError):
    """The database is not in a state the installer can work with."""


class DblinkMissingError(InstallError):
    """The dblink extension is not installed in the target database."""


class ChecksumMismatchError(InstallError):
    """An applied migration no longer matches what this package renders."""


class LockTimeoutError(InstallError):
    """Another installer held the lock for longer than the allowed wait."""


class NotInstalledError(InstallError):
    """The toolkit is not installed in the schema to benchmark."""


class BenchError(PgDblinkSafeError):
    """The benchmark cannot run on this connection, or its measurement went wrong."""


class ThrowawayServerError(PgDblinkSafeError):
    """A throwaway server (the demo's) could not be started, controlled or stopped."""
