"""Keep passwords out of what the CLI prints."""

import os
import re

import psycopg

_SECRET_PATTERNS = (
    re.compile(r"password\s*=\s*'((?:[^'\\]|\\.)*)'?", re.IGNORECASE),
    re.compile(r"password\s*=\s*([^\s']+)", re.IGNORECASE),
    re.compile(r"^[a-z]+://[^:/@?]*:([^@/?]*)@", re.IGNORECASE),
    re.compile(r"[?&]password=([^&]*)", re.IGNORECASE),
)


def secrets(dsn: str) -> list[str]:
    """Every password that ``dsn`` or the environment could hand to libpq."""
    found = [m.group(1) for pattern in _SECRET_PATTERNS for m in pattern.finditer(dsn)]
    try:
        parsed = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        parsed = {}
    if parsed.get("password"):
        found.append(str(parsed["password"]))
    if os.environ.get("PGPASSWORD"):
        found.append(os.environ["PGPASSWORD"])
    return [s for s in found if s]


def scrub(message: str, dsn: str) -> str:
    """``message`` with each password of ``dsn``, and each word of one, masked."""
    for secret in sorted(secrets(dsn), key=len, reverse=True):
        message = message.replace(secret, "********")
        for piece in re.split(r"[\s'\\]+", secret):
            if len(piece) >= 2:
                message = message.replace(piece, "********")
    return message
