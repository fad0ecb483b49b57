"""Host faults on the real kernel (NetlinkKernel, agent/netlink_faults.py), beyond the
kernel contract suite (tests/contract_kernel_faults.py): a reconciler's fault pass that
a second pass finds done, the kernel's default qdisc back when ours goes, and packets
that arrive really going through the IFB device's qdisc.

The driver runs in a thread inside a throwaway host namespace (`vxt<6 hex>-h`) with a
veth `eth0` whose peer is in a second one; both are deleted also when a test fails.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from test_netlink import Lab, sh

from vxlab.agent import fault_nft
from vxlab.agent.desired import HostInfo
from vxlab.agent.kernel import FAULT_IFB, HostFaults, Qdisc
from vxlab.agent.reconciler import Reconciler

pytestmark = pytest.mark.integration


@pytest.fixture
def host() -> Iterator[tuple[Lab, str]]:
    lab = Lab()
    peer = lab.host("p")
    h = lab.host("h", f"link add eth0 type veth peer name eth0 netns {peer}", "link set eth0 up",
                  "addr add 192.0.2.10/24 dev eth0", "route add 198.51.100.0/24 via 192.0.2.1 dev eth0")
    sh("ip", "-n", peer, "link", "set", "eth0", "up")
    try:
        yield lab, h
    finally:
        for ns in (h, peer):
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def me(lab: Lab) -> HostInfo:
    return HostInfo("h1", "192.0.2.10", 1500, lab.prefix)


def test_table_and_qdiscs_written_read_back_and_removed(host: tuple[Lab, str]) -> None:
    lab, h = host
    table = fault_nft.build([("output", 'ip daddr { 192.0.2.20 } counter drop comment "f1"'),
                             ("input", 'iifname "eth0" numgen random mod 10000 < 500 counter drop comment "f2"')])
    tbf = Qdisc("tbf", rate=1_250_000)
    want = HostFaults(table=table, qdiscs={"eth0": tbf, FAULT_IFB: tbf}, ingress=True, down=None)

    def go(k):  # type: ignore[no-untyped-def]
        r = Reconciler(k, me(lab), underlay_dev="eth0")
        first = r.reconcile_faults(want)
        have = k.agent_ns(underlay="eth0").faults
        second = r.reconcile_faults(want)
        gone = r.reconcile_faults(HostFaults())
        return first, have, second, gone, k.agent_ns(underlay="eth0").faults
    first, have, second, gone, after = lab.run(h, go)
    assert first.ok and first.writes["set_fault_table"] == 1 and first.writes["set_fault_qdisc"] == 2
    assert (have.table, have.qdiscs, have.ingress, have.down) == (table, {"eth0": tbf, FAULT_IFB: tbf}, True, False)
    assert second.actions == [] and second.writes == {}
    assert gone.ok and after == HostFaults(down=False, routes=after.routes)
    shown = sh("tc", "-n", h, "qdisc", "show", "dev", "eth0")
    assert "tbf" not in shown and "ingress" not in shown
    assert FAULT_IFB not in sh("ip", "-n", h, "link", "show")
    assert "vxlab_fault" not in sh("ip", "netns", "exec", h, "nft", "list", "tables")


def test_ingress_rate_limits_what_arrives(host: tuple[Lab, str]) -> None:
    lab, h = host
    lab.run(h, lambda k: k.set_fault_ingress("eth0"))
    lab.run(h, lambda k: k.set_fault_qdisc(FAULT_IFB, Qdisc("tbf", rate=125_000)))
    out = sh("tc", "-n", h, "-s", "filter", "show", "dev", "eth0", "ingress")
    assert f"Egress Redirect to device {FAULT_IFB}" in out
    sh("ip", "-n", h, "neigh", "replace", "192.0.2.20", "lladdr", "02:00:00:00:00:20", "dev", "eth0")
    peer = lab.ns("p")
    sh("ip", "-n", peer, "addr", "add", "192.0.2.20/24", "dev", "eth0")
    subprocess.run(["ip", "netns", "exec", peer, "ping", "-c", "3", "-i", "0.2", "-W", "1", "192.0.2.10"],
                   capture_output=True)
    stats = sh("tc", "-n", h, "-s", "qdisc", "show", "dev", FAULT_IFB)
    assert "tbf 7678:" in stats and " 0 pkt" not in stats.split("Sent", 1)[1].split("\n")[0]
