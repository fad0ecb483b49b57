"""Docker swarm's overlay measured like vxlab: data plane (2 nodes, each underlay MTU),
container run -> first reply from every other node, and dead host (dockerd killed +
link down -> peers purged; dockerd back -> reachable).

Each part builds its own `docker.Swarm` and tears it down, also on failure. When
Docker cannot run here the result says so (`skipped`) instead of failing the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vxlab.bench import dataplane, firstreply, machine, netperf, summary
from vxlab.bench.docker import DockerUnavailable, Swarm, check


def _version() -> str:
    import subprocess

    p = subprocess.run(["dockerd", "--version"], capture_output=True, text=True, check=False)
    return p.stdout.strip()


def data_plane(*, mtus: list[int], reps: int, seconds: float, pings: int,
               progress: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    for mtu in mtus:
        progress(f"docker dataplane mtu {mtu}")
        with Swarm(2, mtu=mtu) as s:
            s.run("h1", "ca")
            s.run("h2", "cb")
            paths = (dataplane.Path2("underlay", netperf.in_ns(s.ns("h1")), netperf.in_ns(s.ns("h2")), s.ips["h2"]),
                     dataplane.Path2("overlay", s.prefix("h1", "ca"), s.prefix("h2", "cb"), s.ip("h2", "cb")))
            m = dataplane.measure_paths(paths, reps=reps, seconds=seconds, pings=pings, profile=True)
            rows.append({"underlay_mtu": mtu, **dataplane.with_ratios(m, base="underlay", other="overlay")})
    return rows


def control_plane(*, hosts: int, samples: int, progress: Callable[[str], None],
                  timeout: float = 10.0) -> dict[str, Any]:
    progress(f"docker controlplane: swarm of {hosts}")
    rows = []
    with Swarm(hosts) as s:
        for h in range(1, hosts + 1):
            s.run(f"h{h}", f"p{h}")
        srcs = {f"h{h}": s.netns_path(f"h{h}", f"p{h}") for h in range(1, hosts + 1)}
        for ns in srcs.values():
            firstreply.fast_arp(["nsenter", f"--net={ns}"])
        for i in range(samples):
            target = f"h{i % hosts + 1}"
            ip = f"10.90.{1 + i // 250}.{i % 250 + 2}"
            fr = firstreply.FirstReply({h: p for h, p in srcs.items() if h != target}, ip).start()
            t0 = time.monotonic()
            s.run(target, f"s{i}", ip=ip)
            call = time.monotonic() - t0
            fr.wait(timeout=timeout)
            got = fr.stop()
            rows.append({"target": target, "run_call_ms": round(call * 1000, 1),
                         "first_reply_ms": {h: round((t - t0) * 1000, 1) for h, t in got.items()},
                         "missing": sorted(set(srcs) - {target} - set(got))})
            progress(f"docker controlplane: sample {i + 1}/{samples}")
    per_peer = [v for r in rows for v in r["first_reply_ms"].values()]
    slowest = [max(r["first_reply_ms"].values()) for r in rows if r["first_reply_ms"] and not r["missing"]]
    return {"hosts": hosts, "samples": len(rows), "first_reply_ms": summary.dist(per_peer),
            "all_peers_ms": summary.dist(slowest), "run_call_ms": summary.dist([r["run_call_ms"] for r in rows]),
            "missing_replies": sum(len(r["missing"]) for r in rows), "raw": rows}


def dead_host(*, reps: int, progress: Callable[[str], None], timeout: float = 60.0) -> dict[str, Any]:
    from vxlab.lab.observe import time_until

    rows = []
    with Swarm(4) as s:
        for h in range(1, 5):
            s.run(f"h{h}", f"d{h}")
        ip2 = s.ip("h2", "d2")
        before = s.vtep_entries("h2")
        for r in range(reps):
            progress(f"docker deadhost: repetition {r + 1}/{reps}")
            src = s.netns_path("h1", "d1")
            firstreply.fast_arp(["nsenter", f"--net={src}"])
            s.crash("h2")
            purge = time_until(lambda: not any(s.vtep_entries("h2").values()), timeout=timeout, interval=0.2)
            t1 = time.monotonic()
            s.restore("h2")
            s.docker("h2", "start", "d2", check_=False, timeout=60)
            fr = firstreply.FirstReply({"src": src}, s.ip("h2", "d2") or ip2).start()
            fr.wait(timeout=timeout)
            got = fr.stop()
            rows.append({"purged_s": None if purge is None else round(purge, 2),
                         "reachable_s": round(got["src"] - t1, 2) if "src" in got else None,
                         "entries_before": sum(before.values())})
    purged = [r["purged_s"] for r in rows if r["purged_s"] is not None]
    reach = [r["reachable_s"] for r in rows if r["reachable_s"] is not None]
    return {"reps": len(rows), "timeout_s": timeout, "purged_s_median": summary.median(purged) if purged else None,
            "reachable_s_median": summary.median(reach) if reach else None,
            "not_purged": len(rows) - len(purged), "not_reachable": len(rows) - len(reach), "raw": rows}


def run(out_dir: Path, *, mtus: list[int] | None = None, reps: int = 7, seconds: float = 3.0, pings: int = 400,
        hosts: int = 10, samples: int = 20, dead_reps: int = 3, progress: Callable[[str], None] = lambda s: None,
        write: bool = True) -> dict[str, Any]:
    result: dict[str, Any] = {"benchmark": "Docker swarm overlay, measured like vxlab (same machine, same run)",
                              "machine": machine.describe()}
    try:
        check()
        result["docker"] = _version()
        result["dataplane"] = data_plane(mtus=mtus or [1500, 9000], reps=reps, seconds=seconds, pings=pings,
                                         progress=progress)
        result["controlplane"] = control_plane(hosts=hosts, samples=samples, progress=progress)
        result["deadhost"] = dead_host(reps=dead_reps, progress=progress)
    except DockerUnavailable as e:
        result["skipped"] = str(e)
        progress(f"docker: skipped: {e}")
    if write:
        result["path"] = str(machine.write(out_dir, "docker", result))
    return result
