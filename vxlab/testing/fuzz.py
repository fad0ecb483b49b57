"""Fuzzing (hypothesis) of everything that takes input from outside: every RPC of the
controller, and the topology and scenario parsers.

The properties:
- RPCs (the real servicers over the in-memory store, requests generated from the
  protobuf descriptors, so every field of every request gets arbitrary strings, ints,
  bools and label maps): each call succeeds or aborts with INVALID_ARGUMENT, NOT_FOUND,
  ALREADY_EXISTS, FAILED_PRECONDITION or RESOURCE_EXHAUSTED, with one line naming a
  field; never INTERNAL; and a rejected call leaves the store revision unchanged
  (OpsService.Run may also answer UNAVAILABLE: no agent is connected under the fuzzer;
  AgentService.Connect gets a stream of one generated message);
- `topology.parse` and `scenario.parse` on arbitrary YAML-ish structures raise only
  TopologyError / ScenarioError (one line), never another exception; an error in YAML
  text (anything but an empty or too deeply nested document) names its line and column.

`tests/unit/test_fuzz.py` runs each target with a CI-sized example count; the soak is
`vxlab fuzz --examples 10000` (or `python -m vxlab.testing.fuzz --examples 10000`). Needs the
test extra (hypothesis).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller import servicer as servicer_module
from vxlab.controller.store_memory import MemoryStore
from vxlab.lab import scenario, topology, topology_services
from vxlab.model import Host, Network
from vxlab.v1 import vxlab_pb2 as pb

CLEAN = frozenset({"INVALID_ARGUMENT", "NOT_FOUND", "ALREADY_EXISTS", "FAILED_PRECONDITION", "RESOURCE_EXHAUSTED"})
ALSO_CLEAN = {"Run": frozenset({"UNAVAILABLE"})}  # a valid op for a host whose agent is not connected
FIELD_RE = re.compile(r"^[a-z_]+[.:\[]")  # "network.subnet: …", "name: …", "hosts[0].name: …"

# Plausible values mixed with arbitrary ones, so fuzzing also gets past validation.
TEXT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=40),
    st.sampled_from(["h1", "h2", "blue", "red", "web", "10.10.0.0/24", "10.10.0.1", "10.10.0.7", "172.30.0.11",
                     "overlay", "bridge", "", "..", "a/b", "$(reboot)", "a;b", "a\nb", "x" * 64]),
    st.from_regex(r"[a-z][a-z0-9-]{0,12}", fullmatch=True),
)
LABELS = st.dictionaries(TEXT, TEXT, max_size=3)
# Per field name, values that pass validation, so calls also succeed and later ones
# meet existing objects (AlreadyExists, in-use deletes, address clashes).
POOL = {"name": ["h1", "h2", "blue", "red", "web", "db"], "network": ["blue", "red"], "host": ["h1", "h2"],
        "underlay_ip": ["172.30.0.11", "172.30.0.12"], "subnet": ["", "10.10.0.0/24", "10.20.0.0/30"],
        "gateway": ["", "10.10.0.1"], "ip": ["", "10.10.0.7", "10.10.0.1"], "driver": ["", "overlay", "bridge"],
        "mac": ["", "02:00:00:00:00:01"], "id": [""],
        # policies (vxlab.policy): selectors, verdicts, protocols, ports
        "action": ["allow", "deny"], "protocol": ["", "any", "tcp", "icmp"], "ports": ["80", "8000-8099"],
        "container": ["", "web", "db"], "label": ["", "tier=front"], "cidr": ["", "10.10.0.0/28"],
        # ops (vxlab.ops)
        "ProbeSpec.protocol": ["", "icmp", "tcp"], "argv": ["true", "ls"], "filter": ["udp", "port", "4789"],
        "containers": ["web", "db"], "device": ["", "eth0"],
        # updates in place: the fields that may change
        "update_mask": ["mtu", "gateway", "internal", "labels", "aliases", "ports", "netns"],
        # published ports (vxlab.ports) and services (vxlab.services)
        "PortMapping.protocol": ["", "tcp", "udp"], "host_ip": ["", "", "127.0.0.1"],
        "Service.ports": ["80/tcp", "53/udp", "80"], "replicas": ["web", "db"], "vip": ["", "", "10.10.0.200"],
        "affinity": ["", "none", "client-ip"],
        # DNS names of a container on a network ("db" also names a container)
        "aliases": ["cache", "api", "db"],
        # who owns an endpoint's container namespace
        "runtime": ["", "", "docker", "cni"],
        # and where its namespace is (a runtime's only)
        "netns": ["", "", "/run/netns/cni-1", "run/netns/x"],
        # faults (vxlab.faultkinds): kinds, ids, what a host reports
        "Fault.kind": ["loss", "partition", "rate", "delay", "link-down", "agent-kill", "etcd-stop"],
        "Fault.id": [""], "GetFaultRequest.id": ["f1", "f2"], "DeleteFaultRequest.id": ["f1", "f2"],
        "ReportFaultStatusRequest.id": ["f1", "f2"], "FaultStatus.state": ["applied", "failed", "healed", "pending"],
        "FaultStatus.reason": ["", "this kernel has no sch_netem"], "Fault.targets": [""],
        # "Message.field": for that message only (an overlay network names no host)
        "Network.host": ["", "", "h1"], "Network.name": ["green", "gold", "teal", "blue", "red"],
        # a selector sets at most one of its fields
        "Selector.label": ["", "", "tier=front"], "Selector.cidr": ["", "", "10.10.0.0/28"]}
# Plausible maps, per "Message.field" (other maps are empty when plausible).
MAP_POOL = {"Fault.params": [{"host": "h1", "percent": "30"}, {"hosts": "h1", "from": "h2"},
                             {"host": "h2", "mbit": "10", "direction": "egress"}, {"host": "h1", "ms": "5"},
                             {"hosts": "h1", "from": "control"}, {"host": "h1"}]}
INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-2**31, 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-2**31, 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-2**63, 2**63 - 1), FieldDescriptor.TYPE_SINT64: (-2**63, 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
}


def _int(lo: int, hi: int) -> st.SearchStrategy[int]:
    edges = [v for v in (0, 1, -1, 4096, 1450, 9216, 16_777_215, 16_777_216, lo, hi) if lo <= v <= hi]
    return st.one_of(st.just(0), st.integers(lo, hi), st.sampled_from(edges))


INT_POOL = {"mtu": [0, 1400], "vni": [0, 4096, 5000], "lease_ttl": [0, 10], "underlay_mtu": [0, 1500],
            "start_revision": [0, 1, 3], "lease_id": [0, 1, 2], "priority": [0, 100],
            "count": [0, 3], "port": [0, 80], "host_port": [8080, 9000], "container_port": [80]}
FLOAT_POOL = {"timeout": [0.0, 1.0], "interval": [0.0, 0.2], "seconds": [0.0, 1.0], "duration": [0.0, 0.0, 4.0, 0.5]}


def _field(f: FieldDescriptor, *, wild: bool) -> st.SearchStrategy[Any]:
    """Arbitrary values for `f` (`wild`), or plausible ones (that pass validation)."""
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        return LABELS if wild else st.sampled_from(MAP_POOL.get(f"{f.containing_type.name}.{f.name}", [{}]))
    if f.message_type is not None:
        sub = message(f.message_type, wild=wild)
        return st.lists(sub, max_size=2) if f.is_repeated else sub
    pool = POOL.get(f"{f.containing_type.name}.{f.name}", POOL.get(f.name, [""]))
    if f.type == FieldDescriptor.TYPE_STRING and f.is_repeated:
        return st.lists(TEXT, max_size=3) if wild else st.lists(st.sampled_from(pool), max_size=3, unique=True)
    if f.type == FieldDescriptor.TYPE_STRING:
        return TEXT if wild else st.sampled_from(pool)
    if f.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if f.type in INT_RANGES:
        return _int(*INT_RANGES[f.type]) if wild else st.sampled_from(INT_POOL.get(f.name, [0]))
    if f.type == FieldDescriptor.TYPE_DOUBLE:
        return (st.floats(allow_nan=True) if wild else st.sampled_from(FLOAT_POOL.get(f.name, [0.0])))
    if f.type == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=20) if wild else st.just(b"")
    raise TypeError(f"{f.full_name}: no strategy for field type {f.type}")


def _fields(desc: Descriptor, wild: Callable[[FieldDescriptor], bool]) -> st.SearchStrategy[Any]:
    """Messages of type `desc`, each field arbitrary where `wild(field)`, else plausible;
    of each oneof, one member at most (setting them all would always keep the last)."""
    cls = getattr(pb, desc.name)
    plain = st.fixed_dictionaries({f.name: _field(f, wild=wild(f)) for f in desc.fields
                                   if f.containing_oneof is None})
    choices = [st.one_of(st.just({}), *(st.fixed_dictionaries({f.name: _field(f, wild=wild(f))})
                                        for f in oneof.fields)) for oneof in desc.oneofs]
    return st.tuples(plain, *choices).map(lambda parts: cls(**{k: v for part in parts for k, v in part.items()}))


def message(desc: Descriptor, *, wild: bool) -> st.SearchStrategy[Any]:
    """A message of type `desc` with every field arbitrary (`wild`) or plausible."""
    return _fields(desc, lambda _f: wild)


def request(desc: Descriptor) -> st.SearchStrategy[Any]:
    """Requests of type `desc`: empty, plausible, plausible but for one arbitrary field
    (so validation is passed up to it), or arbitrary throughout."""
    cls = getattr(pb, desc.name)
    kinds = [st.just(cls()), message(desc, wild=False), message(desc, wild=True)]
    if desc.fields:
        def one_wild(name: str) -> st.SearchStrategy[Any]:
            return _fields(desc, lambda f: f.name == name)
        kinds.append(st.sampled_from([f.name for f in desc.fields]).flatmap(one_wild))
    # mostly plausible or one field off: calls get far enough to meet existing objects
    weights = [1, 1, 1, 1, 2, 2, 3, 3, 3] if desc.fields else [0]
    return st.sampled_from(weights).flatmap(lambda k: kinds[k])


class Aborted(Exception):
    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code, self.details = code, details


class _Context:
    """The part of grpc.aio.ServicerContext the servicers use."""

    async def abort(self, code: Any, details: str, trailing_metadata: Any = ()) -> None:
        raise Aborted(code.name, details)

    async def send_initial_metadata(self, metadata: Any) -> None:
        """Watch sends its headers at once (a live controller is told from a hung one)."""


def _rpcs(core: Controller) -> dict[str, tuple[Callable[..., Any], Descriptor, bool, bool]]:
    """Every method of every service the proto declares (a new service is fuzzed too):
    (the servicer's method, its request type, client-streaming, server-streaming)."""
    out: dict[str, tuple[Callable[..., Any], Descriptor, bool, bool]] = {}
    for service, desc in pb.DESCRIPTOR.services_by_name.items():
        servicer = getattr(servicer_module, service.removesuffix("Service") + "Servicer")(core)
        for m in desc.methods:
            out[m.name] = (getattr(servicer, m.name), m.input_type, m.client_streaming, m.server_streaming)
    return out


async def _one(request: Any) -> Any:
    yield request


class RpcTarget:
    """One controller (in-memory store, a clock that never moves: no lease expires
    under the fuzzer) for a whole run, so later calls meet what earlier ones made."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.store = MemoryStore(progress_interval=3600, clock=lambda: 0.0)
        self.core = Controller(self.store, Config(lease_ttl=60))
        self.rpcs = _rpcs(self.core)
        self.codes: dict[str, int] = {}
        self.loop.run_until_complete(self._seed())

    async def _seed(self) -> None:
        """Two hosts and two networks, so plausible endpoint and policy requests can
        succeed too; put back before every call when a plausible delete took one (or a
        network in their way makes that impossible: then they stay away)."""
        from vxlab.errors import VxError

        hosts = {h.name for h in (await self.core.hosts.list())[0]}
        for name, ip in (("h1", "172.30.0.11"), ("h2", "172.30.0.12")):
            if name not in hosts:
                await self.core.hosts.register(Host(name=name, underlay_ip=ip))
        nets = {n.name for n in (await self.core.networks.list())[0]}
        for name, subnet in (("blue", "10.10.0.0/24"), ("red", "10.30.0.0/24")):
            if name not in nets:
                try:
                    await self.core.networks.create(Network(name=name, subnet=subnet))
                except VxError:
                    pass

    def close(self) -> None:
        tasks = asyncio.all_tasks(self.loop)  # the watch hub

        async def drain() -> None:
            # Cancelled again until done: a cancel that arrives as the task's wait_for also
            # completes is swallowed (Python 3.11), and the hub then waits on a clock that
            # never moves.
            pending = tasks
            while pending:
                for t in pending:
                    t.cancel()
                _, pending = await asyncio.wait(pending, timeout=0.5)
        self.loop.run_until_complete(drain())
        self.loop.run_until_complete(self.store.close())
        self.loop.close()

    def strategy(self, only: frozenset[str] = frozenset()) -> st.SearchStrategy[tuple[str, Any]]:
        """Requests of every RPC, or of the RPCs named in `only`."""
        return st.one_of(*(request(desc).map(lambda req, n=name: (n, req)) for name, (_, desc, _, _) in
                           self.rpcs.items() if not only or name in only))

    def call(self, name: str, request: Any) -> None:
        """One RPC; an AssertionError when a property does not hold."""
        self.loop.run_until_complete(self._call(name, request))

    async def _call(self, name: str, request: Any) -> None:
        fn, _, client_streaming, server_streaming = self.rpcs[name]
        await self._seed()
        before = await self.store.revision()
        try:
            if server_streaming:
                stream = fn(_one(request) if client_streaming else request, _Context())
                try:  # the first message (a snapshot), or nothing yet (a future revision, no op)
                    await asyncio.wait_for(stream.__anext__(), 0.05)
                except (TimeoutError, StopAsyncIteration):
                    pass
                finally:
                    await stream.aclose()
            else:
                await fn(request, _Context())
            code = "OK"
        except Aborted as e:
            code = e.code
            assert code in CLEAN | ALSO_CLEAN.get(name, frozenset()), f"{name}: {e}"
            assert "\n" not in e.details, f"{name}: a multi-line error: {e.details!r}"
            if code == "INVALID_ARGUMENT":
                assert FIELD_RE.match(e.details), f"{name}: the error names no field: {e.details!r}"
            assert await self.store.revision() == before, f"{name} failed ({e}) but wrote to the store"
        self.codes[f"{name} {code}"] = self.codes.get(f"{name} {code}", 0) + 1


# --- parsers ---------------------------------------------------------------------------
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True), TEXT)
KEYS = st.one_of(TEXT, st.sampled_from([*topology.TOP_KEYS, *topology.NETWORK_KEYS, *topology.CONTAINER_KEYS,
                                        *topology_services.SERVICE_KEYS,
                                        *scenario.KEYS, *scenario.PROBE_KEYS, *scenario.EVENT_KEYS, "kind", "host"]))
TREES = st.recursive(SCALARS, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(KEYS, kids, max_size=5)), max_leaves=20)
TOP = st.dictionaries(KEYS, TREES, max_size=6)
GOOD_LAB = {"name": "fz", "hosts": 2, "networks": [{"name": "blue"}],
            "containers": [{"name": "c1", "host": "h1", "networks": ["blue"]},
                           {"name": "c2", "host": "h2", "networks": ["blue"]}]}


def _one_line(e: Exception) -> None:
    assert "\n" not in str(e), f"a multi-line error: {str(e)!r}"


def check_topology(data: Any, *, as_text: bool) -> None:
    try:
        if as_text:
            topology.parse(data if isinstance(data, str) else yaml.safe_dump(data))
        else:
            topology.from_mapping(data)
    except topology.TopologyError as e:
        _one_line(e)
        if as_text:
            assert e.at is not None or e.reason in ("empty document", "nested too deeply"), f"no position: {e}"


def check_scenario(data: Any, base: Path) -> None:
    try:
        scenario.parse(data, base=base)
    except scenario.ScenarioError as e:
        _one_line(e)
    except topology.TopologyError as e:  # an inline lab's own error (ScenarioError's base)
        _one_line(e)


# --- runners -------------------------------------------------------------------------------
def _settings(examples: int, derandomize: bool) -> settings:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=derandomize,
                    suppress_health_check=list(HealthCheck), print_blob=True)


def run_rpcs(examples: int, *, derandomize: bool = False, only: frozenset[str] = frozenset()) -> dict[str, int]:
    """`only`: fuzz just these RPCs (every one by default)."""
    target = RpcTarget()
    try:
        @_settings(examples, derandomize)
        @given(target.strategy(only))
        def prop(call: tuple[str, Any]) -> None:
            target.call(*call)
        prop()
        return target.codes
    finally:
        target.close()


def run_topology(examples: int, *, derandomize: bool = False) -> dict[str, int]:
    seen = {"cases": 0}

    @_settings(examples, derandomize)
    @given(st.one_of(TOP, TREES, st.text(max_size=200), TOP.map(lambda d: {**GOOD_LAB, **d})), st.booleans())
    def prop(data: Any, as_text: bool) -> None:
        seen["cases"] += 1
        check_topology(data, as_text=as_text)
    prop()
    return seen


def run_scenario(examples: int, *, derandomize: bool = False) -> dict[str, int]:
    seen = {"cases": 0}
    with tempfile.TemporaryDirectory(prefix="vxtfuzz") as tmp:
        base = Path(tmp)
        (base / "lab.yaml").write_text(yaml.safe_dump(GOOD_LAB))

        @_settings(examples, derandomize)
        @given(st.one_of(TOP, TREES, TOP.map(lambda d: {"lab": "lab.yaml", **d}),
                         TOP.map(lambda d: {"lab": GOOD_LAB, **d})))
        def prop(data: Any) -> None:
            seen["cases"] += 1
            check_scenario(data, base)
        prop()
    return seen


# name -> runner(examples, *, derandomize): the counts of what happened (rpc: per method
# and status code). `derandomize` (CI) makes a run repeatable; the soak explores.
TARGETS: dict[str, Callable[..., dict[str, int]]] = {
    "rpc": run_rpcs, "topology": run_topology, "scenario": run_scenario}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vxlab fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--examples", type=int, default=10_000, help="cases per target (default 10000)")
    p.add_argument("--target", choices=sorted(TARGETS), action="append", help="only these (repeatable)")
    args = p.parse_args(argv)
    return soak(args.examples, targets=args.target or sorted(TARGETS))


def soak(examples: int, *, targets: list[str], out: Callable[[str], None] = print) -> int:
    """Run `examples` cases of each target; print a summary; 1 when a property failed."""
    failed = 0
    for name in targets:
        start = time.monotonic()
        try:
            stats = TARGETS[name](examples)
        except Exception as e:  # noqa: BLE001 - hypothesis re-raises the falsifying case
            failed += 1
            out(f"{name}: FAILED after {time.monotonic() - start:.1f}s: {type(e).__name__}: {e}")
            continue
        total = sum(stats.values())
        detail = ", ".join(f"{k} {v}" for k, v in sorted(stats.items()) if k != "cases")
        out(f"{name}: {total} cases ok in {time.monotonic() - start:.1f}s" + (f" ({detail})" if detail else ""))
    out("fuzz: " + ("FAILED" if failed else "all properties held"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
