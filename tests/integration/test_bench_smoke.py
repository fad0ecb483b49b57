"""Smoke test of the benchmarks' plumbing: a quick data-plane run writes results.json,
RESULTS.md, dataplane.json and the plot, and leaves no namespace behind. No timing
assertion: benchmarks are not tests."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import pytest

from vxlab.bench import suite
from vxlab.lab import hostns

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="labs need root")]


def test_quick_dataplane_writes_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VXLAB_RUN", str(tmp_path / "run"))
    name = "vxt" + secrets.token_hex(3)
    out = tmp_path / "out"
    result = suite.run(out, parts=["dataplane"], quick=True, lab=name)
    part = result["parts"]["dataplane"]
    assert "error" not in part, part.get("traceback")
    row = part["mtus"][0]
    assert row["underlay"]["gbit_median"] > 0 and row["overlay"]["gbit_median"] > 0
    assert row["throughput_ratio"] is not None and row["rtt_ratio"] is not None
    # vxlab's default: bridged frames skip the IP hooks in its network namespaces
    assert row["settings"]["bridge_nf_call_iptables"] in ("0", "absent")
    assert json.loads((out / "results.json").read_text())["parts"]["dataplane"]["mtus"]
    md = (out / "RESULTS.md").read_text()
    assert "throughput overlay/underlay, MTU 1500" in md and "Quick run" in md
    assert (out / "dataplane.json").is_file() and (out / "dataplane.png").stat().st_size > 0
    assert not [ns for ns in hostns.netns_list() if ns.startswith(f"vx-{name}.")]
