"""`vxlab doctor` on this machine, `up`'s preflight, and `up` failing fast when agents
cannot do their job — with real labs whose processes miss `nft`.

An nft-less PATH is a directory of symlinks to everything on our PATH but `nft`; only the
lab under test (its `vxlab up`, or the processes it starts) gets it, so nothing else on
the machine changes. Labs are named `vxt<6 hex>` and taken down also on failure.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vxlab.lab import doctor, procs
from vxlab.lab.converge import NotConverged
from vxlab.lab.lab import Lab
from vxlab.lab.sysprobe import System
from vxlab.lab.topology import parse
from vxlab.model import Endpoint

pytestmark = pytest.mark.integration
TOPO = """hosts: 2
networks:
  - {name: blue, subnet: 10.10.0.0/24}
containers:
  - {name: a, host: h1, networks: [blue]}
  - {name: b, host: h2, networks: [blue]}
"""


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    run = tmp_path / "run"
    monkeypatch.setenv("VXLAB_RUN", str(run))
    monkeypatch.delenv("VXLAB_CONTROLLER", raising=False)
    yield run
    for lab in (p.name for p in run.iterdir()) if run.exists() else ():
        Lab(lab).down()


@pytest.fixture
def no_nft(tmp_path: Path) -> str:
    """A PATH with every command of ours but nft."""
    bindir = tmp_path / "bin-without-nft"
    bindir.mkdir()
    for d in os.environ["PATH"].split(os.pathsep):
        for name in (os.listdir(d) if os.path.isdir(d) else ()):
            if name != "nft" and not (bindir / name).exists():
                (bindir / name).symlink_to(os.path.join(d, name))
    assert System(path=str(bindir)).which("nft") is None
    return str(bindir)


def namespaces(prefix: str) -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.startswith(prefix)}


def test_doctor_json_on_this_machine():
    """vxlan works here and sch_netem does not (the brief's facts); every other kernel
    answer agrees with our own attempt in a namespace of the test's."""
    before = namespaces("vxd")
    out = subprocess.run([sys.executable, "-m", "vxlab.cli", "doctor", "--json"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    rows = {(r["group"], r["name"]): r for r in data["rows"]}
    assert data["lab_can_run"] is True and not any(r["blocker"] for r in data["rows"])
    assert rows[("kernel", "vxlan")]["state"] == "ok"
    assert rows[("kernel", "sch_netem")]["state"] == "absent"
    assert "use a VM host" in rows[("kernel", "sch_netem")]["fix"]
    ns = "vxt" + secrets.token_hex(3)
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        mine = {
            "sch_netem": ["tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
            "wireguard": ["ip", "-n", ns, "link", "add", "vxtw", "type", "wireguard"],
            "bridge": ["ip", "-n", ns, "link", "add", "vxtb", "type", "bridge"],
        }
        for feature, argv in mine.items():
            works = subprocess.run(argv, capture_output=True).returncode == 0
            assert (rows[("kernel", feature)]["state"] == "ok") == works, feature
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=True)
    assert rows[("tool", "ip")]["state"] == "ok" and rows[("tool", "ip")]["detail"][0].isdigit()
    assert rows[("etcd", "etcd")]["state"] in ("ok", "warn")
    assert namespaces("vxd") <= before, "the throwaway namespace is gone"


def test_up_without_nft_is_refused_before_anything_is_made(run, no_nft, tmp_path):
    name = "vxt" + secrets.token_hex(3)
    topo = tmp_path / "t.yaml"
    topo.write_text(f"name: {name}\n{TOPO}")
    out = subprocess.run([sys.executable, "-m", "vxlab.cli", "up", str(topo)], capture_output=True, text=True,
                         env={**os.environ, "PATH": no_nft}, timeout=40)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == ["error: lab: cannot run here: nft missing (apt-get install nftables)"]
    assert not (run / name).exists() and namespaces(f"vx-{name}.") == set()


def nft_less_lab(monkeypatch: pytest.MonkeyPatch, no_nft: str) -> None:
    """From here on, what the lab starts (etcd, controller, agents) runs without nft;
    the preflight still looks at this machine with our PATH (which has nft)."""
    ours, real = os.environ["PATH"], doctor.preflight
    monkeypatch.setattr(doctor, "preflight", lambda system=None: real(system or System(path=ours)))
    monkeypatch.setenv("PATH", no_nft)
    monkeypatch.setenv("VXLAB_NFT_BACKEND", "nft")  # agents would not need the command with libnftables


def test_up_stops_as_soon_as_every_agent_fails_and_names_each_host(run, no_nft, monkeypatch):
    nft_less_lab(monkeypatch, no_nft)
    name = "vxt" + secrets.token_hex(3)
    lab, told = Lab(name), []
    with pytest.raises(NotConverged) as e:
        lab.up(parse(f"name: {name}\n{TOPO}"), notice=told.append)
    assert set(e.value.waiting.failing) == {"h1", "h2"}
    assert "the full pass of every agent fails" in str(e.value) and "nft" in str(e.value)
    failing = [line for line in told if line.startswith(("h1: ", "h2: "))]
    assert len(failing) == 2 and all("nft" in line for line in failing), told


def test_timeout_names_the_hosts_that_keep_failing(run, no_nft, monkeypatch):
    name = "vxt" + secrets.token_hex(3)
    lab = Lab(name)
    lab.up(parse(f"name: {name}\n{TOPO}"))
    lab.state.agents["h2"].stop()  # h2's agent comes back without nft; h1's keeps working
    nft_less_lab(monkeypatch, no_nft)
    procs.start_agents(lab.state, lab.layout, ["h2"])
    lab.call(lambda c: c.create_endpoint(Endpoint(name="c", network="blue", host="h1")))
    with pytest.raises(procs.LabError) as e:
        lab.wait_converged(timeout=5)
    assert not isinstance(e.value, NotConverged), "h1 converged: not every agent fails"
    message = str(e.value)
    assert message.startswith("timed out after 5s waiting for agents to converge") and "h2: " in message
    assert "nft" in message and "h1" not in message


def test_up_stops_when_an_agent_exits_before_registering(run):
    name = "vxt" + secrets.token_hex(3)
    lab = Lab(name)
    topo = parse(f"name: {name}\n{TOPO}")
    lab.up(topo)
    lab.state.agents["h2"].stop()
    ns = lab.host_ns("h2")
    subprocess.run(["ip", "netns", "delete", ns], check=True)
    Path(f"/run/netns/{ns}").touch()  # listed, but no namespace: the new agent cannot enter it
    with pytest.raises(procs.LabError) as e:
        lab.up(topo)
    assert "the agent of h2 exited before registering" in str(e.value)
