"""Calls to the wrappers from tests (one row, one value, options by name), and foreign servers."""

import time
from collections.abc import Callable
from typing import Any, LiteralString

import psycopg
import pytest
from psycopg import sql
from servers import Server

Conn = psycopg.Connection[Any]


def scalar(conn: Conn, query: str | sql.Composed, *params: object) -> Any:
    row = conn.execute(query, params or None).fetchone()
    assert row is not None
    return row[0]


def wrapper(function: str, *args: sql.Composable, **options: sql.Composable) -> sql.Composed:
    """``dblink_safe.function(arg, ..., option => value, ...)``, each argument given as SQL."""
    named = [
        sql.SQL("{} => {}").format(sql.Identifier(option), value)
        for option, value in options.items()
    ]
    return sql.SQL("{}({})").format(
        sql.Identifier("dblink_safe", function), sql.SQL(", ").join([*args, *named])
    )


def _placeholders(options: dict[str, object]) -> dict[str, sql.Composable]:
    return dict.fromkeys(options, sql.Placeholder())


def _call(
    conn: Conn, function: str, name: str | None, text: str, options: dict[str, object]
) -> str:
    call = wrapper(function, sql.Placeholder(), sql.Placeholder(), **_placeholders(options))
    return str(scalar(conn, sql.SQL("SELECT {}").format(call), name, text, *options.values()))


def ensure(conn: Conn, target: str, name: str | None = "r", **options: object) -> str:
    """``ensure_dblink_conn(name, target, option => value, ...)``."""
    return _call(conn, "ensure_dblink_conn", name, target, options)


def exec_(conn: Conn, statement: str, name: str | None = "r", **options: object) -> str:
    """``safe_dblink_exec(name, statement, option => value, ...)``."""
    return _call(conn, "safe_dblink_exec", name, statement, options)


def insert(conn: Conn, note: str, name: str = "r", **options: object) -> str:
    """``exec_`` of ``INSERT INTO items (note) VALUES (note)``, the note quoted as a literal."""
    statement = sql.SQL("INSERT INTO items (note) VALUES ({})").format(sql.Literal(note))
    return exec_(conn, statement.as_string(conn), name, **options)


def query_value(
    conn: Conn, statement: str, row_type: LiteralString, name: str = "r", **options: object
) -> Any:
    """The first value of ``safe_dblink_query(name, statement, NULL::row_type, ...)``."""
    call = wrapper(
        "safe_dblink_query",
        sql.Placeholder(),
        sql.Placeholder(),
        sql.SQL("NULL::{}").format(sql.SQL(row_type)),
        **_placeholders(options),
    )
    query = sql.SQL("SELECT * FROM {}").format(call)
    return scalar(conn, query, name, statement, *options.values())


def error_of(call: Callable[..., object], *args: object, **kwargs: object) -> psycopg.Error:
    """The error that ``call(*args, **kwargs)`` raises."""
    with pytest.raises(psycopg.Error) as info:
        call(*args, **kwargs)
    return info.value


def timed(
    call: Callable[..., Any], *args: object, **kwargs: object
) -> tuple[float, Any, psycopg.Error | None]:
    """Run ``call``; how long it took, what it returned, and the error it raised if any."""
    started = time.monotonic()
    try:
        result = call(*args, **kwargs)
    except psycopg.Error as exc:
        return time.monotonic() - started, None, exc
    return time.monotonic() - started, result, None


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
    return int(query_value(conn, "SELECT pg_backend_pid()", "int", name))


def rows(server: Server, dbname: str, note: str) -> int:
    """Rows of ``items`` with this note on ``server``."""
    query = sql.SQL("SELECT count(*) FROM items WHERE note = {}").format(sql.Literal(note))
    return int(server.execute(query, dbname)[0][0])


def foreign_server(conn: Conn, name: str, server: Server, dbname: str, **options: str) -> None:
    """A dblink foreign server ``name`` for ``dbname`` on ``server``, with further options."""
    settings = {"host": server.host, "port": str(server.port), "dbname": dbname, **options}
    conn.execute(
        sql.SQL("CREATE SERVER {} FOREIGN DATA WRAPPER dblink_fdw OPTIONS ({})").format(
            sql.Identifier(name), _options(settings)
        )
    )


def user_mapping(conn: Conn, server: str, role: str | None = None, **options: str) -> None:
    """A user mapping on foreign server ``server`` for ``role`` (by default the current user)."""
    who = sql.SQL("CURRENT_USER") if role is None else sql.Identifier(role)
    conn.execute(
        sql.SQL("CREATE USER MAPPING FOR {} SERVER {} OPTIONS ({})").format(
            who, sql.Identifier(server), _options(options)
        )
    )


def _options(options: dict[str, str]) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(option), sql.Literal(value))
        for option, value in options.items()
    )
