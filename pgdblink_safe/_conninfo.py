"""Keep passwords out of what the CLI prints, by the same rules as the SQL ``_scrub``."""

import os
import re
from urllib.parse import unquote

import psycopg

MASK = "********"

#: libpq's password fields (dispchar "*") and libpq 18's SCRAM keys (a ClientKey
#: authenticates like the password); passfile, sslkey and sslcert name files.
SECRET_KEYWORDS = frozenset(
    {"password", "sslpassword", "oauth_client_secret", "scram_client_key", "scram_server_key"}
)

_URI = re.compile(r"postgres(?:ql)?://")


def _parse(dsn: str) -> dict[str, object] | None:
    """libpq's own parse of ``dsn`` (PQconninfoParse), None if libpq rejects it."""
    try:
        return dict(psycopg.conninfo.conninfo_to_dict(dsn))
    except (psycopg.Error, UnicodeDecodeError):
        return None


def secrets(parsed: dict[str, object]) -> list[str]:
    """The values of the secret keywords of a parse, and ``PGPASSWORD``, longest first."""
    found = [os.environ.get("PGPASSWORD", "")]
    for keyword in SECRET_KEYWORDS:
        value = str(parsed.get(keyword) or "")
        # libpq 18 trims blanks around URI components, older versions keep them
        found += [value, value.strip(" ")]
    return sorted({s for s in found if s}, key=len, reverse=True)


def split_password(dsn: str) -> str | None:
    """What was probably meant as the password of a URI whose unencoded ``@`` or ``/`` libpq
    split, as the SQL ``_conninfo_scan`` finds it; None for any other string.

    libpq ends the userinfo at the first ``@`` (none at all when a ``/`` comes first) and
    reads the rest as host, port and dbname, which errors then quote.
    """
    prefix = _URI.match(dsn)
    if prefix is None:
        return None
    rest = dsn[prefix.end() :]
    userinfo = re.match(r"[^@/]*@", rest)
    start = userinfo.end() if userinfo else 0
    region = rest[start:].split("?", 1)[0]
    if "@" not in region:
        return None
    last_at = start + region.rindex("@")
    colon = rest.find(":")
    return rest[colon + 1 : last_at] if 0 <= colon < last_at else None


def mask_common(message: str, hay: str, min_len: int = 3) -> str:
    """``message`` with every run of ``min_len`` or more characters that also occurs in
    ``hay`` masked, leftmost and longest first."""
    if len(hay) < min_len:
        return message
    out: list[str] = []
    i, n = 0, len(message)
    while i < n:
        if i + min_len <= n and message[i : i + min_len] in hay:
            end = i + min_len
            while end < n and message[i : end + 1] in hay:
                end += 1
            out.append(MASK)
            i = end
        else:
            out.append(message[i])
            i += 1
    return "".join(out)


def scrub(message: str, dsn: str) -> str:
    """``message`` with the secrets of ``dsn`` (and ``PGPASSWORD``) masked.

    Secrets are taken by keyword from libpq's own parse. When libpq rejects ``dsn`` its error
    quotes fragments of it and where the password is cannot be known: every run of 3 or more
    characters the message shares with ``dsn``, as written or percent-decoded, is masked.
    """
    parsed = _parse(dsn)
    for secret in secrets(parsed or {}):
        message = message.replace(secret, MASK)
    if parsed is None:
        return mask_common(mask_common(message, dsn), unquote(dsn))
    suspect = split_password(dsn)
    if suspect:
        message = mask_common(mask_common(message, suspect), unquote(suspect))
    dbname = str(parsed.get("dbname") or "")
    if "=" in dbname or _URI.match(dbname):
        # libpq does not expand a dbname that is itself a connection string here, and the
        # server quotes it back ("database ... does not exist").
        message = scrub(message, dbname)
    return message
