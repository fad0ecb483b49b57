"""Agent full-pass cost: one full reconcile pass (kernel dump of every namespace and of
the agent's own, its nftables tables included, plan, nothing to write) over N network
namespaces, each a non-internal network (bridge, VXLAN device, uplink, NAT table) with
one local container.

The kernel side alone: a throwaway host namespace (`vxt<6 hex>-h`) with a real
NetlinkKernel and Reconciler in a thread inside it, no controller. It also runs on an
older tree (it only uses the Kernel and Reconciler API), so a figure can be compared
with the code before a change: `<other venv>/bin/python bench/fullpass.py`.
The nftables part alone (every network namespace's tables and the agent's, read as a
dump reads them) is timed too. Writes fullpass.json (`python -m vxlab.bench.fullpass [--networks N] [--passes K]`).
"""

from __future__ import annotations

import argparse
import inspect
import ipaddress
import secrets
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

from vxlab import netns
from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo
from vxlab.agent.netlink import NetlinkKernel
from vxlab.agent.reconciler import Reconciler
from vxlab.bench import machine
from vxlab.model import Endpoint, Host, Network, WatchBatch


def _state(networks: int) -> StateCache:
    nets, eps = [], []
    for i in range(networks):
        subnet = ipaddress.IPv4Network(f"10.{100 + i // 256}.{i % 256}.0/24")
        nets.append(Network(f"n{i}", subnet=str(subnet), gateway=str(subnet[1]), vni=4096 + i))
        eps.append(Endpoint(f"c{i}", f"n{i}", "h1", ip=str(subnet[2]), mac=f"02:42:00:00:{i // 256:02x}:{i % 256:02x}",
                            id=f"{i:064x}", created="1"))
    s = StateCache()
    s.apply(WatchBatch(revision=1, snapshot=True, hosts=(Host("h1", "172.31.12.1", alive=True),),
                       networks=tuple(nets), endpoints=tuple(eps)))
    return s


def measure(*, networks: int, passes: int, nft: str = "auto") -> dict[str, Any]:
    tag = "vxt" + secrets.token_hex(3)
    host = f"{tag}-h"
    subprocess.run(["ip", "netns", "add", host], check=True)
    try:
        for cmd in ("link set lo up", "link add u0 type veth peer name u1", "addr add 172.31.12.1/24 dev u0",
                    "link set u0 up", "link set u1 up"):
            subprocess.run(["ip", "-n", host, *cmd.split()], check=True)
        me = HostInfo(name="h1", underlay_ip="172.31.12.1", underlay_mtu=1500, netns_prefix=f"{tag}-")
        state = _state(networks)

        def run() -> dict[str, Any]:
            new = "nft" in inspect.signature(NetlinkKernel).parameters
            kernel = NetlinkKernel(nft=nft) if new else NetlinkKernel()
            try:
                r = Reconciler(kernel, me)
                first = r.reconcile(state, full=True)
                if not first.ok:
                    raise RuntimeError(f"setup pass failed: {first.errors[:3]}")
                times, writes = [], 0
                for _ in range(passes):
                    res = r.reconcile(state, full=True)
                    times.append(res.seconds * 1000)
                    writes += sum(res.writes.values())
                names = [n for n, ns in r.actual(full=True).items() if "vxlab:h1:net:" in ns.marker]
                tables = []  # the nftables part alone: every network namespace's tables, and the agent's
                for _ in range(passes):
                    t0 = time.perf_counter()
                    if new:
                        for n in names:
                            kernel.network_tables(n)
                        kernel.own_tables()
                    else:
                        from vxlab.agent.netlink_policy import read_policy  # the tree before agent/nft.py
                        for n in names:
                            read_policy(n)
                        kernel.vtep_filter()
                    tables.append((time.perf_counter() - t0) * 1000)
                backend = kernel._nft.backend if new else "nft via nsenter (before agent/nft.py)"
                return {"networks": networks, "passes": passes, "backend": backend, "writes": writes,
                        "median_ms": round(statistics.median(times), 2), "mean_ms": round(statistics.fmean(times), 2),
                        "min_ms": round(min(times), 2), "max_ms": round(max(times), 2),
                        "tables_median_ms": round(statistics.median(tables), 2), "tables_min_ms": round(min(tables), 2)}
            finally:
                for ns in kernel.dump(f"{tag}-"):
                    if ns != host:
                        kernel.delete_netns(ns)
                kernel.close()
        def inside() -> dict[str, Any]:
            netns.enter(host)
            return run()
        return netns.in_thread(inside)  # (not run_in: older trees lack it)
    finally:
        for name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split():
            if name.startswith(tag):
                subprocess.run(["ip", "netns", "del", name], check=False)
                netns.remove_etc(name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", type=int, default=50)
    p.add_argument("--passes", type=int, default=20)
    p.add_argument("--nft", default="", help="one backend (auto, libnftables, nft); default: every one this tree has")
    p.add_argument("-o", "--out", type=Path, default=Path("bench/results"))
    p.add_argument("--name", default="fullpass", help="the result file's name (fullpass-before for an older tree)")
    a = p.parse_args()
    new = "nft" in inspect.signature(NetlinkKernel).parameters
    backends = [a.nft] if a.nft else (["libnftables", "nft"] if new else ["auto"])
    rows = [measure(networks=a.networks, passes=a.passes, nft=b) for b in backends]
    for row in rows:
        print(f"{row['backend']:40s} {row['networks']} networks: full pass median {row['median_ms']} ms "
              f"(min {row['min_ms']}, max {row['max_ms']}; {row['writes']} writes); of it nftables reads "
              f"{row['tables_median_ms']} ms (min {row['tables_min_ms']})")
    machine.write(a.out, a.name, {"benchmark": "agent full pass (dump + plan, nothing to write) over N network "
                                  "namespaces; tables_*: its nftables reads alone", "machine": machine.describe(),
                                  "rows": rows})


if __name__ == "__main__":
    main()
