"""`vxlab graph` and `vxlab store ls` on a real lab (root, namespaces, etcd).

One small lab (two hosts, network blue, web@h1 and db@h2) is brought up for the
module with its own VXLAB_RUN directory and a unique `vxt…` name, and always torn
down in the fixture's finalizer, also when a test fails.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rig import QUICK

from vxlab.lab.lab import Lab
from vxlab.lab.topology import parse

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces)"),
]

TOPOLOGY = QUICK


@dataclass(frozen=True)
class RunningLab:
    name: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningLab]:
    name = "vxt" + secrets.token_hex(3)
    run = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VXLAB_RUN", str(run))
        mp.delenv("VXLAB_CONTROLLER", raising=False)
        mp.delenv("VXLAB_LAB", raising=False)
        try:
            Lab(name).up(parse(f"name: {name}\n{TOPOLOGY}"))
            yield RunningLab(name, {**os.environ, "VXLAB_RUN": str(run)})
        finally:
            Lab(name).down()


def vx(lab: RunningLab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vxlab.cli", "--lab", lab.name, *args],
                          capture_output=True, text=True, env=lab.env, timeout=60, check=False)


def test_graph_svg(lab: RunningLab, tmp_path: Path) -> None:
    out = tmp_path / "x.svg"
    r = vx(lab, "graph", "-o", str(out))
    assert r.returncode == 0, r.stderr
    svg = out.read_text()
    assert "<svg" in svg and "web" in svg and "db" in svg and "blue" in svg
    assert "2 hosts, 1 networks, 2 containers" in r.stderr


def test_graph_dot_source_and_bad_suffix(lab: RunningLab, tmp_path: Path) -> None:
    r = vx(lab, "graph", "-o", str(tmp_path / "x.dot"))
    assert r.returncode == 0, r.stderr
    dot = (tmp_path / "x.dot").read_text()
    assert f"lab {lab.name}" in dot and "ctr_h1__web -> net_blue" in dot and "ctr_h2__db -> net_blue" in dot
    bad = vx(lab, "graph", "-o", str(tmp_path / "x.gif"))
    assert bad.returncode == 1 and bad.stderr.startswith("error: ") and ".svg" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_store_ls_json(lab: RunningLab) -> None:
    r = vx(lab, "store", "ls", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["key"]: row for row in json.loads(r.stdout)}
    blue = rows["/vxlab/v1/networks/blue"]
    assert blue["value"]["name"] == "blue" and blue["value"]["subnet"] == "10.10.0.0/24"
    web = rows["/vxlab/v1/endpoints/blue/web"]
    assert web["value"]["host"] == "h1" and web["value"]["ip"].startswith("10.10.0.")
    assert rows["/vxlab/v1/alive/h1"]["lease"] > 0 and rows["/vxlab/v1/networks/blue"]["lease"] == 0
    assert rows["/vxlab/v1/hosts/h1"]["value"]["name"] == "h1"
    assert all(0 < row["create_revision"] <= row["mod_revision"] for row in rows.values())
    revision, _, count = r.stderr.strip().splitlines()[-1].partition(", ")
    assert count == f"{len(rows)} keys" and int(revision.removeprefix("revision ")) >= max(
        row["mod_revision"] for row in rows.values())


def test_store_ls_prefix_table(lab: RunningLab) -> None:
    for prefix in ("networks/", "/vxlab/v1/networks/"):
        r = vx(lab, "store", "ls", prefix)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert lines[0].split() == ["KEY", "VALUE", "MOD", "REV", "LEASE"]
        keys = [line.split()[0] for line in lines[1:]]
        assert keys == ["/vxlab/v1/networks/blue"]
        assert '{"' in lines[1] and len(lines[1]) < 200  # compact JSON, truncated in the table
        assert r.stderr.strip().endswith(", 1 keys")


def test_store_ls_without_a_lab_is_an_error(lab: RunningLab, tmp_path: Path) -> None:
    env = {**lab.env, "VXLAB_RUN": str(tmp_path / "empty")}
    r = subprocess.run([sys.executable, "-m", "vxlab.cli", "store", "ls"], capture_output=True, text=True,
                       env=env, timeout=60, check=False)
    assert r.returncode == 1
    assert r.stderr.strip() == "error: store: no lab selected (the store view reads the lab's etcd)"
