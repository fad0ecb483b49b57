"""`./vx` setting itself up in a fresh copy of the repository: one progress line per
step, everything apt and pip say in `.venv/setup.log`, and on failure the end of that
log, its path and exit code 1. Real python3 -m venv and pip (about 20 s).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("vxlab", "controller", "agent", "proto", "bench", "lab")  # [tool.setuptools] package-dir


def _copy(to: Path) -> Path:
    """The files an editable install needs, without .venv, caches or results."""
    to.mkdir()
    for name in ("vx", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, to / name)
    for name in PACKAGES:
        shutil.copytree(REPO / name, to / name, ignore=shutil.ignore_patterns("__pycache__", "results", "*.egg-info"))
    return to


def _vx(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(repo / "vx"), *args], capture_output=True, text=True, timeout=110, check=False)


def test_first_run_prints_progress_only_and_keeps_the_log(tmp_path: Path) -> None:
    repo = _copy(tmp_path / "clone")
    log = repo / ".venv" / "setup.log"
    first = _vx(repo, "setup")
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    assert first.stderr.splitlines() == ["vx: creating .venv (log: .venv/setup.log)",
                                         "vx: installing vxlab and its dependencies (log: .venv/setup.log)"]
    text = log.read_text()
    assert "=== installing vxlab and its dependencies: pip_install" in text and "Successfully installed" in text
    stamp = (repo / ".venv" / ".vx-setup").read_text()
    assert _vx(repo, "setup").stderr == ""  # done once: silent

    # a step that fails: the end of the log, its path, exit 1, and setup is not marked done
    with (repo / "pyproject.toml").open("a") as f:
        f.write("\n[[[ not toml\n")
    failed = _vx(repo, "setup")
    lines = failed.stderr.splitlines()
    assert failed.returncode == 1, failed.stderr
    assert lines[0] == "vx: installing vxlab and its dependencies (log: .venv/setup.log)"
    assert lines[1] == f"vx: error: installing vxlab and its dependencies failed; the end of {log}:"
    assert lines[-1] == f"vx: the whole log: {log}"
    assert all(line.startswith("  ") for line in lines[2:-1]) and 2 < len(lines) <= 33
    assert (repo / ".venv" / ".vx-setup").read_text() == stamp
