"""A lab on a 3-member etcd (`etcd: {members: 3}`), issue 8: one member killed →
everything keeps working; two killed → writes answer UNAVAILABLE while the data plane
is untouched; members back → recovery without restarting the controller or agents.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from rig import module_lab

from vxlab.errors import Unavailable
from vxlab.lab.lab import Lab
from vxlab.lab.probe import Pinger
from vxlab.model import Endpoint

pytestmark = pytest.mark.integration
TOPO = """etcd: {members: 3}
hosts: 2
networks:
  - {name: blue, subnet: 10.78.0.0/24}
containers:
  - {name: a, host: h1, networks: [{name: blue, ip: 10.78.0.11}]}
  - {name: b, host: h2, networks: [{name: blue, ip: 10.78.0.12}]}
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with module_lab(tmp_path_factory.mktemp("run"), TOPO) as the_lab:
        yield the_lab


def test_three_members_running(lab: Lab) -> None:
    st = lab.status()
    assert len(st["etcd"]) == 3 and st["etcd_up"] and st["converged"]
    assert all(e.startswith("https://") for e in st["etcd"])  # mTLS to etcd, every member


def test_members_lost_and_back(lab: Lab) -> None:
    pids = {role: p.pid for role, p in lab.processes().items() if not role.startswith("etcd/")}
    probe = Pinger(lab.container_ns("h1", "a"), "10.78.0.12", interval=0.02).start()
    try:
        with lab.fault("etcd-member-kill", member=1):
            lab.container("c1", host="h1", networks=["blue"])  # one member down: all works
            assert lab.check().ok
            with lab.fault("etcd-member-kill", member=2):
                out = subprocess.run([sys.executable, "-m", "vxlab.cli", "--lab", lab.name, "container", "run",
                                      "c2", "--host", "h2", "--network", "blue"],
                                     capture_output=True, text=True, timeout=60)
                assert out.returncode == 1 and "unavailable" in out.stderr
                assert len(out.stderr.strip().splitlines()) == 1
                with pytest.raises(Unavailable):
                    lab.call(lambda c: c.create_endpoint(Endpoint(name="c3", network="blue", host="h1")))
                time.sleep(1.0)  # the data plane keeps going meanwhile
        samples = probe.stop()
    finally:
        lab.heal()
    assert len(samples) > 100 and all(s.rtt_ms is not None for s in samples), "a probe was lost"
    # Back: writes work again, agents converge, and nothing was restarted.
    lab.container("c4", host="h2", networks=["blue"])
    assert lab.check().ok
    assert {role: p.pid for role, p in lab.processes().items() if not role.startswith("etcd/")} == pids
