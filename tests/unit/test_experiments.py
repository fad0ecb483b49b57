"""Fault specs, scenario files and experiment summaries, without root or a lab."""

from __future__ import annotations

from pathlib import Path

import pytest

from vxlab.lab import faultspec, report, scenario
from vxlab.lab.experiment import FaultRun, Pair, Result
from vxlab.lab.faultspec import FaultError

HOSTS = {"h1", "h2", "h3"}


@pytest.mark.parametrize("kind, params, error", [
    ("wobble", {}, "kind: unknown fault kind 'wobble'"),
    ("loss", {"host": "h1"}, "percent: loss needs it"),
    ("loss", {"host": "h9", "percent": 5}, "host: unknown host 'h9'"),
    ("loss", {"host": "h1", "percent": 0}, "percent: must be > 0 and <= 100"),
    ("loss", {"host": "h1", "percent": "lots"}, "percent: not a number"),
    ("loss", {"host": "h1", "percent": 5, "direction": "up"}, "direction: must be one of egress, ingress, both"),
    ("loss", {"host": "h1,h2", "percent": 5}, "host: exactly one host"),
    ("rate", {"host": "h1", "mbit": -1}, "mbit: must be > 0"),
    ("partition", {"hosts": "h1"}, "from: partition needs it"),
    ("partition", {"hosts": "h1", "from": "h1,h2"}, "from: 'h1' is on both sides"),
    ("partition", {"hosts": [], "from": "h2"}, "hosts: names no host"),
    ("etcd-stop", {"host": "h1"}, "host: not a parameter of etcd-stop"),
    ("delay", {"host": "h1", "ms": 10, "jitter_ms": -1}, "jitter_ms: must be >= 0"),
    ("etcd-member-kill", {"member": 2}, "member: the lab's etcd members are 1..1, not 2 (a cluster needs"),
    ("etcd-member-kill", {}, "member: etcd-member-kill needs it"),
])
def test_bad_faults_name_the_field(kind, params, error):
    with pytest.raises(FaultError, match=error.replace("(", r"\(")):
        faultspec.validate(kind, params, hosts=HOSTS)


def test_etcd_members():
    p = faultspec.validate("etcd-member-kill", {"member": "3"}, hosts=HOSTS, members=3)
    assert p == {"member": 3} and faultspec.describe("etcd-member-kill", p) == "etcd-member-kill 3"
    assert faultspec.claims("etcd-member-kill", p) < faultspec.claims("etcd-stop", {})  # they conflict
    with pytest.raises(FaultError, match="member: the lab's etcd members are 1..3, not 4"):
        faultspec.validate("etcd-member-kill", {"member": 4}, hosts=HOSTS, members=3)


def test_fault_normalised_and_described():
    p = faultspec.validate("partition", {"hosts": "h2, h1", "from_": ["h3"]}, hosts=HOSTS)
    assert p == {"hosts": ["h1", "h2"], "from": ["h3"], "oneway": False}
    assert faultspec.describe("partition", p) == "partition h1,h2 <-> h3"
    assert faultspec.validate("loss", {"host": "h1", "percent": "30"}, hosts=HOSTS)["direction"] == "egress"
    assert faultspec.claims("host-crash", {"host": "h1"}) >= faultspec.claims("link-down", {"host": "h1"})
    rate = faultspec.validate("rate", {"host": "h1", "mbit": 5}, hosts=HOSTS)
    assert faultspec.claims("rate", rate) == {"the egress qdisc of h1", "the ingress qdisc of h1"}


def test_partition_from_the_control_plane_only_with_underlay_control():
    p = faultspec.validate("partition", {"hosts": "h1", "from": "h2,control"}, hosts=HOSTS, control=True)
    assert p["from"] == ["control", "h2"] and faultspec.describe("partition", p) == "partition h1 <-> control,h2"
    with pytest.raises(FaultError, match="from: 'control' is the control plane, which a partition cuts only in a lab"
                                         " with `control: underlay`"):
        faultspec.validate("partition", {"hosts": "h1", "from": "control"}, hosts=HOSTS)
    with pytest.raises(FaultError, match="host: unknown host 'control'"):
        faultspec.validate("link-down", {"host": "control"}, hosts=HOSTS, control=True)


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("500ms", 0.5), ("2m", 120), ("1.5", 1.5), (3, 3)])
def test_durations(text, seconds):
    assert faultspec.parse_duration(text) == seconds


SCENARIO = """name: demo
lab:
  name: demo
  hosts: 3
  networks: [{name: blue}]
  containers:
    - {name: c1, host: h1, networks: [blue]}
    - {name: c2, host: h2, networks: [blue]}
probes:
  - all
  - {src: c1, dst: c2, interval: 20ms, tcp: true}
timeline:
  - {at: 5s, fault: {kind: host-crash, host: h2}, for: 3s}
  - {at: 1s, fault: {kind: loss, host: h1, percent: 10}}
"""


def test_scenario_parses(tmp_path: Path):
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO)
    sc = scenario.load(f)
    assert sc.name == "demo" and sc.all_pairs and sc.topology.name == "demo"
    assert [e.kind for e in sc.timeline] == ["loss", "host-crash"]  # sorted by time
    assert sc.duration == 13.0  # the last heal + 5 s
    assert sc.probes[0].interval == 0.02 and sc.probes[0].tcp


@pytest.mark.parametrize("change, error", [
    (("host: h2}, for: 3s}", "host: h9}, for: 3s}"), "timeline[0].fault.host: unknown host 'h9'"),
    (("kind: loss", "kind: lose"), "timeline[1].fault.kind: unknown fault kind 'lose'"),
    (("interval: 20ms", "interval: 2s"), "probes[1].interval: must be between 2ms and 100ms"),
    (("dst: c2,", "dst: c9,"), "probes[1].dst: unknown container 'c9'"),
    (("at: 5s", "at: soon"), "timeline[0].at: not a duration"),
    (("host: h1, networks", "host: h7, networks"), "lab.containers[0].host: unknown host 'h7'"),
    (("name: demo\nlab:", "name: demo\nlabb:"), "labb: unknown key"),
])
def test_bad_scenarios_name_the_path(tmp_path: Path, change, error):
    f = tmp_path / "s.yaml"
    f.write_text(SCENARIO.replace(*change))
    with pytest.raises(scenario.ScenarioError) as e:
        scenario.load(f)
    assert f"{e.value.path}: {e.value.reason}".startswith(error), str(e.value)
    assert e.value.at is not None and str(e.value).startswith(f"{f}:"), str(e.value)  # file:line:column


def test_scenario_lab_from_a_file(tmp_path: Path):
    (tmp_path / "topo.yaml").write_text("name: t\nhosts: 2\n")
    (tmp_path / "s.yaml").write_text("lab: topo.yaml\nprobes: [all]\nduration: 3s\n")
    sc = scenario.load(tmp_path / "s.yaml")
    assert sc.topology.name == "t" and sc.duration == 3.0 and sc.name == "s"
    (tmp_path / "s.yaml").write_text("lab: nope.yaml\nprobes: [all]\n")
    with pytest.raises(scenario.ScenarioError, match="nope.yaml: no such file"):
        scenario.load(tmp_path / "s.yaml")


def _result(tmp_path: Path) -> Result:
    sc = scenario.parse({"lab": {"name": "x", "hosts": 2}, "probes": ["all"], "duration": 10}, base=tmp_path)
    samples = [(t / 10, None if 30 <= t < 52 else 0.2) for t in range(100)]  # lost 3.0 s .. 5.2 s
    pair = Pair("a", "b", "blue", "10.0.0.3", samples=samples, rates=[(1.0, 9.5), (2.0, 10.5)])
    crash = FaultRun("f1", "host-crash", "host-crash h2", ("h2",), start=3.0, via="api", lease=2.0, end=5.0,
                     healed_by="delete", lease_expired={"h2": 1.5}, purged_after=2.0, purged_on=["h1"],
                     restored_after=0.3, converged_after=0.5)
    return Result(sc, 0.0, 10.0, 5, [pair], [crash], "lab x")


def test_summary_outages_and_recovery(tmp_path: Path):
    s = report.summarize(_result(tmp_path))
    p = s["pairs"][0]
    assert (p["sent"], p["lost"], p["loss_pct"]) == (100, 22, 22.0)
    assert p["outages"] == [[3.0, 5.2]] and p["longest_outage_s"] == 2.2
    assert p["recovered_after_heal_s"] == {"f1": 0.2}
    assert p["tcp_mbit_mean"] == 10.0 and p["rtt_p50_ms"] == 0.2
    assert s["faults"][0]["purged_after"] == 2.0


def test_report_files(tmp_path: Path):
    paths = report.write(_result(tmp_path), tmp_path / "out")
    assert paths["timeline.png"].read_bytes()[:4] == b"\x89PNG"
    md = paths["report.md"].read_text()
    assert "| f1 | host-crash h2 | fault API, lease 2 s | 3.00 s | 5.00 s | delete |  |" in md
    assert ("- f1 (host-crash h2): h2's lease expired 1.50 s after the fault started; its peers (h1) had purged "
            "its FDB entries 2.00 s after; after the heal: the peers had its entries back after 0.30 s, everything "
            "converged (every host alive, no agent's drift) after 0.50 s.") in md
    assert "| a->b | blue | 100 | 22 | 22.0 % |" in md
    assert paths["samples.csv"].read_text().splitlines()[31] == "a->b,blue,3.0000,"
