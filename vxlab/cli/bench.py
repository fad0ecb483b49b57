"""`vxlab bench …`: run a benchmark and print its table; results go to a JSON file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vxlab.cli.main import output

app = typer.Typer(help="Benchmarks: measured figures written to files.", no_args_is_help=True)


def _report(result: dict[str, Any], rows_key: str, columns: dict[str, str]) -> None:
    """The result's rows as a table (column title -> field), then where it was written."""
    output(as_json=False, data=result, columns=list(columns),
           rows=[[str(r[field]) for field in columns.values()] for r in result[rows_key]])
    typer.echo(f"written: {result['path']}", err=True)


@app.command("controller")
def controller(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for controller.json.")] = Path("bench/results"),
    creates: Annotated[int, typer.Option(min=10, help="Endpoint creates per concurrency level.")] = 2000,
    levels: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,4,16",
) -> None:
    """Endpoint creates/s and p50/p99 latency at several client counts (real etcd)."""
    from vxlab.bench import controller as bench

    result = bench.run(out, levels=[int(x) for x in levels.split(",")], creates=creates)
    _report(result, "levels", {"CLIENTS": "clients", "CREATES/S": "creates_per_s", "P50 MS": "p50_ms",
                               "P99 MS": "p99_ms"})


@app.command("agent")
def agent(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for agent.json.")] = Path("bench/results"),
    samples: Annotated[int, typer.Option(min=5, help="Single creates measured per level.")] = 100,
    levels: Annotated[str, typer.Option(help="Remote endpoint counts, comma-separated.")] = "100,1000",
) -> None:
    """Event -> kernel programmed latency with N remote endpoints; agent RSS and idle CPU."""
    from vxlab.bench import agent as bench

    result = bench.run(out, levels=[int(x) for x in levels.split(",")], samples=samples)
    _report(result, "levels", {"REMOTE EPS": "remote_endpoints", "P50 MS": "p50_ms", "P99 MS": "p99_ms",
                               "RSS MB": "agent_rss_mb", "IDLE CPU %": "agent_idle_cpu_pct"})


@app.command("faults")
def faults(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for faults.json.")] = Path("bench/results"),
    samples: Annotated[int, typer.Option(min=2, help="Faults created and deleted.")] = 100,
) -> None:
    """Fault create -> in effect on its hosts (table in the kernel, every target applied), in a 10-host lab."""
    from vxlab.bench import faults as bench

    result = bench.run(out, samples=samples, progress=_progress)
    r = result["vxlab"]
    rows = [{"what": name, **r[key]} for name, key in (("in the kernel", "kernel_ms"), ("applied", "applied_ms"),
                                                        ("healed", "healed_ms"))]
    _report({**result, "rows": rows}, "rows", {"MS": "what", "N": "n", "P50": "p50", "P99": "p99", "MAX": "max"})


ControlOpt = Annotated[str, typer.Option(
    help="The labs' control (local: the controller's unix socket; underlay: its control address across the "
         "underlay), comma-separated: each size runs with each.")]


@app.command("bringup")
def bringup(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for bringup.json/png.")] = Path("bench/results"),
    sizes: Annotated[str, typer.Option(help="Host counts, comma-separated.")] = "10,25,50,100",
    control: ControlOpt = "local,underlay",
    reps: Annotated[int, typer.Option(min=1, help="Runs of every size with every control.")] = 1,
) -> None:
    """Time `up` of N hosts x 5 containers to converged, phase by phase; plot it."""
    from vxlab.bench import bringup as bench

    result = bench.run(out, sizes=[int(x) for x in sizes.split(",")], controls=_controls(control), reps=reps)
    _report(result, "sizes", {"HOSTS": "hosts", "CONTROL": "control", "CONTAINERS": "containers",
                              "SECONDS": "seconds", "DOWN S": "down_seconds"})


def _controls(text: str) -> tuple[str, ...]:
    """'local,underlay' -> ('local', 'underlay'); a bad one is one error line."""
    from vxlab.lab.topology import CONTROLS

    values = tuple(x.strip() for x in text.split(",") if x.strip())
    if not values or any(v not in CONTROLS for v in values):
        raise typer.BadParameter(f"control: expected some of {', '.join(CONTROLS)}, got {text!r}")
    return values


def _ints(text: str, field: str) -> list[int]:
    """'10,25,50' -> [10, 25, 50]; a bad list is one error line naming the option."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"{field}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise typer.BadParameter(f"{field}: expected positive integers, got {text!r}")
    return values


def _progress(msg: str) -> None:
    typer.echo(msg, err=True)


OutOpt = Annotated[Path, typer.Option("-o", "--out", help="Directory for the result files.")]
QuickOpt = Annotated[bool, typer.Option("--quick", help="Tiny sizes: checks the plumbing, the figures mean nothing.")]


def _suite_part(part: str, out: Path, quick: bool, sizes: list[int] | None = None) -> None:
    from vxlab.bench import suite

    result = suite.run(out, parts=[part], sizes=sizes, quick=quick, progress=_progress)
    failed = result["parts"][part].get("error")
    typer.echo(f"written: {out / 'results.json'}, {out / 'RESULTS.md'}", err=True)
    if failed:
        typer.echo(f"error: {part}: {failed}", err=True)
        raise typer.Exit(1)


@app.command("all")
def all_(
    out: OutOpt = Path("bench/results"),
    sizes: Annotated[str, typer.Option(help="Bring-up host counts, comma-separated.")] = "10,25,50,100",
    parts: Annotated[str, typer.Option(help="Parts to run, comma-separated (default: all).")] = "",
    quick: QuickOpt = False,
) -> None:
    """Every benchmark in one run: results.json, RESULTS.md and PNG plots in OUT."""
    from vxlab.bench import suite

    chosen = [p for p in parts.split(",") if p] or None
    for p in chosen or []:
        if p not in suite.PARTS:
            raise typer.BadParameter(f"parts: unknown part {p!r} (one of {', '.join(suite.PARTS)})")
    result = suite.run(out, parts=chosen, sizes=_ints(sizes, "sizes"), quick=quick, progress=_progress)
    typer.echo(f"written: {out / 'results.json'}, {out / 'RESULTS.md'}", err=True)
    if any("error" in r for r in result["parts"].values()):
        raise typer.Exit(1)


@app.command("dataplane")
def dataplane(
    out: OutOpt = Path("bench/results"),
    quick: QuickOpt = False,
    breakdown: Annotated[bool, typer.Option(
        "--breakdown", help="Instead: the hop-by-hop ladder (underlay, +vxlan, +bridge, +veth) with perf "
                            "profiles; writes breakdown.json/.md.")] = False,
    settings: Annotated[str, typer.Option(
        "--settings", help="Instead: interleaved A/B runs of these settings (comma-separated, 'all' for every "
                           "one; see bench/settings.py); writes settings.json/.md.")] = "",
    mtus: Annotated[str, typer.Option(help="Underlay MTUs for --breakdown/--settings.")] = "1500,9000",
    reps: Annotated[int, typer.Option(min=1, help="Repetitions for --breakdown/--settings.")] = 5,
    profile: Annotated[bool, typer.Option(help="perf profiles in --breakdown.")] = True,
) -> None:
    """iperf3 + ping: overlay vs underlay at MTU 1500 and 9000, and the settings sweep."""
    if breakdown or settings:
        from vxlab.bench import breakdown as bd
        from vxlab.bench import settings as st

        mtu_list = _ints(mtus, "mtus")
        if breakdown:
            result = bd.run(out, mtus=mtu_list, reps=reps, profile=profile, progress=_progress)
        else:
            names = list(st.SETTINGS) if settings == "all" else [x for x in settings.split(",") if x]
            for n in names:
                if n not in st.SETTINGS:
                    raise typer.BadParameter(f"settings: unknown setting {n!r} (one of {', '.join(st.SETTINGS)})")
            result = st.run(out, names=names, mtus=mtu_list, reps=reps, progress=_progress)
        typer.echo(f"written: {result['path']}", err=True)
        return
    _suite_part("dataplane", out, quick)


@app.command("controlplane")
def controlplane(
    out: OutOpt = Path("bench/results"),
    quick: QuickOpt = False,
    sizes: Annotated[str, typer.Option(help="Instead of the suite's part: these host counts only.")] = "",
    samples: Annotated[int, typer.Option(min=1, help="Samples per size (with --sizes).")] = 20,
    gc_thresh: Annotated[str, typer.Option(
        "--gc-thresh", help="With --sizes: the neighbour table's gc_thresh1,2,3 during the run (machine-wide, "
                            "only raised, restored after; 'keep' leaves them). Default 8192,32768,65536.")] = "",
    control: Annotated[str, typer.Option(help="With --sizes: the labs' control (local, underlay), comma-separated: "
                                               "each size runs with each.")] = "local,underlay",
    reps: Annotated[int, typer.Option(min=1, help="With --sizes: runs of every size with every control.")] = 1,
) -> None:
    """container run -> first reply from every other host, at 10 and 50 hosts, with a breakdown."""
    if sizes:
        from vxlab.bench import controlplane as cp

        thresh = None if gc_thresh == "keep" else _ints(gc_thresh, "gc-thresh") if gc_thresh else list(cp.GC_THRESH_LAB)
        if thresh is not None and len(thresh) != 3:
            raise typer.BadParameter("gc-thresh: expected three integers (gc_thresh1,2,3) or 'keep'")
        result = cp.run(out, sizes=_ints(sizes, "sizes"), samples=samples, progress=_progress,
                        gc_thresh=(thresh[0], thresh[1], thresh[2]) if thresh else None,
                        stem="controlplane-gc-" + ("-".join(map(str, thresh)) if thresh else "keep"),
                        controls=_controls(control), reps=reps)
        for row in result["sizes"]:
            typer.echo(f"{row['hosts']} hosts, control {row['control']}: first reply per peer {row['first_reply_ms']}, "
                       f"missing {row['missing_replies']}, arp {row['arp']}, gc_thresh {row['gc_thresh']}")
        typer.echo(f"written: {result['path']}", err=True)
        return
    _suite_part("controlplane", out, quick)


@app.command("vm")
def vm_(out: OutOpt = Path("bench/results"),
        boots: Annotated[int, typer.Option(min=1, help="Boots (and crash/heal cycles in the lab).")] = 3) -> None:
    """VM hosts: boot, KVM or TCG and why, memory, Python in the guest; in a lab: boot until
    the agent registered, overlay ping and TCP namespace host <-> VM host. Writes vm.json."""
    from vxlab.bench import vm

    result = vm.run(out, boots=boots, progress=_progress)
    typer.echo(f"written: {result['path']}", err=True)


@app.command("deadhost")
def deadhost(out: OutOpt = Path("bench/results"), quick: QuickOpt = False) -> None:
    """host-crash -> peers purged, return -> reachable, against the lease TTL."""
    _suite_part("deadhost", out, quick)


@app.command("check")
def check(
    out: OutOpt = Path("bench/results"),
    hosts: Annotated[int, typer.Option(min=2, help="Hosts, one container each: hosts*(hosts-1) pairs.")] = 20,
    reps: Annotated[int, typer.Option(min=1, help="Timed checks of each kind.")] = 5,
) -> None:
    """`check` through the agents (ops channel) vs pinged from this machine, same lab, same run."""
    from vxlab.bench import check as bench

    result = bench.run(out, hosts=hosts, reps=reps, progress=_progress)
    row = result["vxlab"]
    output(as_json=False, data=result, columns=["PAIRS", "AGENTS S", "LOCAL S", "AGENTS/LOCAL", "TARGET <= 1.5"],
           rows=[[str(row["pairs"]), str(row["agents_s"]), str(row["local_s"]), str(row["agents_over_local"]),
                  row["verdict"]]])
    typer.echo(f"written: {result['path']}", err=True)


@app.command("footprint")
def footprint(out: OutOpt = Path("bench/results"), quick: QuickOpt = False) -> None:
    """Controller creates/s, agent RSS and idle CPU, etcd keys and bytes per endpoint."""
    _suite_part("footprint", out, quick)


@app.command("docker")
def docker(out: OutOpt = Path("bench/results"), quick: QuickOpt = False) -> None:
    """Docker swarm's overlay measured like vxlab (needs: apt-get install docker.io busybox-static)."""
    _suite_part("docker", out, quick)


@app.command("dns")
def dns_(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for dns.json.")] = Path("bench/results"),
    queries: Annotated[int, typer.Option(min=100, help="Questions per series.")] = 5000,
    levels: Annotated[str, typer.Option(help="Names on the network (endpoints + aliases), comma-separated.")]
    = "100,1000",
) -> None:
    """A question to 127.0.0.11 answered by the agent: p50/p99 over UDP and TCP, NXDOMAIN, after a change."""
    from vxlab.bench import dns as bench

    result = bench.run(out, levels=[int(x) for x in levels.split(",")], queries=queries)
    rows = [{"names": r["names"], **{f"{k}_{m}": r[k][m] for k in ("udp", "tcp", "after_change_udp")
                                     for m in ("p50_ms", "p99_ms")}} for r in result["levels"]]
    _report({**result, "levels": rows}, "levels", {
        "NAMES": "names", "UDP P50 MS": "udp_p50_ms", "UDP P99 MS": "udp_p99_ms", "TCP P50 MS": "tcp_p50_ms",
        "TCP P99 MS": "tcp_p99_ms", "AFTER CHANGE P50": "after_change_udp_p50_ms",
        "AFTER CHANGE P99": "after_change_udp_p99_ms"})


@app.command("services")
def services(
    out: Annotated[Path, typer.Option("-o", "--out", help="Directory for services.json.")] = Path("bench/results"),
    rounds: Annotated[int, typer.Option(min=1, help="Rounds of each series (the median counts).")] = 7,
    seconds: Annotated[float, typer.Option(min=0.5, help="Seconds per round.")] = 3.0,
) -> None:
    """TCP connections/s to a service VIP against a replica's direct IP (target: >= 0.9x)."""
    from vxlab.bench import services as bench

    result = bench.run(out, rounds=rounds, seconds=seconds)
    rows = [{"series": k, **v, "rounds_per_s": " ".join(map(str, v["rounds_per_s"]))} for k, v in result["series"].items()]
    _report({**result, "rows": rows}, "rows", {"SERIES": "series", "MEDIAN CONN/S": "median_per_s",
                                               "ROUNDS": "rounds_per_s"})
    typer.echo(f"vip / direct: {result['vip_vs_direct']} (target >= 0.9)", err=True)
