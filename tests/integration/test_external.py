"""External access with real agents and real packets (issue 13.5, 13.6): two networks
whose VNIs are 4096 and 20479 (the same /30 under the old `vni % 16383` rule) both
reach the outside from one host, and NAT flushed behind the agent's back (`nft flush
ruleset`, what `systemctl restart nftables` does) is repaired by its next full pass.

A one-host rig; its "outside" is an address on the underlay switch, as in a lab
(README, External access).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from rig import Rig

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
              pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed (apt-get install nftables)")]
OUTSIDE = "172.31.0.1"


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path, hosts=1, resync=1.0)
    try:
        r.start()
        r.sh(r.switch, "ip", "addr", "add", f"{OUTSIDE}/24", "dev", "vxsw", check=True)
        r.wait(lambda: r.status("h1").registered, "agent registered")
        r.network("blue", subnet="10.10.0.0/24", vni=4096)
        r.network("green", subnet="10.30.0.0/24", vni=20479)
        r.container("web", "h1", "blue")
        r.container("app", "h1", "green")
        r.settle()
        yield r
    finally:
        r.close()


def _uplink_addr(rig: Rig, network: str) -> str:
    out = rig.sh(rig.nns("h1", network), "ip", "-j", "addr", "show", "dev", "vxgw0", check=True).stdout
    return next(f"{a['local']}/{a['prefixlen']}" for a in json.loads(out)[0]["addr_info"] if a["family"] == "inet")


def _reach(rig: Rig, container: str) -> bool:
    return rig.ping(rig.cns("h1", container), OUTSIDE, count=1, wait=1).returncode == 0


def test_networks_with_vni_4096_and_20479_both_reach_the_outside(rig: Rig) -> None:
    blue, green = _uplink_addr(rig, "blue"), _uplink_addr(rig, "green")
    assert blue != green, (blue, green)
    for container in ("web", "app"):
        assert _reach(rig, container), f"{container} cannot reach the outside"


@pytest.mark.parametrize("where", ["host", "network"])
def test_nat_flushed_behind_the_agents_back_is_repaired_by_the_next_full_pass(rig: Rig, where: str) -> None:
    ns = rig.hosts["h1"].ns if where == "host" else rig.nns("h1", "blue")
    assert _reach(rig, "web")
    rig.sh(ns, "nft", "flush", "ruleset", check=True)
    assert rig.sh(ns, "nft", "list", "tables", check=True).stdout == ""
    assert not _reach(rig, "web"), "external access works without NAT: the test proves nothing"
    rig.wait(lambda: _reach(rig, "web"), "external access repaired by a full pass (resync 1 s)", timeout=10)
    assert "table ip vxlab" in rig.sh(ns, "nft", "list", "tables", check=True).stdout


def test_a_restarted_agent_adopts_uplinks_and_nat_without_a_write(rig: Rig) -> None:
    addrs = {n: _uplink_addr(rig, n) for n in ("blue", "green")}
    rig.kill_agent("h1")
    rig.status_path("h1").unlink()
    rig.start_agent("h1")
    rig.wait(lambda: rig.status("h1").last_pass is not None, "the restarted agent's first pass")
    last = rig.status("h1").last_pass
    assert last is not None and last.full and (last.actions, last.writes, last.errors) == (0, 0, ()), last
    assert {n: _uplink_addr(rig, n) for n in ("blue", "green")} == addrs
    assert _reach(rig, "web") and _reach(rig, "app")
