"""An experiment's probes inside the side of a partition that is cut from the controller
too (`control: underlay`, as on real hosts): h1's agent keeps its ping stream running
while its ops channel is lost, holds the samples and hands them over when the channel
is back, so the report says c1->c2 kept forwarding (answered, nothing lost) instead of
"unobserved". The experiment runs through `--controller` and `--pki` alone, with no lab
state visible to the CLI, like the README's "On real hosts".

The cut lasts 18 s: longer than the agent needs to notice its stream is gone (HTTP/2
keepalive, 10 s + 5 s), so the samples come back through the resumed op, not through a
TCP connection that survived the cut.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rig import module_lab
from vxlab.lab.lab import Lab

pytestmark = pytest.mark.integration
TOPO = """control: underlay
hosts: 3
networks:
  - name: blue
    subnet: 10.79.0.0/24
containers:
  - {name: c1, host: h1, networks: [{name: blue, ip: 10.79.0.11}]}
  - {name: c2, host: h2, networks: [{name: blue, ip: 10.79.0.12}]}
  - {name: c3, host: h3, networks: [{name: blue, ip: 10.79.0.13}]}
"""
SCENARIO = """name: cut-side
duration: 24s
probes:
  - {src: c1, dst: c2, interval: 100ms}
  - {src: c1, dst: c3, interval: 100ms}
timeline:
  - at: 2s
    fault: {kind: partition, hosts: [h1, h2], from: [h3, control]}
    for: 18s
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with module_lab(tmp_path_factory.mktemp("run"), TOPO) as the_lab:
        yield the_lab


def test_the_cut_side_kept_forwarding_and_its_samples_came_back_after_the_heal(lab: Lab, tmp_path: Path) -> None:
    assert lab.check().ok
    (tmp_path / "s.yaml").write_text(SCENARIO)
    env = {**os.environ, "VXLAB_RUN": str(tmp_path / "nolab")}  # no lab state: the controller and its PKI only
    out = subprocess.run([sys.executable, "-m", "vxlab.cli", "--controller", lab.socket, "--pki",
                          str(lab.state.dir / "pki"), "experiment", "run", str(tmp_path / "s.yaml"), "-o",
                          str(tmp_path / "out")], capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    [fault] = summary["faults"]
    assert set(fault["lease_expired"]) == {"h1", "h2"}, fault  # the cut reached the control plane
    inside = fault["kept_forwarding"]["c1->c2"]
    assert inside["sent"] > 50 and inside["answered"] >= inside["sent"] - 1, inside  # not unobserved
    assert inside["held"] > 0, inside  # handed over by h1's agent after the heal
    pairs = {p["pair"]: p for p in summary["pairs"]}
    assert pairs["c1->c2"]["held"] and pairs["c1->c3"]["lost"] > 0  # across the cut: lost, not unobserved
    report = (tmp_path / "out" / "report.md").read_text()
    assert "c1->c2 kept forwarding" in report and "held by its agent while it was cut" in report, report
