"""`pgdblink-safe demo`: the failure the toolkit exists for, and the toolkit healing it."""

import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgdblink_safe._servers import Server, start_pair
from pgdblink_safe._sqlquote import literal
from pgdblink_safe.installer import install

Say = Callable[[str], None]

_TABLE = "CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text)"
_INSERT = "INSERT INTO orders (note) VALUES (''{}'')"


def _sql(conn: psycopg.Connection[Any], say: Say, query: str) -> Any:
    """Run ``query``, show it and what it returned (or the error), return the first value."""
    say(f"  {query.strip()}")
    try:
        row = conn.execute(query.encode()).fetchone()
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0]
        say(f"    ERROR (SQLSTATE {exc.sqlstate}): {first_line}")
        return exc
    value = row[0] if row else None
    say(f"    -> {value}")
    return value


def _kill_remote(remote: Server, dbname: str, say: Say) -> None:
    killed = remote.terminate_backends(dbname)
    say(f"  -- pg_terminate_backend() on the remote server: {killed} session(s) killed")


def run_demo(say: Say, progress: Say, provider: str = "embedded") -> bool:
    """Run the demo; True when every step showed what it should."""
    started = time.monotonic()
    progress(f"starting two throwaway PostgreSQL servers ({provider}) ...")
    local, remote = start_pair(provider)
    try:
        progress(f"  started in {time.monotonic() - started:.1f} s")
        local.create_database("demo")
        remote.create_database("orders_db")
        remote.execute(_TABLE, dbname="orders_db")
        target = remote.conninfo("orders_db")
        with local.connect("demo") as conn:
            progress("installing pgdblink_safe into database demo ...")
            install(conn, create_extension=True)
            version = conn.execute("SHOW server_version").fetchone()
            say(f"PostgreSQL {version[0] if version else '?'}; remote table orders on {target}")

            say("\n1. Plain dblink: a nightly job's connection, then the remote backend dies")
            _sql(conn, say, f"SELECT dblink_connect('plain', {literal(target)})")
            _sql(conn, say, f"SELECT dblink_exec('plain', '{_INSERT.format('plain 1')}')")
            _kill_remote(remote, "orders_db", say)
            plain = _sql(conn, say, f"SELECT dblink_exec('plain', '{_INSERT.format('plain 2')}')")
            _sql(conn, say, "SELECT dblink_get_connections()")
            say("  -- the dead connection is still listed; every later call fails the same way")
            _sql(conn, say, "SELECT dblink_disconnect('plain')")

            say("\n2. The same job through pgdblink_safe")
            _sql(
                conn,
                say,
                f"SELECT dblink_safe.ensure_dblink_conn('orders', {literal(target)})",
            )
            _sql(
                conn,
                say,
                f"SELECT dblink_safe.safe_dblink_exec('orders', '{_INSERT.format('safe 1')}')",
            )
            _kill_remote(remote, "orders_db", say)
            healed = _sql(
                conn,
                say,
                f"SELECT dblink_safe.safe_dblink_exec('orders', '{_INSERT.format('safe 2')}')",
            )
            say("  -- the toolkit saw the connection was dead before sending, and reconnected")

            say("\n3. What the session's toolkit connections look like")
            cur = conn.execute(
                "SELECT conn_name, scope, target, uses, reconnects FROM dblink_safe.connections()"
            )
            names = [c.name for c in cur.description or []]
            for row in cur.fetchall():
                say("  " + ", ".join(f"{n}={v}" for n, v in zip(names, row, strict=True)))
            _sql(conn, say, "SELECT dblink_safe.safe_dblink_disconnect_all()")
        rows = remote.execute("SELECT note FROM orders ORDER BY id", dbname="orders_db")
        notes = [r[0] for r in rows]
        say(f"\nRemote rows: {', '.join(notes)} (each applied once)")
        ok = (
            isinstance(plain, psycopg.Error)
            and (plain.sqlstate or "").startswith("08")
            and healed == "INSERT 0 1"
            and notes == ["plain 1", "safe 1", "safe 2"]
        )
        return ok
    finally:
        progress("stopping the servers ...")
        local.stop()
        remote.stop()
        progress(f"done in {time.monotonic() - started:.1f} s")
