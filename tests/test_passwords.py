"""Passwords in every shape libpq accepts: they authenticate, and no error path shows them."""

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
import pytest
from calls import Conn, ensure, error_of, exec_, scalar
from click.testing import CliRunner
from psycopg import sql
from servers import LocalCluster, Server, wait_for

from pgdblink_safe import Settings
from pgdblink_safe.cli import cli

FUNCTIONS = Path(__file__).resolve().parent.parent / "sql" / "functions"
_counter = iter(range(1_000_000))


class Where(NamedTuple):
    """Where a connection string points: a role on the remote, its address, its database."""

    user: str
    host: str
    port: str
    dbname: str
    superuser: str


Spell = Callable[[Where], str]


def kv(written: str) -> Spell:
    """A key/value string whose password is ``written`` exactly as given."""
    return lambda w: (
        f"host={w.host} port={w.port} dbname={w.dbname} user={w.user} password={written}"
    )


def uri(written: str, query: str = "") -> Spell:
    """A URI whose userinfo password is ``written`` exactly as given."""
    return lambda w: f"postgresql://{w.user}:{written}@{w.host}:{w.port}/{w.dbname}{query}"


def quoted(password: str) -> str:
    return "'" + password.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class Shape:
    """A password and a connection string that holds it as a user would write it.

    ``kind``: ``ok`` libpq reads the password as meant and the string authenticates;
    ``split`` libpq accepts the string but not the password as meant (an unencoded ``@`` or
    ``/`` in a URI, a dbname holding a URI); ``malformed`` libpq rejects the string. The role
    gets the password in every case; where the string cannot authenticate, a key/value string
    with the password quoted proves that it is real.
    """

    id: str
    password: str
    spell: Spell
    kind: str = "ok"
    #: Other secrets in the string (a password given twice, overridden by the query).
    also: tuple[str, ...] = field(default=())


SHAPES = [
    # key/value form
    Shape("kv-plain", "Zq7xK9wJ", kv("Zq7xK9wJ")),
    Shape("kv-backslash-escaped-blank", "Zq x7 Kw", kv("Zq\\ x7\\ Kw")),
    Shape("kv-quoted-blank", "Qm x4 Jw", kv("'Qm x4 Jw'")),
    Shape("kv-quoted-escapes", "Q'z\\Yv9", kv("'Q\\'z\\\\Yv9'")),
    Shape("kv-quote-inside-unquoted", "ab'Yq\"Xz", kv("ab'Yq\"Xz")),
    Shape("kv-equals-in-value", "Jx=Vb=Kq9", kv("Jx=Vb=Kq9")),
    Shape("kv-unicode", "Ünï©ødé✓Żq", kv("'Ünï©ødé✓Żq'")),
    Shape("kv-value-like-a-pair", "Kz gsslib=Wq9", kv("'Kz gsslib=Wq9'")),
    Shape("kv-leading-escaped-quote", "'Qz9Wv", kv("\\'Qz9Wv")),
    Shape("kv-every-uri-special", "@/?#%:&=,[]\\' Yz", kv("'@/?#%:&=,[]\\\\\\' Yz'")),
    Shape("kv-trailing-escaped-backslash", "Yz9\\", kv("Yz9\\\\")),
    Shape("kv-ends-in-v", "Hq4Tv", kv("Hq4Tv")),
    Shape(
        "kv-blanks-around-equals",
        "Wv#8 %Qz",
        lambda w: (
            f"host = {w.host}\tport =\n{w.port}  dbname= {w.dbname} user ={w.user} "
            "password = 'Wv#8 %Qz'"
        ),
    ),
    Shape(
        "kv-quoted-then-keyword",
        "Gq8Mv",
        lambda w: f"host={w.host} port={w.port} dbname={w.dbname} password='Gq8Mv'user={w.user}",
    ),
    Shape("kv-password-twice", "Nw9Zk", kv("Xo4Lq password=Nw9Zk"), also=("Xo4Lq",)),
    Shape(
        "kv-sslpassword-too",
        "Vr3Yx",
        kv("Vr3Yx sslmode=disable sslpassword=Kt5Qh"),
        also=("Kt5Qh",),
    ),
    # URI form
    Shape("uri-plain", "Hj5kW8wZ", uri("Hj5kW8wZ")),
    Shape("uri-question-mark", "Qz?Wv8Jk", uri("Qz?Wv8Jk")),
    Shape("uri-question-mark-and-query", "Rq?Xv7Lm", uri("Rq?Xv7Lm", "?sslmode=disable")),
    Shape("uri-colons", "Qz:Wv:8J", uri("Qz:Wv:8J")),
    Shape("uri-hash-amp-equals", "Qz#W&v=8J", uri("Qz#W&v=8J")),
    Shape("uri-at-slash-encoded", "Kz@Wq/7J", uri("Kz%40Wq%2F7J")),
    Shape("uri-percent-and-encoded-unicode", "Üb%Zq✓", uri("%C3%9Cb%25Zq%E2%9C%93")),
    Shape("uri-raw-unicode", "Ünï✓Zq", uri("Ünï✓Zq")),
    Shape("uri-encoded-blank-and-plus", "Qz Wv+8J", uri("Qz%20Wv+8J")),
    Shape("uri-comma-brackets", "Qz,W[v]8J", uri("Qz,W[v]8J")),
    Shape(
        "uri-password-in-query",
        "Qz&Wv=8J",
        lambda w: f"postgresql://{w.user}@{w.host}:{w.port}/{w.dbname}?password=Qz%26Wv%3D8J",
    ),
    Shape(
        "uri-query-keyword-encoded",
        "Yk7Qv",
        lambda w: f"postgresql://{w.user}@{w.host}:{w.port}/{w.dbname}?pass%77ord=Yk7Qv",
    ),
    Shape("uri-userinfo-overridden", "Nw8Qz", uri("Old9Pw", "?password=Nw8Qz"), also=("Old9Pw",)),
    Shape(
        "uri-multi-host-first-refused",
        "Kx8Wq",
        lambda w: (
            f"postgres://{w.user}:Kx8Wq@{w.host}:1,{w.host}:{w.port}/{w.dbname}?connect_timeout=5"
        ),
    ),
    # libpq accepts these, but splits the password
    Shape("uri-at-unencoded", "Qz@Wv8J", uri("Qz@Wv8J"), "split"),
    Shape("uri-slash-unencoded", "Qz/Wv8J", uri("Qz/Wv8J"), "split"),
    Shape("uri-slash-and-at-unencoded", "Qz/W@v8J", uri("Qz/W@v8J"), "split"),
    Shape(
        "kv-dbname-holding-a-uri",
        "Qd7Wx2",
        lambda w: (
            f"host={w.host} port={w.port} user={w.superuser} "
            f"dbname='postgresql://{w.user}:Qd7Wx2@{w.host}:{w.port}/{w.dbname}'"
        ),
        "split",
    ),
    # libpq rejects these
    Shape(
        "blank-before-uri",
        "Qz9Wv8J",
        lambda w: " " + uri("Qz9Wv8J")(w),
        "malformed",
    ),
    Shape(
        "blank-before-uri-with-query",
        "Jq9Wz8K",
        lambda w: " " + uri("Jq9Wz8K", "?sslmode=disable")(w),
        "malformed",
    ),
    Shape("uri-bare-percent", "Qz%Wv8J", uri("Qz%Wv8J"), "malformed"),
    Shape("uri-percent-00", "Qz%00Wv8J", uri("Qz%00Wv8J"), "malformed"),
    Shape("uri-question-mark-then-slash", "Qz?W/v8J", uri("Qz?W/v8J"), "malformed"),
    Shape("kv-unescaped-blank", "Qz9 Wv8J", kv("Qz9 Wv8J"), "malformed"),
    Shape(
        "kv-unterminated-quote",
        "Hz9Wv8J",
        lambda w: f"user={w.user} password='Hz9Wv8J host={w.host} port={w.port}",
        "malformed",
    ),
    Shape(
        "kv-misspelt-keyword",
        "Mz9Wv8J",
        lambda w: kv("x")(w).replace("password=x", "pasword=Mz9Wv8J"),
        "malformed",
    ),
    Shape("uri-unknown-query-keyword", "Tz9Wv8J", uri("Tz9Wv8J", "?sslmod=disable"), "malformed"),
]


def fragments(secret: str) -> set[str]:
    """The 3-character pieces of ``secret`` (a longer piece holds one of them)."""
    if len(secret) < 3:
        return {secret} if secret else set()
    return {secret[i : i + 3] for i in range(len(secret) - 2)}


def leaks(text: str, secrets: tuple[str, ...]) -> list[str]:
    return sorted(f for s in secrets for f in fragments(s) if f in text)


# --- the remote role and its pg_hba.conf line -------------------------------------------


@pytest.fixture(scope="module")
def scram_group(remote: Server) -> Iterator[str]:
    """A group role whose members must give a scram-sha-256 password over TCP on the remote."""
    if not isinstance(remote, LocalCluster):
        pytest.skip("needs a remote server whose pg_hba.conf the tests can change")
    group = f"pw_scram_{os.getpid()}"
    probe = f"{group}_probe"
    remote.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(group)))
    remote.execute(
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'Probe-Zx7' IN ROLE {}").format(
            sql.Identifier(probe), sql.Identifier(group)
        )
    )
    hba = remote.datadir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all +{group} 127.0.0.1/32 scram-sha-256\n" + original)
    remote.execute("SELECT pg_catalog.pg_reload_conf()")

    def password_required() -> bool:
        # The reload is asynchronous: wait until a wrong password is refused.
        conninfo = psycopg.conninfo.make_conninfo(
            remote.client_conninfo(), user=probe, password="wrong"
        )
        try:
            psycopg.connect(conninfo, connect_timeout=5).close()
        except psycopg.OperationalError as exc:
            return "password authentication failed" in str(exc)
        return False

    try:
        wait_for(password_required, 10, "the remote to require scram passwords")
        yield group
    finally:
        hba.write_text(original)
        remote.execute("SELECT pg_catalog.pg_reload_conf()")
        for role in (probe, group):
            remote.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


@pytest.fixture
def role(remote: Server, scram_group: str) -> Iterator[str]:
    """A login role on the remote that must give a password (set with ``set_password``)."""
    name = f"pw_{os.getpid()}_{next(_counter)}"
    remote.execute(
        sql.SQL("CREATE ROLE {} LOGIN IN ROLE {}").format(
            sql.Identifier(name), sql.Identifier(scram_group)
        )
    )
    yield name
    remote.execute(
        sql.SQL(
            "SELECT pg_catalog.pg_terminate_backend(pid, 10000) FROM pg_catalog.pg_stat_activity "
            "WHERE usename = {}"
        ).format(sql.Literal(name))
    )
    remote.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def set_password(remote: Server, role: str, password: str) -> None:
    remote.execute(
        sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
    )


def cli_output(*args: str) -> str:
    """What ``pgdblink-safe ARGS`` prints, stdout and stderr, for a command that must fail."""
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    return result.output


def diag_texts(err: psycopg.Error) -> list[str]:
    d = err.diag
    return [
        str(err),
        *(part or "" for part in (d.message_primary, d.message_detail, d.message_hint, d.context)),
    ]


@pytest.mark.parametrize("shape", SHAPES, ids=[s.id for s in SHAPES])
def test_password_authenticates_and_no_error_path_shows_it(
    installed: Conn,
    local: Server,
    remote: Server,
    remote_db: str,
    role: str,
    shape: Shape,
) -> None:
    secrets = (shape.password, *shape.also)
    set_password(remote, role, shape.password)
    here = Where(role, remote.host, str(remote.port), remote_db, remote.user)
    start, remote_start = local.log_position(), remote.log_position()
    notices: list[str] = []
    installed.add_notice_handler(
        lambda d: notices.append(f"{d.message_primary} {d.message_detail} {d.message_hint}")
    )

    # The password is real: the string itself authenticates, or (where libpq cannot read
    # the password out of it) the same password in a quoted key/value pair.
    good = shape.spell(here) if shape.kind == "ok" else kv(quoted(shape.password))(here)
    assert ensure(installed, good, "p") == "connected"
    assert exec_(installed, "SET application_name = 'pw'", "p") == "SET"
    who = (
        "SELECT * FROM dblink_safe.safe_dblink_query('p', 'SELECT current_user::text', NULL::text)"
    )
    assert scalar(installed, who) == role

    texts: list[str] = []
    paths = {
        "wrong password": here,
        "unreachable port": here._replace(port="1"),
        "unknown database": here._replace(dbname="no_such_db_pw"),
    }
    for path, where in paths.items():
        target = shape.spell(where)
        if path == "wrong password":
            set_password(remote, role, "Other-Mq4-secret")
        try:
            err = error_of(lambda t=target: ensure(installed, t, "e", max_attempts=1))
            texts.append(cli_output("status", "--dsn", target))
        finally:
            if path == "wrong password":
                set_password(remote, role, shape.password)
        texts += diag_texts(err)
        expected = "22023" if shape.kind == "malformed" else "08001"
        assert err.sqlstate == expected, (path, err.sqlstate, str(err))
        assert err.diag.message_primary == 'could not open dblink connection "e"'
        if shape.kind == "ok" and path == "wrong password":
            assert "password authentication failed" in (err.diag.message_detail or "")
        if shape.kind == "malformed":
            assert (err.diag.message_detail or "").startswith("invalid connection string: ")

    listing = installed.execute("SELECT * FROM dblink_safe.connections()").fetchall()
    assert [row[0] for row in listing] == ["p"]
    assert scalar(installed, "SELECT public.dblink_get_connections()") == ["p"]
    texts += [repr(listing), *notices, local.log_since(start)]
    for text in texts:
        assert not leaks(text, secrets), (leaks(text, secrets), text)
    if shape.kind != "split":
        # (A dbname holding a URI goes to the remote as a database name, which it logs.)
        assert shape.password not in remote.log_since(remote_start)


def test_listing_shows_the_target_rebuilt_with_the_password_masked(
    installed: Conn, remote: Server, remote_db: str
) -> None:
    target = f"postgresql://{remote.user}:Qz?Wv8Jk@{remote.host}:{remote.port}/{remote_db}"
    assert ensure(installed, target) == "connected"
    shown = scalar(installed, "SELECT target FROM dblink_safe.connections()")
    assert shown == (
        f"user={remote.user} password=******** host={remote.host} port={remote.port} "
        f"dbname={remote_db}"
    )


# --- the parser is libpq's --------------------------------------------------------------


def kv_random(rng: random.Random) -> str:
    keys = ["host", "password", "user", "dbname", "port", "requiressl", "sslmode", "options"]
    keys += ["application_name", "password", "bogus", "Password", ""]
    chars = [*"ab=' \t\n\\\"@/?#%:&,[]Üvx1", "\u00a0", "\u2003", "\x0b", "\f"]
    parts = []
    for _ in range(rng.randint(0, 4)):
        value = "".join(rng.choice(chars) for _ in range(rng.randint(0, 8)))
        if rng.random() < 0.2:
            value = "".join("\\" + c if c in " '\\" else c for c in value)
        if rng.random() < 0.4:
            body = value.replace("\\", "\\\\").replace("'", "\\'") if rng.random() < 0.7 else value
            value = "'" + body + rng.choice(["'", "'", "'", ""])
        sep = rng.choice(["=", "=", "=", " = ", "=  ", "\t=", "= ", ""])
        parts.append(rng.choice(keys) + sep + value)
    blank = rng.choice([" ", "  ", "\t", " \n", "\v"])
    return rng.choice(["", " ", "\n"]) + blank.join(parts) + rng.choice(["", "", " ", "\\", "v"])


def uri_random(rng: random.Random) -> str:
    pieces = [*"abcvXYZ019:@/?#&=,[]'\"\\+!$ .~-_Ü✓", "%41", "%2", "%zz", "%00", "%C3%9C"]
    pieces += ["%40", "%2F", "%2C", "%20", "%25", "%FF", "\t", "\n"]

    def text(low: int, high: int) -> str:
        return "".join(rng.choice(pieces) for _ in range(rng.randint(low, high)))

    out = rng.choice(["postgresql://", "postgres://", " postgresql://", "postgresql:/"])
    if rng.random() < 0.7:
        out += text(0, 4) + (":" + text(0, 8) if rng.random() < 0.8 else "") + "@"
    hosts = ["h", "127.0.0.1", "[::1]", "[::1", "[]", "[::1]x", "", "%2Ftmp", "h1 ", " h2"]
    ports = ["5432", "", "1", "x", " 5432", "%35"]
    out += ",".join(
        rng.choice(hosts) + (":" + rng.choice(ports) if rng.random() < 0.5 else "")
        for _ in range(rng.randint(1, 3))
    )
    if rng.random() < 0.7:
        out += "/" + rng.choice(["db", "", "d b", "db ", "a@b", "a/b", "%64b", "d%zz"])
    if rng.random() < 0.6:
        keys = ["password", "sslmode", "ssl", "requiressl", "user", "pass%77ord", "bogus", ""]
        params = [
            rng.choice(keys) + rng.choice(["=", "=", "", "=="]) + text(0, 5)
            for _ in range(rng.randint(0, 3))
        ]
        out += "?" + "&".join(params) + rng.choice(["", "", "&"])
    return out + (text(1, 4) if rng.random() < 0.2 else "")


#: Strings only parsed: what the shapes cannot log in with, and the fuzz.
PARSE_ONLY = [
    "host=h password=''",
    "host=h password= gsslib=Wq9",
    "postgresql://u:@h:5432/db",
    "postgresql://u@h:5432/db?password=",
    "postgresql://h:5432/db?ssl=true&requiressl=0",
    "postgresql://u:Vq2Zk@h,h/db",
    "postgresql://u:Vq3Zk@h:5432/db ",
    "postgresql://u: Vq4Zk @h:5432/db",
    "postgresql://u:Vq5 Zk9@h:5432/db",
    "postgresql://u:Kx9Wqz@[::1]:5432/db",
    "postgresql://u@srv:Qz9Wv8J@h:5432/db",
    "postgresql://u:Qz9Wv8J@[::1/db",
    "postgresql:///db?host=%2Ftmp",
    "",
    "   ",
]


def fuzz_strings(count: int = 400, seed: int = 20240611) -> list[str]:
    rng = random.Random(seed)
    made = (uri_random(rng) if i % 2 else kv_random(rng) for i in range(count))
    return list(dict.fromkeys(made))


def fixed_messages() -> set[str]:
    """Every error message the parser can raise: the literals after MESSAGE = in its source."""
    source = "".join(
        (FUNCTIONS / f"{name}.sql").read_text()
        for name in ("_conninfo_decode", "_conninfo_scan", "_conninfo_parse")
    )
    found: set[str] = set()
    for statement in re.findall(r"MESSAGE = (.*?);", source, re.S):
        statement = re.sub(r"'\s*\n\s*'", "", statement)  # adjacent literals are one
        for literal in re.findall(r"'((?:[^']|'')*)'", statement):
            literal = literal.replace("''", "'")
            prefix = "invalid connection string: " if "bad ||" in statement else ""
            found.add(prefix + literal)
    return found


_REFERENCE = r"""
import json, sys, psycopg
from psycopg import pq
results = []
for t in json.load(sys.stdin):
    try:
        results.append(psycopg.conninfo.conninfo_to_dict(t))
    except psycopg.ProgrammingError:
        results.append(None)
    except UnicodeDecodeError:
        results.append("undecodable")
json.dump({"version": pq.version(), "results": results}, sys.stdout)
"""


def libpq_parses(targets: list[str], impl: str) -> tuple[int, list[Any]]:
    """libpq's own parse of each target (PQconninfoParse through psycopg), in a process using
    psycopg's ``binary`` implementation (its bundled libpq) or ``python`` (the system's)."""
    env = dict(os.environ, PSYCOPG_IMPL=impl)
    result = subprocess.run(
        [sys.executable, "-c", _REFERENCE],
        input=json.dumps(targets),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"psycopg's {impl} implementation is not usable here: {result.stderr[-300:]}")
    out = json.loads(result.stdout)
    return int(out["version"]) // 10000, list(out["results"])


@pytest.mark.parametrize("impl", ["binary", "python"])
def test_parse_equals_libpq_for_every_shape_and_fuzzed_strings(
    installed: Conn, remote: Server, impl: str
) -> None:
    here = Where("pw_user", remote.host, str(remote.port), "db", remote.user)
    shapes = [
        s.spell(w)
        for s in SHAPES
        for w in (here, here._replace(port="1"), here._replace(dbname="no_such_db_pw"))
    ]
    targets = list(dict.fromkeys(shapes + PARSE_ONLY + fuzz_strings()))
    major, reference = libpq_parses(targets, impl)
    installed.execute(
        "CREATE FUNCTION pg_temp.try_parse(t text, major integer) RETURNS text[] "
        "LANGUAGE plpgsql AS $$ BEGIN RETURN dblink_safe._conninfo_parse(t, major); "
        "EXCEPTION WHEN invalid_parameter_value OR character_not_in_repertoire THEN "
        "RETURN ARRAY['#error', SQLERRM]; END $$"
    )
    ours = [
        row[0]
        for row in installed.execute(
            "SELECT pg_temp.try_parse(t, %s) FROM pg_catalog.unnest(%s::text[]) "
            "WITH ORDINALITY AS u(t, o) ORDER BY o",
            (major, targets),
        )
    ]
    messages = fixed_messages()
    accepted = rejected = 0
    for target, mine, theirs in zip(targets, ours, reference, strict=True):
        if isinstance(theirs, dict):
            accepted += 1
            assert mine[:1] != ["#error"], (target, mine, theirs)
            assert dict(zip(mine[0::2], mine[1::2], strict=True)) == theirs, target
        else:
            rejected += 1
            assert mine[:1] == ["#error"], (target, mine, theirs)
            assert mine[1] in messages, (target, mine[1])
    assert accepted > 100 and rejected > 100
    for shape in SHAPES:
        parsed = dict(zip(*[iter(ours[targets.index(shape.spell(here))])] * 2, strict=True))
        assert (shape.kind == "malformed") == ("#error" in parsed), shape.id
        assert (parsed.get("password") == shape.password) == (shape.kind == "ok"), shape.id


def test_rebuilt_strings_parse_back_and_masking_never_fails(installed: Conn) -> None:
    targets = list(dict.fromkeys(PARSE_ONLY + fuzz_strings(1000, seed=7)))
    installed.execute(
        "CREATE FUNCTION pg_temp.parses(t text) RETURNS boolean LANGUAGE plpgsql AS $$ "
        "BEGIN PERFORM dblink_safe._conninfo_parse(t); RETURN true; "
        "EXCEPTION WHEN invalid_parameter_value OR character_not_in_repertoire THEN "
        "RETURN false; END $$"
    )
    checked = 0
    for target, ok, built, masked, scrubbed in installed.execute(
        "SELECT t, pg_temp.parses(t), "
        "CASE WHEN pg_temp.parses(t) "
        "THEN dblink_safe._conninfo_build(dblink_safe._conninfo_parse(t)) END, "
        "dblink_safe._mask_target(t), dblink_safe._scrub('x ' || t, t) "
        "FROM pg_catalog.unnest(%s::text[]) AS t",
        (targets,),
    ):
        assert masked is not None and scrubbed is not None, target
        if not ok:
            continue
        checked += 1
        libpq = psycopg.conninfo.conninfo_to_dict(target)
        assert psycopg.conninfo.conninfo_to_dict(built) == libpq, (target, built)
        for keyword in ("password", "sslpassword"):
            secret = str(libpq.get(keyword) or "")
            if len(secret) >= 4:
                assert secret not in masked, (target, masked)
                assert secret not in scrubbed, (target, scrubbed)
    assert checked > 100


# --- _conninfo: defaults as pairs, never spliced into the caller's text -----------------


@pytest.mark.parametrize(
    ("target", "own"),
    [
        ("host=h port=5 dbname=d user=u password=Qz?Wv keepalives=0", {"keepalives": "0"}),
        ("postgresql://u:Qz?Wv@h:5/d", {}),
        ("postgresql://u:Qz?Wv@h:5/d?connect_timeout=3&sslmode=disable", {"connect_timeout": "3"}),
        ("postgresql://u@h/d?tcp_user_timeout=500&password=Qz%26Wv", {"tcp_user_timeout": "500"}),
    ],
)
def test_defaults_are_added_as_pairs_where_the_caller_set_nothing(
    installed: Conn, local_version: tuple[int, str], target: str, own: dict[str, str]
) -> None:
    settings = Settings()
    defaults = (
        settings.conninfo_defaults_16 if local_version[0] >= 160000 else settings.conninfo_defaults
    )
    built = scalar(installed, "SELECT dblink_safe._conninfo(%s)", target)
    expected = psycopg.conninfo.conninfo_to_dict(defaults) | psycopg.conninfo.conninfo_to_dict(
        target
    )
    assert psycopg.conninfo.conninfo_to_dict(built) == expected
    for keyword, value in own.items():
        assert expected[keyword] == value


def test_a_foreign_server_name_passes_unchanged(installed: Conn) -> None:
    installed.execute(
        "CREATE SERVER \"odd=name\" FOREIGN DATA WRAPPER dblink_fdw OPTIONS (host 'h')"
    )
    installed.execute("CREATE SERVER plain_srv FOREIGN DATA WRAPPER dblink_fdw OPTIONS (host 'h')")
    assert scalar(installed, "SELECT dblink_safe._conninfo('plain_srv')") == "plain_srv"
    assert scalar(installed, "SELECT dblink_safe._conninfo('odd=name')") == "odd=name"


@pytest.mark.parametrize(
    "target",
    ["no_such_server", " postgresql://u:Qz9Wv8J@h/d", "host=h password=Qz9 Wv8J", "host=h bogus=1"],
)
def test_a_malformed_target_fails_before_connecting_and_changes_nothing(
    installed: Conn, remote: Server, remote_db: str, target: str
) -> None:
    good = remote.conninfo(remote_db)
    assert ensure(installed, good) == "connected"
    before = installed.execute("SELECT conn_name, target, opened_at FROM dblink_safe.connections()")
    listed = before.fetchall()
    # Not retried: one attempt, however many are allowed.
    err = error_of(lambda: ensure(installed, target, max_attempts=5))
    assert err.sqlstate == "22023"
    assert err.diag.message_primary == 'could not open dblink connection "r"'
    assert (err.diag.message_detail or "").startswith("invalid connection string: ")
    assert "(1 attempt(s)" in (err.diag.message_detail or "")
    assert "neither the name of a foreign server" in (err.diag.message_hint or "")
    for text in diag_texts(err):
        assert not leaks(text, ("Qz9Wv8J", "Qz9 Wv8J", "bogus")), text
    after = installed.execute("SELECT conn_name, target, opened_at FROM dblink_safe.connections()")
    assert after.fetchall() == listed
    assert scalar(installed, "SELECT public.dblink_get_connections()") == ["r"]
    assert exec_(installed, "INSERT INTO items (note) VALUES ('still')") == "INSERT 0 1"
