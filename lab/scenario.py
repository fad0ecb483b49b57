"""Experiment scenario files: which lab, which probes, which faults when.

```yaml
name: crash-h3                 # the experiment's name (default: the file's stem)
lab: ../three-hosts.yaml       # a topology file (relative to this file) or an inline topology;
                               # optional with --controller (a deployment: its containers and hosts)
duration: 30s                  # default: the last heal + 5 s
probes:
  - {src: c1, dst: c3}                       # ping every 100 ms (>= 10 Hz)
  - {src: c1, dst: c2, interval: 20ms}
  - {src: c2, dst: c3, tcp: true}            # and iperf3 TCP throughput, for the whole run
  - all                                      # every pair of containers sharing a network
timeline:
  - at: 5s
    fault: {kind: host-crash, host: h3}
    for: 10s                                 # healed then (default: at the end)
```
The file is YAML 1.2 like a topology file (vxlab.lab.yamlfile: `1:30` is not a number,
`01400` is refused; durations such as `10s` are strings, `at: 1.5` and `percent: 30`
numbers). Every problem is one ScenarioError "file:line:column: path: reason"
(`crash.yaml:12:30: timeline[0].fault.host: unknown host 'h9'`), raised before anything
starts; an error in the topology file it names carries that file's position, one in an
inline topology the scenario's (`lab.containers[0].host`). Without a `lab` the names of
containers and hosts are checked against the deployment when the run is planned
(vxlab.lab.expplan), with the same paths.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vxlab.lab import faultspec, topology
from vxlab.lab.topology import Topology, TopologyError
from vxlab.lab.yamlfile import read_file

KEYS = ("name", "lab", "duration", "probes", "timeline")
PROBE_KEYS = ("src", "dst", "network", "interval", "tcp")
EVENT_KEYS = ("at", "fault", "for")
MAX_INTERVAL = 0.1  # probes run at >= 10 Hz


class ScenarioError(TopologyError):
    """A scenario is invalid; str() is "file:line:column: path: reason"."""


@dataclass(frozen=True)
class ProbeSpec:
    src: str
    dst: str
    network: str = ""
    interval: float = MAX_INTERVAL
    tcp: bool = False
    path: str = field(default="", compare=False)  # where in the scenario: probes[i]


@dataclass(frozen=True)
class Event:
    at: float
    kind: str
    params: dict[str, Any]
    duration: float | None   # None: healed at the end


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: Topology | None     # None: no lab (a deployment's containers, `--controller`)
    probes: tuple[ProbeSpec, ...]
    all_pairs: bool
    timeline: tuple[Event, ...]
    duration: float


def load(path: str | Path) -> Scenario:
    path = Path(path)
    doc = read_file(path, error=ScenarioError)
    if doc.data is None:
        raise ScenarioError(str(path), "empty document")
    try:
        return parse(doc.data, base=path.parent, default_name=path.stem)
    except ScenarioError as e:
        raise doc.locate(e) from None


def parse(data: Any, *, base: Path, default_name: str = "experiment") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError("scenario", "expected a mapping at the top level")
    for k in data:
        if k not in KEYS:
            raise ScenarioError(str(k), "unknown key", on_key=True)
    topo = _lab(data["lab"], base) if data.get("lab") is not None else None
    containers = {c.name for c in topo.containers} if topo else None
    probes, all_pairs = _probes(data.get("probes"), containers)
    hosts = {h.name for h in topo.hosts} if topo else None
    control = topo is None or topo.control == "underlay"  # a deployment's agents dial it across their underlay
    events = tuple(_event(e, f"timeline[{i}]", hosts, topo.etcd_members if topo else 1, control)
                   for i, e in enumerate(_list(data.get("timeline"), "timeline")))
    last = max((e.at + (e.duration or 0.0) for e in events), default=0.0)
    duration = _duration(data["duration"], "duration") if data.get("duration") is not None else last + 5.0
    if duration <= 0:
        raise ScenarioError("duration", "must be positive")
    for i, e in enumerate(events):
        if e.at >= duration:
            raise ScenarioError(f"timeline[{i}].at", f"{e.at:g}s is not before the end ({duration:g}s)")
    name = data.get("name") or default_name
    if not isinstance(name, str):
        raise ScenarioError("name", "expected a string")
    return Scenario(name, topo, probes, all_pairs, tuple(sorted(events, key=lambda e: e.at)), duration)


def _lab(raw: Any, base: Path) -> Topology:
    try:
        if isinstance(raw, str):
            return topology.load(base / raw)
        if isinstance(raw, dict):
            return topology.from_mapping(raw)
    except TopologyError as e:
        if isinstance(raw, dict):  # inline: a path in this file
            raise ScenarioError(f"lab.{e.path}" if e.path else "lab", e.reason, on_key=e.on_key) from None
        if e.at is not None:  # in the topology file, at its position there
            raise ScenarioError(e.path, e.reason, on_key=e.on_key, at=e.at) from None
        raise ScenarioError("lab", str(e)) from None  # the file as a whole: missing, unreadable, empty
    raise ScenarioError("lab", "required: a topology file name or an inline topology")


def _list(raw: Any, path: str) -> list[Any]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ScenarioError(path, "expected a list")
    return raw


def _probes(raw: Any, containers: set[str] | None) -> tuple[tuple[ProbeSpec, ...], bool]:
    items = _list(raw, "probes")
    if not items:
        raise ScenarioError("probes", "required: at least one probe (or `all`)")
    out, all_pairs = [], False
    for i, p in enumerate(items):
        path = f"probes[{i}]"
        if p == "all":
            all_pairs = True
            continue
        if not isinstance(p, dict):
            raise ScenarioError(path, "expected a mapping {src, dst, …} or `all`")
        for k in p:
            if k not in PROBE_KEYS:
                raise ScenarioError(f"{path}.{k}", "unknown key", on_key=True)
        for k in ("src", "dst"):
            if not isinstance(p.get(k), str) or (containers is not None and p[k] not in containers):
                raise ScenarioError(f"{path}.{k}", f"unknown container {p.get(k)!r}")
        interval = _duration(p.get("interval", MAX_INTERVAL), f"{path}.interval")
        if not 0.002 <= interval <= MAX_INTERVAL:
            raise ScenarioError(f"{path}.interval", "must be between 2ms and 100ms (probes run at >= 10 Hz)")
        if not isinstance(p.get("tcp", False), bool):
            raise ScenarioError(f"{path}.tcp", "expected true or false")
        out.append(ProbeSpec(p["src"], p["dst"], str(p.get("network") or ""), interval, p.get("tcp", False), path))
    return tuple(out), all_pairs


def _event(raw: Any, path: str, hosts: set[str] | None, members: int, control: bool) -> Event:
    if not isinstance(raw, dict):
        raise ScenarioError(path, "expected a mapping {at, fault, for}")
    for k in raw:
        if k not in EVENT_KEYS:
            raise ScenarioError(f"{path}.{k}", "unknown key", on_key=True)
    if "at" not in raw:
        raise ScenarioError(f"{path}.at", "required")
    fault = raw.get("fault")
    if not isinstance(fault, dict) or "kind" not in fault:
        raise ScenarioError(f"{path}.fault", "required: a mapping with a `kind`")
    params = {k: v for k, v in fault.items() if k != "kind"}
    try:
        params = faultspec.validate(str(fault["kind"]), params, hosts=hosts, members=members, control=control)
    except faultspec.FaultError as e:
        field, _, reason = str(e).partition(": ")
        raise ScenarioError(f"{path}.fault.{field}", reason) from None
    duration = _duration(raw["for"], f"{path}.for") if raw.get("for") is not None else None
    return Event(_duration(raw["at"], f"{path}.at"), str(fault["kind"]), params, duration)


def _duration(value: Any, path: str) -> float:
    try:
        return faultspec.parse_duration(value, field=path)
    except faultspec.FaultError as e:
        raise ScenarioError(path, str(e).partition(": ")[2]) from None


def locate(path: str | Path, err: ScenarioError) -> ScenarioError:
    """`err` (found later, against a deployment) at its position in the file at `path`."""
    if err.at is not None:
        return err
    try:
        return read_file(path, error=ScenarioError).locate(err)  # type: ignore[return-value]
    except TopologyError:
        return err
