"""`check`: prove the overlay with packets — every expectation, one echo each.

Expectations: on every network, every container reaches every other container's
address on it (must-reach); and a container never reaches an address on a network it
is not attached to (must-not-reach: networks are isolated, also when some container
is attached to both). Within a network the policy rules decide (vxlab.policy): a pair
whose ICMP a rule denies must not reach, and the probe names that rule. And every
service's VIP (vxlab.services) is reached from every container on its network (the
echo goes to one replica, chosen by the client's namespace); the policy rules see the
replica's address, so a VIP must not reach when the rules deny ICMP to every replica,
and is not probed when they allow some and deny others (either may be chosen). A
service with no replica must not reach (its VIP is refused).

The echoes are sent by the agents, through the ops channel (`run`): the probes are
grouped by the source container's host, one probe batch per host, every host at once
(a raw ICMP socket inside each source namespace, vxlab.icmp; a runtime's container's
is the one its endpoint records, agent/runtime_ns.py). So `check` works the
same in a lab and against real hosts (`--controller ADDR --pki DIR`, nothing local).
A must-reach probe that fails is tried once more (ARP warm-up). A host whose agent
cannot be reached fails its probes, with the reason. `run_local` pings from
namespaces on this machine (`ip netns exec … ping`), for what no agent manages (a
lab's `network_mode: none` containers) and as the baseline of `vxlab bench check`.

`drift` is `check --kernel`: every host's agent plans against a fresh dump of its
kernel (a dry run) and lists what it would add (missing), delete (stale) or change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from vxlab import hostops, policy, services
from vxlab.client import Client
from vxlab.errors import Unavailable
from vxlab.model import Endpoint, Policy, Service
from vxlab.ops import DriftEntry, OpFailed, ProbeResult, ProbeSpec


@dataclass(frozen=True)
class Expectation:
    """What `check` expects of one source and address (reached or not), and what one echo showed."""

    src: str          # container
    dst: str          # container, or `<service> (vip)`
    network: str      # the network of the destination address
    ip: str
    expect: bool      # True: must reach, False: must not reach
    reached: bool = False
    rule: str = ""    # the policy rule that decided `expect` ("" when none did)
    error: str = ""   # why it was not reached, when known (its agent unreachable, …)
    skipped: str = "" # why it was not probed (a runtime's container whose namespace nobody recorded)

    @property
    def ok(self) -> bool:
        """Held (a probe not sent is no failure: `CheckResult.skipped` lists them)."""
        return bool(self.skipped) or self.reached == self.expect


@dataclass(frozen=True)
class CheckResult:
    probes: tuple[Expectation, ...]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.probes)

    @property
    def failures(self) -> list[Expectation]:
        return [p for p in self.probes if not p.ok]

    @property
    def skipped(self) -> list[Expectation]:
        return [p for p in self.probes if p.skipped]

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "probes": [asdict(p) | {"ok": p.ok} for p in self.probes],
                "failures": len(self.failures), "skipped": len(self.skipped)}


def not_probed(ep: Endpoint) -> str:
    """Why `check` sends no probe from this container ("" when it does): a runtime's
    container (Docker, CNI) whose endpoint records no namespace (`Endpoint.netns`: one
    made before vxlab recorded them, or a Docker endpoint not joined to its sandbox)
    cannot be entered by its agent; probes *to* it are sent as to any container. One
    whose namespace is recorded is probed from like any other (its agent checks that
    the namespace holds the endpoint first)."""
    return (f"{ep.name} is a {ep.runtime} container whose endpoint records no namespace, so its agent cannot "
            "enter it (reconnect it to the network); probes to it are sent") if ep.runtime and not ep.netns else ""


def expectations(endpoints: list[Endpoint], policies: Sequence[Policy] = (),
                 vips: Sequence[Service] = ()) -> list[Expectation]:
    by_container: dict[str, dict[str, Endpoint]] = {}
    for ep in endpoints:
        by_container.setdefault(ep.name, {})[ep.network] = ep
    probes = []
    for src, mine in sorted(by_container.items()):
        for dst, theirs in sorted(by_container.items()):
            if src == dst:
                continue
            for net, ep in sorted(theirs.items()):
                rule = policy.decide(policies, mine[net], ep, protocol="icmp") if net in mine else None
                expect = net in mine and (rule is None or rule.action == "allow")
                probes.append(Expectation(src, dst, net, ep.ip, expect=expect, rule=rule.name if rule else ""))
    for s in sorted(vips, key=lambda s: (s.network, s.name)):
        replicas = services.replicas(s, endpoints)
        for src, mine in sorted(by_container.items()):
            if s.network not in mine or not s.vip:
                continue
            rules = [policy.decide(policies, mine[s.network], r, protocol="icmp") for r in replicas]
            denied = [r for r in rules if r is not None and r.action != "allow"]
            if denied and len(denied) < len(rules):
                continue  # some replicas allow it, some do not: either may be chosen
            probes.append(Expectation(src, f"{s.name} (vip)", s.network, s.vip,
                                      expect=bool(replicas) and not denied, rule=denied[0].name if denied else ""))
    return probes


async def run(client: Client, endpoints: list[Endpoint], *, policies: Sequence[Policy] = (),
              vips: Sequence[Service] = (), timeout: float = 1.0) -> CheckResult:
    """Every expectation, probed by the agents of the source containers' hosts."""
    why = {ep.name: w for ep in endpoints if (w := not_probed(ep))}
    every = expectations(endpoints, policies, vips)
    probes = [p for p in every if p.src not in why]
    host_of = {ep.name: ep.host for ep in endpoints}
    results = await _probe(client, probes, host_of, timeout=timeout)
    again = [i for i, (p, r) in enumerate(zip(probes, results, strict=True)) if p.expect and not r.reached]
    if again:
        retried = await _probe(client, [probes[i] for i in again], host_of, timeout=timeout)
        for i, r in zip(again, retried, strict=True):
            results[i] = r
    done = iter([dataclasses.replace(p, reached=r.reached, error="" if r.reached else r.error)
                 for p, r in zip(probes, results, strict=True)])
    return CheckResult(tuple(dataclasses.replace(p, skipped=why[p.src]) if p.src in why else next(done)
                             for p in every))


async def _probe(client: Client, probes: Sequence[Expectation], host_of: dict[str, str], *,
                 timeout: float) -> list[ProbeResult]:
    """One batch per source host, all at once; results in `probes`' order."""
    by_host: dict[str, list[int]] = {}
    for i, p in enumerate(probes):
        by_host.setdefault(host_of[p.src], []).append(i)
    out: list[ProbeResult] = [ProbeResult(i, False) for i in range(len(probes))]

    async def batch(host: str, idx: list[int]) -> None:
        try:
            got = await hostops.probe(client, host, [ProbeSpec(probes[i].src, probes[i].ip, timeout=timeout)
                                                     for i in idx])
        except (Unavailable, OpFailed) as e:  # that host's agent: the others still tell
            got = [ProbeResult(k, False, error=e.message) for k in range(len(idx))]
        for i, r in zip(idx, got, strict=True):
            out[i] = r
    await asyncio.gather(*(batch(h, idx) for h, idx in by_host.items()))
    return out


async def check(client: Client, *, timeout: float = 1.0) -> CheckResult:
    """`run` over every endpoint, policy and service the controller has."""
    endpoints, rules, vips = await asyncio.gather(client.list_endpoints(), client.list_policies(),
                                                  client.list_services())
    return await run(client, endpoints, policies=rules, vips=vips, timeout=timeout)


def ping(namespace: str, ip: str, *, timeout: float = 1.0) -> bool:
    out = subprocess.run(["ip", "netns", "exec", namespace, "ping", "-n", "-q", "-c", "1", "-W", str(timeout), ip],
                         capture_output=True)
    return out.returncode == 0


def run_local(probes: Sequence[Expectation], namespace_of: Callable[[str], str], *, parallel: int = 16,
              timeout: float = 1.0) -> CheckResult:
    """`probes` pinged from this machine, from `namespace_of(src container)`; a
    must-reach probe that fails is retried once (ARP warm-up)."""
    def one(p: Expectation) -> Expectation:
        ns = namespace_of(p.src)
        reached = ping(ns, p.ip, timeout=timeout) or (p.expect and ping(ns, p.ip, timeout=timeout))
        return dataclasses.replace(p, reached=reached)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return CheckResult(tuple(pool.map(one, probes)))


@dataclass(frozen=True)
class HostDrift:
    """`check --kernel` for one host: what its agent's dry-run plan would change."""

    host: str
    entries: tuple[DriftEntry, ...] = ()
    error: str = ""              # the drift op could not run there (its agent unreachable, …)
    revision: int = 0
    applied_revision: int = 0

    @property
    def ok(self) -> bool:
        return not self.error and not self.entries

    def to_json(self) -> dict[str, object]:
        return asdict(self) | {"ok": self.ok}


async def drift(client: Client) -> list[HostDrift]:
    """Every host's drift (its agent's plan against a fresh dump), all hosts at once."""
    async def one(host: str) -> HostDrift:
        try:
            r = await hostops.drift(client, host)
        except (Unavailable, OpFailed) as e:
            return HostDrift(host, error=e.message)
        return HostDrift(host, r.entries, revision=r.revision, applied_revision=r.applied_revision)
    hosts = await client.list_hosts()
    return list(await asyncio.gather(*(one(h.name) for h in sorted(hosts, key=lambda h: h.name))))
