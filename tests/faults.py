"""Helpers for fault tests: work on a background session, and killing a remote backend."""

import threading
from collections.abc import Callable
from typing import Any

import psycopg
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


def kill_when(remote: Server, remote_db: str, condition: str) -> None:
    """Terminate the remote backend of ``remote_db`` as soon as it matches ``condition``."""
    pid = wait_for(
        lambda: remote.execute(
            "SELECT pid FROM pg_stat_activity "
            f"WHERE datname = '{remote_db}' AND pid <> pg_backend_pid() AND {condition}"
        ),
        15,
        f"a remote backend with {condition}",
    )[0][0]
    remote.execute(f"SELECT pg_terminate_backend({pid})")
