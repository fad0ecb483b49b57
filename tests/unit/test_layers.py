"""Architecture checks: import-linter contracts (pyproject.toml) and the generated code.

The repository maps several folders onto the one `vxlab` namespace, so the check
runs import-linter over a mirror of the installed package tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {"vxlab": "vxlab", "vxlab/controller": "controller", "vxlab/agent": "agent",
           "vxlab/v1": "proto/vxlab/v1", "vxlab/bench": "bench", "vxlab/lab": "lab"}


def test_import_contracts(tmp_path: Path) -> None:
    if shutil.which("lint-imports", path=os.path.dirname(sys.executable)) is None:
        pytest.fail("import-linter is not installed (pip install -e '.[test]')")
    for target, source in MAPPING.items():
        shutil.copytree(ROOT / source, tmp_path / target, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.proto", "*.pyi", "*.md"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "lint-imports"), str(ROOT / "pyproject.toml"),
         "--no-cache"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_generated_code_matches_proto() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_no_bare_top_level_modules() -> None:
    """Nothing installs a bare `agent` or `controller` module."""
    code = "import importlib.util as u; print(u.find_spec('agent'), u.find_spec('controller'))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert out.stdout.strip() == "None None", out.stdout
