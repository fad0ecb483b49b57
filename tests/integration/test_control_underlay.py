"""The control plane over the underlay (issue 15.6, `control: underlay`): a real 3-host
lab whose agents dial the controller's control address on the switch, so a partition
that names `control` cuts their control traffic as it would on real hosts (issue 15,
test (c)): the cut hosts' leases expire and their peers purge them, the cut side keeps
forwarding between its own containers, and after the heal everything converges.

How long each step takes (purge after the cut, convergence after the heal) is printed
for the record; the figures that matter are in bench/ and the experiment reports.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from rig import lost, module_lab, wait_answers
from vxlab.lab.lab import Lab
from vxlab.lab.observe import time_until, vtep_entries
from vxlab.lab.probe import Pinger

pytestmark = pytest.mark.integration
TOPO = """control: underlay
hosts: 3
networks:
  - name: blue
    subnet: 10.78.0.0/24
containers:
  - {name: c1, host: h1, networks: [{name: blue, ip: 10.78.0.11}]}
  - {name: c2, host: h2, networks: [{name: blue, ip: 10.78.0.12}]}
  - {name: c3, host: h3, networks: [{name: blue, ip: 10.78.0.13}]}
"""
IP = {"c1": "10.78.0.11", "c2": "10.78.0.12", "c3": "10.78.0.13"}
CONTROL = "172.30.0.2:7070"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with module_lab(tmp_path_factory.mktemp("run"), TOPO) as the_lab:
        yield the_lab


def ns(lab: Lab, c: str) -> str:
    return lab.container_ns(f"h{c[1:]}", c)


def reaches(lab: Lab, src: str, dst: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns(lab, src), "ping", "-c1", "-W1", IP[dst]],
                          capture_output=True).returncode == 0


def alive(lab: Lab) -> dict[str, bool]:
    return {h.name: h.alive for h in lab.call(lambda c: c.list_hosts())}


def test_agents_dial_the_control_address_across_the_underlay(lab: Lab) -> None:
    assert lab.check().ok
    assert lab.status()["agents_controller"] == CONTROL
    for h in lab.applied.hosts:  # type: ignore[union-attr]
        conns = subprocess.run(["ss", "-N", lab.host_ns(h.name), "-Htn", "state", "established"],
                               capture_output=True, text=True, check=True).stdout
        assert f"{h.underlay_ip}:" in conns and CONTROL in conns, conns
    listening = subprocess.run(["ss", "-N", lab.switch_ns, "-Hltn"], capture_output=True, text=True, check=True).stdout
    assert CONTROL in listening  # the switch's namespace holds the listener
    here = subprocess.run(["ss", "-Hltn"], capture_output=True, text=True, check=True).stdout
    assert CONTROL not in here  # the machine's own does not (the controller runs there, next to etcd)
    san = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                          str(lab.state.dir / "pki" / "controller.crt")], capture_output=True, text=True).stdout
    assert "IP Address:172.30.0.2" in san, san


def test_partition_from_the_control_plane(lab: Lab) -> None:
    """h1 and h2 cut from h3 and the controller: their leases expire, h3 purges them, c1
    and c2 keep reaching each other (their agents keep the peers they last saw alive);
    healed, every host is alive again, h3 has their entries back and the matrix holds."""
    ttl = lab.lease_ttl
    assert lab.check().ok and all(alive(lab).values())
    p12 = Pinger(ns(lab, "c1"), IP["c2"], interval=0.05).start()
    try:
        wait_answers(p12, 5)
        # A partition from the control plane needs a duration: the cut agents cannot hear a
        # heal, they lift it themselves at its deadline (the record's lease ends with it).
        f = lab.add_fault("partition", duration=ttl + 15, hosts=["h1", "h2"], from_=["h3", "control"])
        cut = time.monotonic()
        try:
            expired = time_until(lambda: not any(alive(lab)[h] for h in ("h1", "h2")), timeout=ttl + 30)
            assert expired is not None, f"h1/h2 still alive {ttl + 30}s after the cut (TTL {ttl}s)"
            purged = time_until(lambda: not vtep_entries(lab, "h1")["h3"] and not vtep_entries(lab, "h2")["h3"],
                                timeout=30)
            assert purged is not None, "h3 kept the cut hosts' entries after their leases expired"
            assert alive(lab)["h3"], "h3 (on the controller's side) must stay alive"
            # the cut side: still each other's peers, and forwarding
            assert vtep_entries(lab, "h1")["h2"] and vtep_entries(lab, "h2")["h1"]
            wait_answers(p12, 20)
            assert not reaches(lab, "c1", "c3")
            during = p12.samples()
            assert lost(during) == 0, f"c1->c2 lost {lost(during)} of {len(during)} probes while cut"
        finally:
            lab.heal(f.id)  # the controller and h3 drop it now; h1 and h2 at the deadline
        healed = time.monotonic()
        back = time_until(lambda: all(alive(lab).values()) and vtep_entries(lab, "h1")["h3"] > 0
                          and vtep_entries(lab, "h2")["h3"] > 0, timeout=2 * ttl + 45)
        assert back is not None, "h1/h2 not back on h3 after the heal"
        lab.wait_converged(timeout=30)
        assert all(reaches(lab, a, b) for a in IP for b in IP if a != b)
        # `check` probes through the agents' ops channels: each reopens once its agent finds
        # the old stream dead (HTTP/2 keepalive), then on its own backoff
        holds = time_until(lambda: lab.check().ok, timeout=60, interval=0.5)
        assert holds is not None, lab.check().failures
    finally:
        samples = p12.stop()
    assert lost(samples) == 0, f"c1->c2 lost {lost(samples)} of {len(samples)} probes (the heal included)"
    print(f"\nleases expired {expired:.2f}s after the cut, h3 purged them {purged:.2f}s later "
          f"(TTL {ttl}s); after the heal ({healed - cut:.1f}s after the cut) alive and programmed on h3 in "
          f"{back:.2f}s, `check` (through the agents) held {holds:.2f}s after that; c1->c2 lost none of {len(samples)} probes")
