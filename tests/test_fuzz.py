"""Generated calls against a live server: each ends in success or a documented SQLSTATE."""

from typing import Any, LiteralString

import psycopg
import pytest
from calls import Conn, wrapper
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from servers import Server

import pgdblink_safe

SECRET = "Fuzz-s3cret-9f2e"
CALLS = 520

#: The toolkit's own answers, and the remote errors the generated statements can cause.
DOCUMENTED = {
    "22004",  # a NULL where a value is required
    "22023",  # a value out of range or malformed
    "08003",  # no such connection
    "08001",  # could not connect (unreachable, refused, bad connection string)
    "08006",  # broke inside an open remote transaction
    "08007",  # lost after sending: outcome unknown
    "57014",  # per-call timeout
    "25001",  # resolve => true inside an open remote transaction
    "0A000",  # resolve => true refuses a statement that ends its own transaction
    "22012",  # remote: division by zero
    "42601",  # remote: syntax error
    "25P02",  # remote: a failed remote transaction refuses statements until it ends
    "2F003",  # dblink_exec: a statement that returns rows belongs in safe_dblink_query
    "42804",  # safe_dblink_query: the remote result does not match row_type ...
    "22P02",  # ... or a remote value does not convert to it
}

STATEMENTS = [
    "INSERT INTO items (note) VALUES ('fuzz')",
    "SELECT 1",
    "SELECT 1/0",
    "not sql at all",
    "",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SELECT pg_sleep(0.2)",
    None,
]
INTERVALS = [None, "-1 s", "0", "50 milliseconds", "1 s", "2 hours", "1000 years"]


def _names() -> st.SearchStrategy[str | None]:
    fixed = ["r", "s", "R", "", "  ", "a" * 64, "é" * 32, "q'u\"o;te$$", None]
    # NUL and lone surrogates cannot travel in a PostgreSQL text value; the client refuses them.
    return st.one_of(
        st.sampled_from(fixed),
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
            max_size=70,
        ),
    )


@pytest.fixture
def fuzzed(conn: Conn) -> Conn:
    # Short budgets keep an unreachable target from costing seconds per call.
    pgdblink_safe.install(
        conn,
        pgdblink_safe.Settings(
            max_attempts=2,
            retry_budget_ms=200,
            backoff_base_ms=5,
            backoff_max_ms=20,
            connect_timeout_s=2,
        ),
    )
    return conn


def test_generated_calls_end_in_success_or_a_documented_sqlstate(
    fuzzed: Conn, remote: Server, remote_db: str
) -> None:
    good = remote.conninfo(remote_db, password=SECRET)
    targets = [
        good,
        remote.conninfo(remote_db),
        remote.conninfo(remote_db, port="1", password=SECRET),
        f"host={remote.host} password='{SECRET} port=",
        good + " no_such_option=1",
        "no_such_foreign_server",
        f"host={remote.host} dbname='a;b$$c' password={SECRET}",
        "'; DROP TABLE items; --",
        "",
        " ",
        None,
    ]
    notices: list[str] = []
    fuzzed.add_notice_handler(lambda d: notices.append(str(d)))
    outcomes: dict[str, int] = {}

    call = st.one_of(
        st.tuples(
            st.just("ensure"),
            _names(),
            st.sampled_from(targets),
            st.fixed_dictionaries(
                {},
                optional={
                    "max_lifetime": st.sampled_from(INTERVALS),
                    "max_idle": st.sampled_from(INTERVALS),
                    "validation_window": st.sampled_from(INTERVALS),
                    "max_attempts": st.sampled_from([None, -1, 0, 1, 2, 1000]),
                    "retry_budget": st.sampled_from(INTERVALS),
                    "scope": st.sampled_from([None, "session", "transaction", "bogus"]),
                    "remote_tx": st.sampled_from([None, True, False]),
                },
            ),
        ),
        st.tuples(
            st.sampled_from(["exec", "query"]),
            _names(),
            st.sampled_from(STATEMENTS),
            st.fixed_dictionaries(
                {},
                optional={
                    "idempotent": st.sampled_from([None, True, False]),
                    "timeout": st.sampled_from(INTERVALS),
                    "validation_window": st.sampled_from(INTERVALS),
                    "max_attempts": st.sampled_from([None, -1, 0, 1, 2, 1000]),
                    "retry_budget": st.sampled_from(INTERVALS),
                },
            ),
        ),
        st.tuples(st.just("exec_resolve"), _names(), st.sampled_from(STATEMENTS), st.just({})),
        st.tuples(st.just("disconnect"), _names(), st.just(None), st.just({})),
    )

    def run(kind: str, name: str | None, arg: str | None, options: dict[str, Any]) -> None:
        casts: dict[str, LiteralString] = {
            "max_attempts": "integer",
            "idempotent": "boolean",
            "remote_tx": "boolean",
            "scope": "text",
        }
        extra = {
            key: sql.SQL("{}::{}").format(sql.Placeholder(key), sql.SQL(casts.get(key, "interval")))
            for key in options
        }
        params: dict[str, Any] = {"name": name, "arg": arg} | options
        name_param, arg_param = sql.Placeholder("name"), sql.Placeholder("arg")
        queries: dict[str, str | sql.Composed] = {
            "ensure": sql.SQL("SELECT {}").format(
                wrapper("ensure_dblink_conn", name_param, arg_param, **extra)
            ),
            "exec": sql.SQL("SELECT {}").format(
                wrapper("safe_dblink_exec", name_param, arg_param, **extra)
            ),
            "exec_resolve": "SELECT dblink_safe.safe_dblink_exec(%(name)s, %(arg)s, "
            "resolve => true, timeout => interval '2 s')",
            "query": sql.SQL("SELECT count(*) FROM {}").format(
                wrapper(
                    "safe_dblink_query", name_param, arg_param, sql.SQL("NULL::integer"), **extra
                )
            ),
            "disconnect": "SELECT dblink_safe.safe_dblink_disconnect(%(name)s)",
        }
        try:
            fuzzed.execute(queries[kind], params)
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except psycopg.Error as err:
            state = err.sqlstate or "(none)"
            outcomes[state] = outcomes.get(state, 0) + 1
            assert state in DOCUMENTED, (kind, name, arg, options, state, str(err))
            for part in (
                str(err),
                err.diag.message_detail,
                err.diag.message_hint,
                err.diag.context,
            ):
                assert SECRET not in (part or ""), (kind, name, arg, part)
        assert not any(SECRET in n for n in notices)
        # Every dblink connection of this session is one the toolkit lists.
        row = fuzzed.execute(
            "SELECT COALESCE(public.dblink_get_connections(), '{}'), "
            "ARRAY(SELECT conn_name FROM dblink_safe.connections() WHERE is_open)"
        ).fetchone()
        assert row is not None
        assert set(row[0]) <= set(row[1]), (kind, name, arg, options, row)
        assert SECRET not in repr(
            fuzzed.execute("SELECT * FROM dblink_safe.connections()").fetchall()
        )

    @settings(
        max_examples=CALLS // 2,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(st.lists(call, min_size=2, max_size=3))
    def sequence(calls: list[tuple[str, str | None, str | None, dict[str, Any]]]) -> None:
        for kind, name, arg, options in calls:
            run(kind, name, arg, options)

    sequence()
    total = sum(outcomes.values())
    print(f"generated calls: {total}; outcomes: {dict(sorted(outcomes.items()))}")
    assert total >= 500
    # The generator reached both ends: successes and toolkit errors.
    assert outcomes.get("ok", 0) > 20
    assert outcomes.get("22023", 0) > 20 and outcomes.get("22004", 0) > 5
