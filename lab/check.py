"""`check`: prove the overlay with packets — every expectation, one ping each.

Expectations: on every network, every container reaches every other container's
address on it (must-reach); and a container never reaches an address on a network it
is not attached to (must-not-reach: networks are isolated, also when some container
is attached to both). Within a network the policy rules decide (vxlab.policy): a pair
whose ICMP a rule denies must not reach, and the probe names that rule. Pings run in
parallel from inside the container namespaces.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

from vxlab import policy
from vxlab.model import Endpoint, Policy


@dataclass(frozen=True)
class Probe:
    src: str          # container
    dst: str          # container
    network: str      # the network of the destination address
    ip: str
    expect: bool      # True: must reach, False: must not reach
    reached: bool = False
    rule: str = ""    # the policy rule that decided `expect` ("" when none did)

    @property
    def ok(self) -> bool:
        return self.reached == self.expect


@dataclass(frozen=True)
class CheckResult:
    probes: tuple[Probe, ...]

    @property
    def ok(self) -> bool:
        return all(p.ok for p in self.probes)

    @property
    def failures(self) -> list[Probe]:
        return [p for p in self.probes if not p.ok]

    def to_json(self) -> dict[str, object]:
        return {"ok": self.ok, "probes": [asdict(p) | {"ok": p.ok} for p in self.probes],
                "failures": len(self.failures)}


def expectations(endpoints: list[Endpoint], policies: Sequence[Policy] = ()) -> list[Probe]:
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
                probes.append(Probe(src, dst, net, ep.ip, expect=expect, rule=rule.name if rule else ""))
    return probes


def ping(namespace: str, ip: str, *, timeout: float = 1.0) -> bool:
    out = subprocess.run(["ip", "netns", "exec", namespace, "ping", "-n", "-q", "-c", "1", "-W", str(timeout), ip],
                         capture_output=True)
    return out.returncode == 0


def run_check(endpoints: list[Endpoint], namespace_of: Callable[[Endpoint], str], *,
              policies: Sequence[Policy] = (), parallel: int = 16, timeout: float = 1.0) -> CheckResult:
    """Run every probe; a must-reach probe that fails is retried once (ARP warm-up)."""
    first = {ep.name: ep for ep in sorted(endpoints, key=lambda e: e.network)}
    probes = expectations(endpoints, policies)

    def run(p: Probe) -> Probe:
        ns = namespace_of(first[p.src])
        reached = ping(ns, p.ip, timeout=timeout) or (p.expect and ping(ns, p.ip, timeout=timeout))
        return Probe(p.src, p.dst, p.network, p.ip, p.expect, reached, p.rule)

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return CheckResult(tuple(pool.map(run, probes)))
