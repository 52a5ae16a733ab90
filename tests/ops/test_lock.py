"""Installs are reproducible: uv.lock matches pyproject.toml, and `make install` installs from the
lock without re-resolving. A pin edited in pyproject.toml without `make lock` fails here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".venv" / "bin" / "uv"


def lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(UV), "lock", "--check", "--project", str(project)],
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_the_lock_agrees_with_pyproject() -> None:
    result = lock_check(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_check_fails_when_pyproject_and_the_lock_disagree(tmp_path: Path) -> None:
    shutil.copy(ROOT / "uv.lock", tmp_path / "uv.lock")
    pyproject = (ROOT / "pyproject.toml").read_text()
    # A new direct dependency the lock does not know.
    edited = pyproject.replace('  "httpx==0.28.1",\n', '  "httpx==0.28.1",\n  "idna==3.7",\n', 1)
    assert edited != pyproject, "pyproject.toml no longer pins httpx==0.28.1: update this test"
    (tmp_path / "pyproject.toml").write_text(edited)
    result = lock_check(tmp_path)
    assert result.returncode != 0, "uv lock --check accepted a lock that misses a dependency"


def test_make_install_installs_from_the_lock_without_resolving() -> None:
    makefile = (ROOT / "Makefile").read_text()
    rule = re.search(r"^\$\(STAMP\):(.*?)\n\n", makefile, re.S | re.M)
    assert rule, "the $(STAMP) rule is gone"
    body = rule.group(1)
    assert "uv.lock" in body.splitlines()[0], "the venv is not rebuilt when uv.lock changes"
    assert "uv sync" in body and "--frozen" in body, body
    assert "pip install -e" not in body and "uv pip install" not in body, body
