"""Locate the SQL templates and migrations, in a source checkout or an installed wheel."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(kind: str) -> Path:
    """Return the ``sql`` or ``migrations`` folder that ships with this package."""
    for candidate in (_PACKAGE / "_data" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"the {kind}/ folder of pgdblink_safe is missing next to {_PACKAGE}: reinstall the package"
    )
