"""A kernel CPU profile of one data-plane workload with `perf`, grouped by where the
time goes (copy, checksum, netfilter/conntrack, VXLAN + UDP, bridge, veth, routing,
TCP, IP/ICMP, netdev core/softirq, memory, scheduler/syscalls).

`perf record -e cpu-clock -a -g` (a software event: this VM exposes no hardware PMU)
samples every CPU while the workload runs; `perf script` gives each sample's command
and kernel call chain. Only samples of the workload's own commands (iperf3, ping) and
of softirq threads count (the machine is shared: other people's processes are left out;
packets here are processed in softirq on the sender's CPU, so in its context). A sample
goes to the category of the innermost frame that names one (from the leaf upwards), so
a spinlock release or a hash function counts for its caller (`_raw_spin_unlock…` is
where cpu-clock lands after an irqs-off section, not where the time went).

`parse` and `categorize` are pure (unit-tested); `record` runs perf.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

FREQ = 999  # samples per second per CPU

# (category, pattern on a kernel symbol); the first match, innermost frame first, wins
CATEGORIES: list[tuple[str, re.Pattern[str]]] = [
    ("idle", re.compile(r"^(pv_native_safe_halt|default_idle|cpu_idle_poll|do_idle|acpi_idle|intel_idle|"
                        r"native_safe_halt)")),
    ("copy user<->kernel", re.compile(r"^(rep_movs_alternative|_copy_(to|from)_iter|_copy_(to|from)_user|"
                                      r"copy_user|__copy_|skb_copy_datagram|simple_copy_to_iter|"
                                      r"csum_and_copy)")),
    ("checksum", re.compile(r"csum")),
    ("netfilter + conntrack", re.compile(r"^(nf_|nft_|__nf_|ipt_|br_nf|ip_sabotage|hash_conntrack|"
                                         r"nf_conntrack|__nft|ipv4_conntrack|ipv4_confirm|ct_)")),
    ("vxlan + outer UDP", re.compile(r"^(vxlan_|__vxlan|udp_tunnel|iptunnel_|gro_cell|__udp4_lib|udp_rcv|"
                                     r"udp_queue_rcv|udp_unicast_rcv|udp_gro|udp4_|skb_udp_tunnel|"
                                     r"udp_tunnel_xmit|udp_set_csum|__udp_gso)")),
    ("bridge", re.compile(r"^(br_|__br_|fdb_|nbp_)")),
    ("veth", re.compile(r"^(veth_|__veth)")),
    ("routing", re.compile(r"^(fib_|ip_route_|ipv4_dst|dst_|__ip_route|ip_rt_|rt_|__fib)")),
    ("TCP", re.compile(r"^(tcp_|__tcp|inet_csk|tcp4_|__inet_lookup|inet_ehash|sk_stream|__sk_mem|sk_mem)")),
    ("IP / ICMP / raw", re.compile(r"^(ip_|__ip_|icmp_|raw_|ping_|inet_|__inet)")),
    ("netdev core / softirq", re.compile(r"^(__dev_queue_xmit|dev_hard_start_xmit|netif_|__netif|process_backlog|"
                                         r"net_rx_action|napi_|__napi|eth_type_trans|validate_xmit|skb_|__skb|"
                                         r"handle_softirqs|__local_bh|do_softirq|enqueue_to_backlog|dev_|"
                                         r"__dev_|gro_|dev_gro|__build_skb|alloc_skb|__alloc_skb|consume_skb|"
                                         r"kfree_skb|sk_skb|sock_wfree|__kfree_skb)")),
    ("memory", re.compile(r"^(kmem_|kfree|__kmalloc|kmalloc|__alloc_pages|alloc_pages|get_page_from_freelist|"
                          r"free_|__free|page_|__page|__folio|folio_|rmqueue|__slab|slab_|___slab)")),
    ("scheduler / syscalls", re.compile(r"^(schedule|__schedule|finish_task_switch|do_syscall|entry_|"
                                        r"syscall_|__x64_sys|ksys_|vfs_|sock_|__sys_|do_select|core_sys_select|"
                                        r"do_pselect|try_to_wake|ttwu|enqueue_task|dequeue_task|pick_next|"
                                        r"__wake_up|poll|sys_)")),
]
SOFTIRQ_COMMS = re.compile(r"^(ksoftirqd/\d+|swapper)")
_FRAME = re.compile(r"^\s*[0-9a-f]+\s+(\S+)\s+\((.*)\)\s*$")


def parse(text: str) -> list[tuple[str, list[str]]]:
    """`perf script -F comm,ip,sym,dso` output -> [(comm, [kernel symbol, innermost
    first])]; user-space frames are dropped (a sample with none left was in user space)."""
    samples: list[tuple[str, list[str]]] = []
    comm: str | None = None
    frames: list[str] = []
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if comm is not None:
                samples.append((comm, frames))
            comm, frames = None, []
        elif line[0] not in " \t":
            comm = line.strip()
        else:
            m = _FRAME.match(line)
            if m and m.group(2) == "[kernel.kallsyms]":
                frames.append(m.group(1).split("+")[0])
    return samples


def category(frames: list[str]) -> str:
    """The category of a sample's kernel call chain: the innermost frame that names
    one; "user space" without kernel frames, "other kernel" when none matches."""
    for sym in frames:
        for name, pat in CATEGORIES:
            if pat.search(sym):
                return name
    return "other kernel" if frames else "user space"


def categorize(samples: Iterable[tuple[str, list[str]]], *, comms: re.Pattern[str]) -> Counter[str]:
    """Samples per category, of the workload's commands (`comms`) and of softirq
    threads; idle samples are dropped."""
    out: Counter[str] = Counter()
    for comm, frames in samples:
        if not (comms.search(comm) or SOFTIRQ_COMMS.search(comm)):
            continue
        cat = category(frames)
        if cat != "idle":
            out[cat] += 1
    return out


def top_symbols(samples: Iterable[tuple[str, list[str]]], *, comms: re.Pattern[str], n: int = 15) -> list[list[Any]]:
    """The `n` leaf kernel symbols with most samples (self time) of those commands."""
    c: Counter[str] = Counter()
    for comm, frames in samples:
        if frames and (comms.search(comm) or SOFTIRQ_COMMS.search(comm)) and category(frames) != "idle":
            c[frames[0]] += 1
    total = sum(c.values()) or 1
    return [[sym, k, round(100 * k / total, 1)] for sym, k in c.most_common(n)]


def available() -> str:
    """"" when `perf record -e cpu-clock` can work here, else why not."""
    if shutil.which("perf") is None:
        return "perf is not installed (apt-get install linux-perf)"
    try:
        paranoid = int(Path("/proc/sys/kernel/perf_event_paranoid").read_text())
    except (OSError, ValueError):
        paranoid = 0
    if os.geteuid() != 0 and paranoid > 0:
        return f"perf_event_paranoid={paranoid} and not root"
    return ""


def record(workload: Callable[[], Any], *, seconds: float, comms: re.Pattern[str]) -> dict[str, Any]:
    """Run `workload()` (it should last longer than `seconds`) while perf samples all
    CPUs for `seconds`, starting 0.5 s in; the workload's result, samples by category
    (with CPU ms: samples / FREQ), and the top leaf symbols."""
    why = available()
    if why:
        return {"error": why, "result": workload()}
    with tempfile.TemporaryDirectory(prefix="vxbench-perf-") as d:
        data = str(Path(d) / "perf.data")
        box: dict[str, Any] = {}
        t = threading.Thread(target=lambda: box.update(result=workload()))
        t.start()
        try:
            threading.Event().wait(0.5)
            rec = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(FREQ), "-a", "-g", "-o", data,
                                  "--", "sleep", str(seconds)], capture_output=True, text=True)
        finally:
            t.join()
        if rec.returncode != 0:
            return {"error": f"perf record: {rec.stderr.strip()[-300:]}", "result": box.get("result")}
        text = subprocess.run(["perf", "script", "-i", data, "-F", "comm,ip,sym,dso"], capture_output=True,
                              text=True).stdout
    samples = parse(text)
    cats = categorize(samples, comms=comms)
    total = sum(cats.values())
    return {"result": box.get("result"), "samples": total, "all_samples": len(samples),
            "cpu_ms": round(1000 * total / FREQ, 1),
            "by_category": {k: {"samples": v, "cpu_ms": round(1000 * v / FREQ, 1),
                                "pct": round(100 * v / (total or 1), 1)} for k, v in cats.most_common()},
            "top_symbols": top_symbols(samples, comms=comms)}
