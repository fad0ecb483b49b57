"""Architecture checks: import-linter contracts (pyproject.toml) and the generated code.

The repository maps several folders onto the one `vxlab` namespace (`package-dir` in
pyproject.toml), so the check runs import-linter over a mirror of the installed
package tree, built from that mapping.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETUPTOOLS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
LINT = os.path.join(os.path.dirname(sys.executable), "lint-imports")


def mirror(tmp_path: Path) -> Path:
    """The package tree as installed: each mapped folder copied to its import path."""
    for name, source in sorted(SETUPTOOLS["package-dir"].items(), key=lambda kv: kv[0].count(".")):
        shutil.copytree(ROOT / source, tmp_path / name.replace(".", "/"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.proto", "*.pyi", "*.md", "results"))
    return tmp_path


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    if not os.path.exists(LINT):
        pytest.fail("import-linter is not installed (pip install -e '.[test]')")
    return subprocess.run([LINT, str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree,
                          env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True)


def test_import_contracts(tmp_path: Path) -> None:
    out = lint(mirror(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_a_new_module_is_checked(tmp_path: Path) -> None:
    """A module nobody listed anywhere is still checked: a new top-level module must be
    given a layer (the layers contract is exhaustive), and a new module in a package
    falls under the package-wide contracts (pyroute2, test support)."""
    tree = mirror(tmp_path)
    (tree / "vxlab" / "vxtnew.py").write_text('"""x"""\nimport vxlab.model\n')
    (tree / "vxlab" / "agent" / "vxtnew.py").write_text('"""x"""\nimport pyroute2\nimport vxlab.testing.fakekernel\n')
    out = lint(tree)
    assert out.returncode != 0
    text = " ".join((out.stdout + out.stderr).split())
    assert "vxlab.vxtnew" in text  # not in any layer
    assert "vxlab.agent.vxtnew -> pyroute2" in text
    assert "vxlab.agent.vxtnew -> vxlab.testing.fakekernel" in text
    assert "Contracts: 5 kept, 3 broken." in text  # layers (unlayered; agent -> testing), pyroute2, testing


def test_every_package_folder_is_installed() -> None:
    """Every folder with an __init__.py under a mapped folder is in `packages`, so the
    wheel (deploy/, VM images) holds it."""
    found = set()
    for name, source in SETUPTOOLS["package-dir"].items():
        for init in (ROOT / source).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / source)
            found.add(".".join([name, *rel.parts]))
    assert found <= set(SETUPTOOLS["packages"]), sorted(found - set(SETUPTOOLS["packages"]))


def test_generated_code_matches_proto() -> None:
    out = subprocess.run([sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_no_bare_top_level_modules() -> None:
    """Nothing installs a bare `agent` or `controller` module."""
    code = "import importlib.util as u; print(u.find_spec('agent'), u.find_spec('controller'))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True, text=True)
    assert out.stdout.strip() == "None None", out.stdout
