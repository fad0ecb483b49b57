"""Pure logic of the benchmarks: ratios, summaries, Markdown tables, parsers, the
headline of RESULTS.md (no timing assertions: benchmarks are not tests)."""

from __future__ import annotations

import pytest

from vxlab.bench import controlplane, footprint, netperf, report, summary


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
