"""Pure logic of the benchmarks: ratios, summaries, Markdown tables, parsers, the
headline of RESULTS.md (no timing assertions: benchmarks are not tests)."""

from __future__ import annotations

import re

import pytest

from vxlab.bench import breakdown, controlplane, footprint, kprofile, netperf, report, settings, summary


def test_ratio_and_median() -> None:
    assert summary.ratio(9.0, 10.0) == 0.9
    assert summary.ratio(1.0, 0.0) is None
    assert summary.ratio(None, 3.0) is None
    assert summary.median([3.0, 1.0, 2.0]) == 2.0
    assert summary.median([]) == 0.0


def test_dist() -> None:
    d = summary.dist([0.010, 0.020, 0.030], scale=1000)
    assert d["n"] == 3 and d["p50"] == 20.0 and d["max"] == 30.0
    assert summary.dist([]) == {"n": 0}


def test_table_and_cells() -> None:
    md = summary.table(["a", "b"], [[1.5, None], ["x|y", 2]])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1.5 | – |", "| x\\|y | 2 |"]
    with pytest.raises(ValueError, match="rows: a row has 1 cells"):
        summary.table(["a", "b"], [[1]])
    with pytest.raises(ValueError, match="header"):
        summary.table([], [])


def test_verdict() -> None:
    assert summary.verdict(0.96, 0.95, at_most=False) == "met"
    assert summary.verdict(1.3, 1.2, at_most=True) == "not met"
    assert summary.verdict(None, 1.2, at_most=True) == "n/a"


def test_parse_ping() -> None:
    text = "64 bytes from 10.0.0.2: icmp_seq=1 ttl=64 time=0.046 ms\n64 bytes from x: icmp_seq=2 time=0.1 ms\n"
    assert netperf.parse_ping(text) == [46.0, 100.0]


def test_cpu_share() -> None:
    before = "cpu  100 0 100 800 0 0 0 0 0 0\n"
    after = "cpu  150 0 200 900 0 0 50 0 0 0\n"
    s = netperf.cpu_share(before, after)
    assert (s.user, s.system, s.softirq, s.idle) == (16.7, 33.3, 16.7, 33.3)


def test_agent_log_passes() -> None:
    log = ("2026-11-25 14:00:00,100 vxlab.agent.runner pass (event) at revision 42: 3 actions, 3 writes, "
           "0 errors in 4.5 ms\nsomething else\n"
           "2026-11-25 14:00:01,000 vxlab.agent.runner pass (full) at revision 44: 1 actions, 1 writes, 0 errors in 2.0 ms\n")
    passes = controlplane.parse_passes(log)
    assert [(r, ms) for _, r, ms in passes] == [(42, 4.5), (44, 2.0)]
    got = controlplane.programmed_at(passes, 43, after=passes[0][0])
    assert got is not None and got[1] == 2.0
    assert controlplane.programmed_at(passes, 45, after=0) is None


def test_etcd_per_endpoint() -> None:
    assert footprint.per_endpoint((10, 1000), (30, 5000), 10) == {"keys_per_endpoint": 2.0, "bytes_per_endpoint": 400.0}


def test_headline_and_markdown() -> None:
    results = {"machine": {"date": "d", "cpu": "c", "cores": 2, "kernel": "k", "versions": {"vxlab": "0.1"}},
               "parts": {"dataplane": {"mtus": [{"underlay_mtu": 1500, "throughput_ratio": 0.9, "rtt_ratio": 1.1,
                                                 "underlay": {"gbit_median": 10.0}, "overlay": {"gbit_median": 9.0},
                                                 "variants": []}]},
                         "docker": {"skipped": "docker: missing dockerd"},
                         "deadhost": {"error": "LabError: boom"}}}
    rows = report.headline(results)
    assert rows[0] == ["throughput overlay/underlay, MTU 1500", 0.9, None, ">= 0.95", "not met"]
    assert rows[1][-1] == "met"
    md = report.markdown(results, plots=[])
    assert "| throughput overlay/underlay, MTU 1500 | 0.9 | – | >= 0.95 | not met |" in md
    assert "Docker part skipped" in md and "deadhost failed" in md and "noisy" in md


def test_cli_rejects_bad_lists() -> None:
    from typer.testing import CliRunner

    from vxlab.cli.main import app

    r = CliRunner().invoke(app, ["bench", "all", "--sizes", "10,x"])
    assert r.exit_code != 0 and "sizes" in r.output
    r = CliRunner().invoke(app, ["bench", "all", "--parts", "nope"])
    assert r.exit_code != 0 and "parts" in r.output


PERF_SCRIPT = """iperf3 
\tffffffff8224960d rep_movs_alternative ([kernel.kallsyms])
\tffffffff81fe9108 _copy_to_iter ([kernel.kallsyms])
\t           10acb3 __libc_recv (/usr/lib/x86_64-linux-gnu/libc.so.6)

iperf3 
\tffffffff81000001 _raw_spin_unlock_irqrestore ([kernel.kallsyms])
\tffffffff81000002 hash_conntrack_raw ([kernel.kallsyms])
\tffffffff81000003 nf_conntrack_in ([kernel.kallsyms])

swapper 
\tffffffff81000004 pv_native_safe_halt ([kernel.kallsyms])

python 
\tffffffff81000005 vxlan_xmit_one ([kernel.kallsyms])

iperf3 
\t           10acb3 main (/usr/bin/iperf3)
"""


def test_kprofile_parse_and_categories() -> None:
    samples = kprofile.parse(PERF_SCRIPT)
    assert [c for c, _ in samples] == ["iperf3", "iperf3", "swapper", "python", "iperf3"]
    assert samples[0][1] == ["rep_movs_alternative", "_copy_to_iter"]  # user-space frames dropped
    # the innermost frame naming a category wins: a lock release counts for its caller
    assert kprofile.category(samples[1][1]) == "netfilter + conntrack"
    assert kprofile.category(["vxlan_xmit_one"]) == "vxlan + outer UDP"
    assert kprofile.category(["br_handle_frame"]) == "bridge" and kprofile.category(["br_nf_pre_routing"]) == \
        "netfilter + conntrack"
    assert kprofile.category([]) == "user space" and kprofile.category(["mystery_fn"]) == "other kernel"
    cats = kprofile.categorize(samples, comms=re.compile("^iperf3$"))
    # idle dropped, other people's processes (python) left out
    assert cats == {"copy user<->kernel": 1, "netfilter + conntrack": 1, "user space": 1}
    assert kprofile.top_symbols(samples, comms=re.compile("^iperf3$"), n=1)[0][1] == 1


def test_breakdown_flood_and_attribution() -> None:
    text = "--- x ping statistics ---\n20000 packets transmitted, 20000 received, 0% packet loss, time 400ms\n"
    assert breakdown.parse_flood(text) == 20.0
    assert breakdown.parse_flood("0 received, time 5ms") is None
    rungs = {"underlay": {"rtt_us_median": 10.0, "flood_us_median": 10.0, "gbit_median": 20.0},
             "vxlan": {"rtt_us_median": 16.0, "flood_us_median": 16.0, "gbit_median": 16.0},
             "bridge": {"rtt_us_median": 19.0, "flood_us_median": 19.0, "gbit_median": 15.0},
             "overlay": {"rtt_us_median": 20.0, "flood_us_median": 20.0, "gbit_median": 15.0}}
    att = breakdown.attribution(rungs)
    assert [a["extra_rtt_us"] for a in att] == [6.0, 3.0, 1.0]
    assert [a["share_of_extra_flood_us_pct"] for a in att] == [60, 30, 10]
    assert att[0]["throughput_ratio"] == 0.8


def test_settings_effect_and_verdict() -> None:
    pairs = [({"r": 0.80}, {"r": 0.84}), ({"r": 0.78}, {"r": 0.82}), ({"r": 0.81}, {"r": 0.83}),
             ({"r": 0.80}, {"r": 0.79})]
    e = settings.effect(pairs, "r")
    assert e["n"] == 4 and e["positive"] == 3 and e["min_pct"] == -1.2
    assert settings.verdict(e) == "helps"
    assert settings.verdict({"n": 4, "median_pct": 1.0, "positive": 4}) == "no clear effect"
    assert settings.verdict({"n": 4, "median_pct": -5.0, "positive": 0}) == "hurts"
    assert settings.verdict({"n": 2, "median_pct": 9.0, "positive": 2}) == "too few pairs"
    assert settings.effect([({"r": None}, {"r": 1.0})], "r") == {"n": 0}
    # the ratio alone is not enough: the overlay's own throughput must agree
    assert settings.verdict(e, {"n": 4, "median_pct": 1.3, "positive": 2}) == "no clear effect"
    assert settings.verdict(e, e) == "helps"


def test_arp_stat() -> None:
    text = ("entries  allocs table_fulls forced_gc_runs\n"
            "00000014 0000000a 00000010 00000001\n00000014 00000005 00000002 00000000\n")
    st = controlplane.parse_arp_stat(text)
    assert st == {"entries": 20, "allocs": 15, "table_fulls": 18, "forced_gc_runs": 1}
    d = controlplane.arp_delta(st, {**st, "table_fulls": 30, "entries": 900})
    assert d["table_fulls"] == 12 and d["entries_after"] == 900 and d["forced_gc_runs"] == 0


def test_breakdown_and_settings_markdown() -> None:
    rung = {"what": "w", "gbit_median": 1.0, "rtt_us_median": 2.0, "flood_us_median": 3.0, "gbit": [1.0]}
    prof = {"iperf3": {"cpu_us_per_mb": {"bridge": 1.0, "total": 2.0}, "by_category": {"bridge": {}}},
            "flood_ping": {"cpu_us_per_round_trip": None}}
    md = breakdown.markdown({"benchmark": "b", "reps": 1, "seconds": 1, "pings": 1, "flood": 1, "mtus": [
        {"underlay_mtu": 1500, "rungs": {"underlay": rung, "overlay": rung}, "attribution": [],
         "profile": {"underlay": prof, "overlay": prof}}]})
    assert "| underlay | w | 1 | 2 | 3 | 1.0 |" in md and "| bridge | 1 | 1 | 0 |" in md
    e = {"n": 1, "median_pct": 1.0, "min_pct": 1.0, "max_pct": 1.0, "positive": 1}
    s = {"name": "noudpcsum", "owner": "agent", "pairs": [{"A": {"tput_ratio": 0.8}, "B": {"tput_ratio": 0.9}}],
         "tput_ratio": e, "overlay_gbit": e, "rtt_ratio": {"n": 0}, "flood_ratio": e, "verdict": "too few pairs"}
    md = settings.markdown({"benchmark": "b", "reps": 1, "mtus": [{"underlay_mtu": 9000, "settings": [s],
                                                                   "load_before": [1.0], "load_after": [2.0]}]})
    assert "| 9000 | noudpcsum | agent | 0.8 | 0.9 | +1.0 (+1.0..+1.0) |" in md and "`bridge-nf-off`" in md


def test_fault_bench_summary_and_verdict() -> None:
    from vxlab.bench import faults

    rows = [{"kind": "loss", "kernel_ms": 10.0 + i, "applied_ms": 20.0 + i, "pending": [], "healed_ms": 9.0}
            for i in range(10)] + [{"kind": "partition", "kernel_ms": None, "applied_ms": 130.0, "pending": ["h2"],
                                    "healed_ms": None}]
    s = faults.summarize(rows)
    assert s["samples"] == 11 and s["kernel_ms"]["n"] == 10 and s["healed_ms"]["n"] == 10
    assert s["applied_ms"]["n"] == 11 and s["not_applied"] == 1 and s["verdict"] == "not met"  # p99 is the 130
    assert faults.summarize(rows[:10])["verdict"] == "met"


def test_control_comparisons_pair_local_and_underlay() -> None:
    from vxlab.bench import bringup, controlplane

    rows = [{"hosts": 10, "control": c, "seconds": s} for c, s in
            (("local", 2.0), ("underlay", 2.2), ("local", 3.0), ("underlay", 1.8), ("local", 2.5))]
    assert bringup.compare(rows + [{"hosts": 50, "control": "local", "seconds": 6.0}]) == [
        {"hosts": 10, "local_s": 2.5, "underlay_s": 2.0, "runs_s": {"local": [2.0, 3.0, 2.5], "underlay": [2.2, 1.8]},
         "underlay_over_local": 0.8}]

    def cp(control: str, replies: list[float], rpc: float, missing: int) -> dict[str, object]:
        return {"hosts": 3, "control": control, "missing_replies": missing,
                "raw": [{"first_reply_ms": {f"h{i}": v for i, v in enumerate(replies)}, "rpc_ms": rpc}]}
    got = controlplane.compare([cp("local", [10, 20], 5, 0), cp("underlay", [12, 30], 6, 1), cp("local", [30], 7, 0)])
    assert got[0]["repetitions"] == 2 and got[0]["local"]["missing_replies"] == 0
    assert got[0]["local"]["first_reply_p50_ms"] == 20 and got[0]["underlay"]["first_reply_p99_ms"] == 30
    assert got[0]["underlay"]["missing_replies"] == 1 and got[0]["local"]["rpc_p99_ms"] == 7.0
