"""Helpers for fault tests: work on a background session, finding and killing remote backends."""

import threading
from collections.abc import Callable
from typing import Any, LiteralString

import psycopg
from psycopg import sql
from servers import Server, wait_for

Conn = psycopg.Connection[Any]


def in_background(local: Server, local_db: str, work: Callable[[Conn], Any]) -> dict[str, Any]:
    """Run ``work`` in its own session on a thread; the dict gets 'result' or 'error'."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        with local.connect(local_db) as other:
            try:
                outcome["result"] = work(other)
            except psycopg.Error as exc:
                outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    outcome["thread"] = thread
    return outcome


def finish(outcome: dict[str, Any]) -> dict[str, Any]:
    outcome["thread"].join(60)
    assert not outcome["thread"].is_alive()
    return outcome


def backend_when(remote: Server, remote_db: str, condition: LiteralString) -> int:
    """The remote backend of ``remote_db`` that matches ``condition`` (SQL), once one does."""
    query = sql.SQL(
        "SELECT pid FROM pg_stat_activity WHERE datname = {} AND pid <> pg_backend_pid() AND {}"
    ).format(sql.Literal(remote_db), sql.SQL(condition))
    return int(
        wait_for(lambda: remote.execute(query), 15, f"a remote backend with {condition}")[0][0]
    )


def kill_when(remote: Server, remote_db: str, condition: LiteralString) -> None:
    """Terminate the remote backend of ``remote_db`` as soon as it matches ``condition``."""
    pid = backend_when(remote, remote_db, condition)
    remote.execute(sql.SQL("SELECT pg_terminate_backend({})").format(sql.Literal(pid)))


def running(server: Server, dbname: str, marker: str) -> list[int]:
    """Backends of ``dbname`` running a statement that contains ``marker``."""
    query = sql.SQL(
        "SELECT pid FROM pg_stat_activity WHERE datname = {} AND state = 'active' "
        "AND pid <> pg_backend_pid() AND strpos(query, {}) > 0"
    ).format(sql.Literal(dbname), sql.Literal(marker))
    return [row[0] for row in server.execute(query)]


def on_database(command: LiteralString, dbname: str) -> str:
    """A PgBouncer console command for one database, its name quoted: ``KILL "remote_1"``."""
    return sql.SQL("{} {}").format(sql.SQL(command), sql.Identifier(dbname)).as_string()
