"""The README's shell examples, run in order against a test server: they cannot go stale."""

import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import Server

README = Path(__file__).parent.parent / "README.md"
README_DSN = "postgresql://admin@db1/app"


#: A code block after this line runs against a database with the extension form installed
#: (CREATE EXTENSION, from files installed with PGXS); its `$ psql -d app -c SQL` lines run too.
EXTENSION_BLOCK = "<!-- readme-test: extension -->"


def examples(kind: str = "") -> list[tuple[str, str, list[str]]]:
    """(setup SQL, command, output lines) for every "$ pgdblink-safe" line in a code block.

    ``kind`` "extension" gives the blocks marked with EXTENSION_BLOCK (and their psql lines)
    instead of the others.
    """
    found = []
    setup = ""
    lines = README.read_text().splitlines()
    in_block = False
    marked = block_marked = False
    for number, line in enumerate(lines):
        if line.startswith("<!-- readme-test setup:"):
            end = next(i for i in range(number, len(lines)) if lines[i].strip() == "-->")
            setup = "\n".join(lines[number + 1 : end])
        if line.strip() == EXTENSION_BLOCK:
            marked = True
        if line.startswith("```"):
            in_block = not in_block
            if in_block:
                block_marked, marked = marked, False
            continue
        wanted = block_marked == (kind == "extension")
        prompts = ("$ pgdblink-safe ", "$ psql ") if kind == "extension" else ("$ pgdblink-safe ",)
        if in_block and wanted and line.startswith(prompts):
            output = []
            for following in lines[number + 1 :]:
                if following.startswith(("$ ", "```")):
                    break
                output.append(following)
            found.append((setup, line[2:], output))
            setup = ""
    return found


def normalize(line: str) -> str:
    """Times, ports, dates, server versions, checksums and GIDs vary from run to run; nothing
    else."""
    for pattern, replacement in (
        (r"\bpgdblink_safe:\d+:\d+:\d+:\d+:[0-9a-f]{8}\b", "GID"),
        (r"\b\d+(\.\d+)? (ms|s)\b", r"N \2"),
        (r"port=\d+", "port=N"),
        (r"PostgreSQL \d+(\.\d+)*", "PostgreSQL N"),
        (r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(\+\d{4})?", "DATE"),
        (r"\b[0-9a-f]{12}\b", "CHECKSUM"),
    ):
        line = re.sub(pattern, replacement, line)
    return line.rstrip()


@pytest.fixture
def app_db(local: Server) -> Iterator[str]:
    local.drop_database("app")
    local.create_database("app")
    local.execute("DROP ROLE IF EXISTS app_writer")
    local.execute("CREATE ROLE app_writer")
    try:
        with local.settings(tcp_keepalives_idle="60"):
            yield "app"
    finally:
        local.drop_database("app")
        local.execute("DROP ROLE app_writer")


def test_there_are_examples() -> None:
    commands = [command.split()[1] for _, command, _ in examples()]
    assert {"demo", "install", "doctor"} <= set(commands)


def test_readme_examples_print_what_the_readme_shows(local: Server, app_db: str) -> None:
    dsn = local.client_conninfo(app_db)
    for setup, command, expected in examples():
        if setup:
            with local.connect(app_db) as conn:
                conn.execute(setup.encode())
        quoted = command.replace(f"'{README_DSN}'", README_DSN)
        args = shlex.split(quoted.replace(README_DSN, shlex.quote(dsn)))[1:]
        result = subprocess.run(
            [sys.executable, "-m", "pgdblink_safe", *args],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert result.returncode in (0, 1), (command, result.stderr)
        shown = {normalize(line) for line in expected if line.strip()}
        stdout = [normalize(line) for line in result.stdout.splitlines() if line.strip()]
        everything = set(stdout) | {normalize(line) for line in result.stderr.splitlines()}
        # Every line the README shows is printed, and every result line is shown.
        assert shown <= everything, (command, sorted(shown - everything))
        assert set(stdout) <= shown, (command, sorted(set(stdout) - shown))


def test_there_are_extension_examples() -> None:
    commands = [command.split()[:2] for _, command, _ in examples("extension")]
    assert ["pgdblink-safe", "status"] in commands and ["psql", "-d"] in commands


def test_readme_extension_examples_print_what_the_readme_shows(
    local: Server, extension_files: Path, app_db: str, tmp_path: Path
) -> None:
    """The extension transcript, in order: psql lines through the server's psql, with the DSN."""
    dsn = local.client_conninfo(app_db)
    binaries = local.binaries  # type: ignore[attr-defined]
    local.execute("DROP ROLE IF EXISTS app_owner")
    local.execute("CREATE ROLE app_owner LOGIN")
    local.execute("GRANT CREATE ON DATABASE app TO app_owner")
    try:
        _run_extension_examples(local, dsn, binaries, tmp_path)
    finally:
        local.drop_database(app_db)
        local.execute("DROP ROLE app_owner")


def _run_extension_examples(local: Server, dsn: str, binaries: Any, tmp_path: Path) -> None:
    for _setup, command, expected in examples("extension"):
        words = shlex.split(command)
        if words[0] == "psql":
            assert words[1:3] == ["-d", "app"], command
            user = words[words.index("-U") + 1] if "-U" in words else None
            target = f"{dsn} user={user}" if user else dsn
            args = [str(binaries.bindir / "psql"), "-X", "-d", target, *words[3:]]
            if user:
                args.remove("-U")
                args.remove(user)
            env = binaries.env()
        else:
            quoted = command.replace(f"'{README_DSN}'", README_DSN)
            args = [sys.executable, "-m", "pgdblink_safe"]
            args += shlex.split(quoted.replace(README_DSN, shlex.quote(dsn)))[1:]
            env = None
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=env,
        )
        assert result.returncode in (0, 1), (command, result.stderr)
        shown = {normalize(line) for line in expected if line.strip()}
        stdout = [normalize(line) for line in result.stdout.splitlines() if line.strip()]
        everything = set(stdout) | {normalize(line) for line in result.stderr.splitlines()}
        assert shown <= everything, (command, sorted(shown - everything))
        assert set(stdout) <= shown, (command, sorted(set(stdout) - shown))
