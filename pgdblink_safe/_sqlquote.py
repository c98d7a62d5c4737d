"""Quoting of identifiers and literals for rendered SQL."""

import re

from pgdblink_safe._keywords import NEEDS_QUOTING

_BARE = re.compile(r"[a-z_][a-z0-9_]*\Z")


def ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's quote_ident() does."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an SQL identifier must be a non-empty string, not {name!r}")
    if "\x00" in name:
        raise ValueError("an SQL identifier cannot contain a NUL character")
    if _BARE.match(name) and name not in NEEDS_QUOTING:
        return name
    return '"' + name.replace('"', '""') + '"'


def literal(value: object) -> str:
    """Render a Python value as an SQL literal (text, number, boolean or NULL)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("an SQL literal cannot contain a NUL character")
        quoted = "'" + value.replace("'", "''") + "'"
        # E'' keeps the meaning of backslashes whatever standard_conforming_strings says.
        if "\\" in value:
            return "E" + quoted.replace("\\", "\\\\")
        return quoted
    raise TypeError(f"cannot render {type(value).__name__} as an SQL literal")
