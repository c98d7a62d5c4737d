"""Calls to the wrappers from tests: one row, one value, named options passed by name."""

from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from servers import Server

Conn = psycopg.Connection[Any]


def scalar(conn: Conn, query: str, *params: object) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def _call(conn: Conn, function: str, name: str, text: str, options: dict[str, object]) -> str:
    extra = "".join(f", {option} => %s" for option in options)
    return str(
        scalar(
            conn,
            f"SELECT dblink_safe.{function}(%s, %s{extra})",
            name,
            text,
            *options.values(),
        )
    )


def ensure(conn: Conn, target: str, name: str = "r", **options: object) -> str:
    """``ensure_dblink_conn(name, target, option => value, ...)``."""
    return _call(conn, "ensure_dblink_conn", name, target, options)


def exec_(conn: Conn, statement: str, name: str = "r", **options: object) -> str:
    """``safe_dblink_exec(name, statement, option => value, ...)``."""
    return _call(conn, "safe_dblink_exec", name, statement, options)


def error_of(call: Callable[[], object]) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        call()
    return info.value


def listing(conn: Conn, name: str = "r") -> dict[str, Any]:
    """The row of ``connections()`` for ``name``, as a dict."""
    cur = conn.execute("SELECT * FROM dblink_safe.connections() WHERE conn_name = %s", (name,))
    row = cur.fetchone()
    assert row is not None and cur.description is not None
    return {col.name: value for col, value in zip(cur.description, row, strict=True)}


def raw_remote_pid(conn: Conn, name: str = "r") -> int:
    """The remote backend of the dblink connection as it is, asked with plain dblink."""
    return int(
        scalar(conn, "SELECT p FROM public.dblink(%s, 'SELECT pg_backend_pid()') AS t(p int)", name)
    )


def remote_pid(conn: Conn, name: str = "r") -> int:
    """The remote backend the connection's next statement runs on, asked through the wrapper."""
    return int(
        scalar(
            conn,
            "SELECT * FROM dblink_safe.safe_dblink_query(%s, 'SELECT pg_backend_pid()', NULL::int)",
            name,
        )
    )


def rows(server: Server, dbname: str, note: str) -> int:
    """Rows of ``items`` with this note on ``server``."""
    query = sql.SQL("SELECT count(*) FROM items WHERE note = {}").format(sql.Literal(note))
    return int(server.execute(query, dbname)[0][0])
