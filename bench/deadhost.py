"""Dead-host benchmark: host-crash -> every peer purged its entries, and return ->
reachable again, against the lease TTL, several repetitions.

A lab `vxbenchdh` of 4 hosts with one container each. Each repetition crashes h2
(`host-crash`: agent killed, link down), measures until no peer keeps an FDB entry for
h2's VTEP (`observe.vtep_entries`), heals it (link up, agent restarted) and measures
from the heal call until a ping from h1's container reaches h2's again and until every
peer has its entries back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vxlab.bench import firstreply, machine, summary
from vxlab.lab import observe
from vxlab.lab.lab import Lab
from vxlab.lab.topology import parse

NAME = "vxbenchdh"
TOPOLOGY = """name: {name}
hosts: 4
networks:
  - {{name: blue, subnet: 10.85.0.0/24}}
containers:
  - {{name: d1, host: h1, networks: [blue]}}
  - {{name: d2, host: h2, networks: [blue]}}
  - {{name: d3, host: h3, networks: [blue]}}
  - {{name: d4, host: h4, networks: [blue]}}
"""


def reachable_after(ns: str, ip: str, *, timeout: float) -> float | None:
    """Seconds until a 5 ms ping from `ns` to `ip` is first answered, None on timeout."""
    fr = firstreply.FirstReply({"src": ns}, ip).start()
    fr.wait(timeout=timeout)
    got = fr.stop()
    return got["src"] - fr.started if "src" in got else None


def measure(*, reps: int, progress: Callable[[str], None], timeout: float = 60.0) -> dict[str, Any]:
    lab = Lab(NAME)
    lab.down()
    rows = []
    try:
        lab.up(parse(TOPOLOGY.format(name=NAME)))
        ip2 = {e["container"]: e["ip"] for e in lab.containers()}["d2"]
        src = lab.container_ns("h1", "d1")
        firstreply.fast_arp(["ip", "netns", "exec", src])
        before = observe.vtep_entries(lab, "h2")
        for r in range(reps):
            progress(f"deadhost: repetition {r + 1}/{reps}")
            t0 = time.monotonic()
            lab.add_fault("host-crash", host="h2")
            purge = observe.time_until(lambda: not any(observe.vtep_entries(lab, "h2").values()), timeout=timeout)
            t1 = time.monotonic()
            lab.heal()
            heal_s = time.monotonic() - t1
            reach = reachable_after(src, ip2, timeout=timeout)
            reach = None if reach is None else reach + heal_s
            restored = observe.time_until(lambda: observe.vtep_entries(lab, "h2") == before, timeout=timeout)
            back = None if restored is None else time.monotonic() - t1
            rows.append({"purged_s": None if purge is None else round(purge, 2),
                         "reachable_s": None if reach is None else round(reach, 2),
                         "entries_back_s": None if back is None else round(back, 2),
                         "heal_call_s": round(heal_s, 2)})
            lab.wait_converged(timeout=60)
            time.sleep(1)
        ttl = lab.lease_ttl
    finally:
        lab.down()
    return summarize(rows, lease_ttl=ttl)


def summarize(rows: list[dict[str, Any]], *, lease_ttl: float) -> dict[str, Any]:
    purged = [r["purged_s"] for r in rows if r["purged_s"] is not None]
    reach = [r["reachable_s"] for r in rows if r["reachable_s"] is not None]
    return {"lease_ttl_s": lease_ttl, "reps": len(rows),
            "purged_s_median": summary.median(purged) if purged else None,
            "purged_over_ttl": summary.ratio(summary.median(purged), lease_ttl) if purged else None,
            "reachable_s_median": summary.median(reach) if reach else None,
            "not_purged": len(rows) - len(purged), "not_reachable": len(rows) - len(reach), "raw": rows}


def run(out_dir: Path, *, reps: int = 5, progress: Callable[[str], None] = lambda s: None,
        write: bool = True) -> dict[str, Any]:
    row = measure(reps=reps, progress=progress)
    result = {"benchmark": "dead host: host-crash -> every peer purged its FDB entries; heal -> reachable again",
              "target": "purged within ~ the lease TTL", "machine": machine.describe(), "vxlab": row}
    if write:
        result["path"] = str(machine.write(out_dir, "deadhost", result))
    return result
