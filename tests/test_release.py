"""Release steps: generated from the current code, pinned once released, checked in CI."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pgdblink_safe import _release, generator
from pgdblink_safe._release import MARKER, ReleaseError, Tree, check, draft, freeze

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def tree(tmp_path: Path) -> Tree:
    """A copy of this checkout's sql/ and migrations/, to change freely."""
    shutil.copytree(ROOT / "sql", tmp_path / "sql")
    shutil.copytree(ROOT / "migrations", tmp_path / "migrations")
    copy = Tree(tmp_path)
    # The tests draft a step of their own: release the checkout's unreleased one first.
    freeze(copy, "0.0.0")
    return copy


def _edit(tree: Tree, path: str, old: str, new: str) -> None:
    file = tree.sql / path
    text = file.read_text()
    assert old in text, f"{old!r} is not in {path}"
    file.write_text(text.replace(old, new, 1))


def _next_stem(tree: Tree, name: str) -> str:
    return f"{len(tree.steps()) + 1:04d}_{name}"


def test_the_checkout_passes_the_release_check() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "release.py"), "check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stderr


def test_every_step_is_released_and_pinned() -> None:
    lock = json.loads((ROOT / "sql" / "migrations.lock").read_text())
    stems = [m.filename.removesuffix(".sql") for m in generator.migrations()]
    assert stems[0] == "0001_baseline"
    assert lock["0001_baseline"]["release"] == "0.1.0"
    # At most the newest step may be unreleased.
    assert stems[: len(lock)] == sorted(lock)
    assert len(stems) - len(lock) <= 1


def test_a_changed_function_without_a_step_fails_the_check(tree: Tree) -> None:
    _edit(tree, "functions/_check_name.sql", "Use a shorter connection name.", "Shorter, please.")
    with pytest.raises(ReleaseError, match=r"sql/functions/_check_name\.sql differs"):
        check(tree)


def test_draft_copies_only_what_changed_and_then_the_check_passes(tree: Tree) -> None:
    _edit(tree, "functions/_check_name.sql", "Use a shorter connection name.", "Shorter, please.")
    stem = _next_stem(tree, "shorter")
    path = draft(tree, stem)[0]
    manual, generated = _release.split_step(path.read_text())
    copied = [p for p, _ in _release.copied_sources(generated)]
    assert copied == ["functions/_check_name.sql", "privileges.sql"]
    assert "Shorter, please." in generated
    assert "pgdblink_safe step" in manual
    assert check(tree) == []
    assert (tree.root / "migrations" / f"{stem}.sql").exists()


def test_a_stale_unreleased_step_fails_the_check(tree: Tree) -> None:
    _edit(tree, "functions/_check_name.sql", "Use a shorter connection name.", "Shorter, please.")
    stem = _next_stem(tree, "shorter")
    draft(tree, stem)
    _edit(tree, "functions/_check_name.sql", "Shorter, please.", "Shorter still.")
    with pytest.raises(ReleaseError, match=rf"{stem}\.sql is stale"):
        check(tree)
    draft(tree, stem)
    assert "Shorter still." in (tree.sql / "migrations" / f"{stem}.sql").read_text()
    assert check(tree) == []


def test_draft_keeps_the_hand_written_part(tree: Tree) -> None:
    _edit(tree, "functions/_check_name.sql", "Use a shorter connection name.", "Shorter, please.")
    stem = _next_stem(tree, "shorter")
    path = draft(tree, stem)[0]
    manual, generated = _release.split_step(path.read_text())
    path.write_text(f"{manual}ANALYZE pg_catalog.pg_class;\n\n{MARKER}\n{generated}")
    draft(tree, stem)
    assert "ANALYZE pg_catalog.pg_class;" in _release.split_step(path.read_text())[0]


def test_a_changed_signature_needs_a_hand_written_drop(tree: Tree) -> None:
    _edit(
        tree,
        "functions/_check_name.sql",
        "(conn_name text)\n",
        "(conn_name text, strict boolean)\n",
    )
    _edit(
        tree, "functions/_check_name.sql", "._check_name(text) IS", "._check_name(text, boolean) IS"
    )
    stem = _next_stem(tree, "strict_names")
    with pytest.raises(ReleaseError) as raised:
        draft(tree, stem)
    assert "DROP FUNCTION {{ schema }}._check_name(text);" in str(raised.value)
    assert not (tree.sql / "migrations" / f"{stem}.sql").exists()
    (tree.sql / "migrations" / f"{stem}.sql").write_text(
        "DROP FUNCTION {{ schema }}._check_name(text);\n"
    )
    path = draft(tree, stem)[0]
    assert path.read_text().startswith("DROP FUNCTION {{ schema }}._check_name(text);\n")
    assert check(tree) == []


def test_a_removed_function_needs_a_hand_written_drop(tree: Tree) -> None:
    (tree.sql / "functions" / "_check_user_name.sql").unlink()
    _edit(tree, "manifest.txt", "functions/_check_user_name.sql\n", "")
    stem = _next_stem(tree, "no_user_names")
    with pytest.raises(ReleaseError, match=re.escape("_check_user_name(text);")):
        draft(tree, stem)
    with pytest.raises(ReleaseError, match=r"_check_user_name\.sql differs"):
        check(tree)
    (tree.sql / "migrations" / f"{stem}.sql").write_text(
        "DROP FUNCTION {{ schema }}._check_user_name(text);\n"
    )
    draft(tree, stem)
    assert check(tree) == []


def test_an_edited_released_step_fails_the_check(tree: Tree) -> None:
    step = tree.sql / "migrations" / "0001_baseline.sql"
    step.write_text(step.read_text().replace("Use a shorter connection name.", "Shorter."))
    with pytest.raises(ReleaseError, match=r"released step 0001_baseline\.sql was edited"):
        check(tree)


def test_a_changed_quoting_helper_fails_the_check(
    tree: Tree, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change to how identifiers are quoted would alter what a released step renders."""
    monkeypatch.setattr(generator, "ident", lambda name: '"' + name.replace('"', '""') + '"')
    generator.context.cache_clear()
    try:
        with pytest.raises(ReleaseError, match="renders differently with default settings"):
            check(tree)
    finally:
        generator.context.cache_clear()


def test_freeze_pins_the_unreleased_step(tree: Tree) -> None:
    _edit(tree, "functions/_check_name.sql", "Use a shorter connection name.", "Shorter, please.")
    stem = _next_stem(tree, "shorter")
    draft(tree, stem)
    assert freeze(tree, "9.9.9") == [stem]
    assert tree.lock()[stem]["release"] == "9.9.9"
    step = tree.sql / "migrations" / f"{stem}.sql"
    step.write_text(step.read_text() + "-- an afterthought\n")
    with pytest.raises(ReleaseError, match=rf"released step {stem}\.sql was edited"):
        check(tree)
