"""The built wheel carries sql/ and migrations/ and works outside the source tree."""

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
from servers import Server

from pgdblink_safe import Settings, render_script
from pgdblink_safe._extension import _record, current_version
from pgdblink_safe.generator import latest_version, migrations, render_template

ROOT = Path(__file__).resolve().parent.parent


def sh(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=600
    )
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _embedded_copies() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("pgdblink_safe-embedded-*"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, ROOT, cwd=out)
    (built,) = out.glob("pgdblink_safe-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("venv")
    sh(sys.executable, "-m", "venv", path, cwd=path)
    sh(path / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=path)
    return path


@pytest.mark.slow
def test_wheel_contains_templates_and_migrations(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for migration in migrations():
        assert f"pgdblink_safe/_data/sql/{migration.template}" in names
        assert f"pgdblink_safe/_data/migrations/{migration.filename}" in names
    assert "pgdblink_safe/py.typed" in names


@pytest.mark.slow
def test_installed_wheel_renders_and_installs(venv: Path, local: Server, local_db: str) -> None:
    outside = venv.parent
    location = sh(
        venv / "bin" / "python",
        "-c",
        "import pgdblink_safe; print(pgdblink_safe.__file__)",
        cwd=outside,
    )
    assert Path(location.strip()).is_relative_to(venv)
    assert sh(venv / "bin" / "pgdblink-safe", "render", cwd=outside) == render_script(Settings())
    out = sh(
        venv / "bin" / "pgdblink-safe",
        "install",
        "--dsn",
        local.client_conninfo(local_db),
        cwd=outside,
    )
    assert f"version {latest_version()}" in out


@pytest.mark.slow
def test_installed_wheel_exports_the_extension_forms(venv: Path, tmp_path: Path) -> None:
    version = sh(venv / "bin" / "pgdblink-safe", "--version", cwd=tmp_path)
    assert f"(extension version {current_version()})" in version
    sh(
        venv / "bin" / "pgdblink-safe",
        "export",
        "--format",
        "extension",
        "--out",
        "ext",
        cwd=tmp_path,
    )
    sh(venv / "bin" / "pgdblink-safe", "export", "--format", "pg_tle", "--out", "tle", cwd=tmp_path)
    script = tmp_path / "ext" / "pg16" / f"pgdblink_safe--{current_version()}.sql"
    text = script.read_text()
    assert render_template("privileges.sql", Settings()) in text
    assert text.endswith(_record(Settings()))
    assert (tmp_path / "tle" / "pgdblink_safe--pg_tle.sql").read_text().endswith("COMMIT;\n")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_installed_wheel_runs_the_demo_without_extras(venv: Path) -> None:
    """`pip install pgdblink-safe` alone brings what `pgdblink-safe demo` needs by default."""
    # Under root the demo copies the venv's embedded PostgreSQL to the temporary directory,
    # where the servers' account can run it; this venv's copy is of no later use.
    before = _embedded_copies()
    try:
        out = sh(venv / "bin" / "pgdblink-safe", "demo", cwd=venv.parent)
    finally:
        for copy in _embedded_copies() - before:
            shutil.rmtree(copy, ignore_errors=True)
    assert "Remote rows: plain 1, safe 1, safe 2 (each applied once)" in out
