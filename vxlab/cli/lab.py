"""Lab verbs: `vxlab up`, `down`, `status`, `check`, `exec`, `trace`, `lab ls`.

Each converts its arguments, makes one call on `vxlab.lab.Lab`, and prints a table or
JSON. Lab failures (a bad topology file, a process that would not start) are one
`error: …` line and exit code 1. `check` (also `--kernel`), `trace` and `exec` work
through the agents' ops channel, so they also act on real hosts (`--controller ADDR
--pki DIR`, no lab): `target()` decides, as for every verb.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.text import Text

from vxlab.cli.main import LabOpt, call, fail, given_lab, in_lab_or_call, lab_name, output, print_json, target
from vxlab.errors import VxError

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def up(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Topology file (YAML).")],
    lab: LabOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the steps up would take; change nothing.")] = False,
    recreate: Annotated[bool, typer.Option("--recreate", help="Delete and create again a network whose subnet, VNI, "
                                           "driver or host changed, with its endpoints and policies.")] = False,
    insecure: Annotated[bool, typer.Option("--insecure", help="No TLS anywhere in the lab (default: mutual TLS).")] = False,
) -> None:
    """Bring a lab up from FILE, or apply every difference to a running lab (refused,
    changing nothing, when a difference needs --recreate or cannot be applied)."""
    from vxlab.lab.lab import Lab
    from vxlab.lab.procs import LabError
    from vxlab.lab.topology import TopologyError, load

    try:
        topo = load(file)
        the_lab = Lab(given_lab(ctx) or topo.name)  # --lab (here or global), else the file's name
        the_lab.insecure = insecure  # a running lab keeps its own: refused
        planned = the_lab.plan(topo, recreate=recreate)  # what --dry-run prints is what up does
        if planned.refused:
            fail(planned.refusal)
        if dry_run:
            typer.echo("\n".join(s.describe() for s in planned.steps) if planned.steps else "nothing to do")
            return
        console = Console(stderr=True)
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, transient=True) as progress:
            # Steps: etcd, controller, switch, hosts, containers, agents, register, converge
            # (and with VM hosts: booting them, waiting for them).
            task = progress.add_task(f"lab {the_lab.name}: starting",
                                     total=8 + (2 if any(h.vm for h in topo.hosts) else 0))

            def step(msg: str) -> None:
                progress.update(task, description=f"lab {the_lab.name}: {msg}", advance=1)
            the_lab.up(topo, planned=planned, progress=step, notice=lambda msg: progress.console.print(f"lab {the_lab.name}: {msg}"))
            progress.update(task, completed=progress.tasks[0].total)
        _summary(the_lab)
    except (TopologyError, LabError, OSError) as e:
        fail(str(e))


def _summary(the_lab: Any) -> None:
    rows = the_lab.containers()
    output(as_json=False, data=rows, columns=["CONTAINER", "HOST", "NETWORK", "IP", "MAC", "NAMESPACE"],
           rows=[[r["container"], r["host"], r["network"], r["ip"], r["mac"], r["namespace"]] for r in rows])
    st = the_lab.status()
    typer.echo(f"lab {st['name']}: {len(st['hosts'])} hosts, {len(rows)} endpoints, "
               f"converged at revision {st['revision']} — controller {st['controller']}{_control(st)}", err=True)


def _control(st: dict[str, Any]) -> str:
    """How the agents reach the controller, when not through its unix socket."""
    dial = st.get("agents_controller", "")
    return f", agents dial {dial} on the underlay" if dial and dial != st["controller"] else ""


def down(ctx: typer.Context, lab: LabOpt = None) -> None:
    """Remove everything of the lab: processes, namespaces, links, state."""
    from vxlab.lab.lab import Lab

    name = lab_name(ctx)
    removed = Lab(name).down()
    typer.echo(f"lab {name}: down ({len(removed)} namespaces removed)", err=True)


def status(ctx: typer.Context, lab: LabOpt = None, as_json: JsonOpt = False) -> None:
    """Controller, etcd, hosts alive, agent convergence."""
    from vxlab.lab.lab import Lab

    st = Lab(lab_name(ctx)).status()
    if as_json:
        print_json(st)
        return
    typer.echo(f"lab {st['name']}: controller {st['controller']} ({'up' if st['controller_up'] else 'DOWN'})"
               f"{_control(st)}, "
               f"etcd {', '.join(st['etcd'])} ({'up' if st['etcd_up'] else 'DOWN'}), revision {st['revision']}")
    output(as_json=False, data=st, columns=["HOST", "KIND", "UNDERLAY", "ALIVE", "AGENT", "APPLIED", "CONVERGED"],
           rows=[[h["name"], _kind(h), h["underlay_ip"], _yes(h["alive"]), _yes(h["agent_running"]),
                  str(h["applied_revision"]), _yes(h["converged"])] for h in st["hosts"]])
    for h in st["hosts"]:
        if h.get("vm"):
            typer.echo(f"{h['name']}: VM, {h['vm']['accel'].upper()}: {h['vm']['why']} (kernel {h['vm']['kernel']})")


def _kind(host: dict[str, Any]) -> str:
    """`namespace`, or `vm (kvm)`/`vm (tcg)` for a VM host."""
    if "vm" not in host:
        return "namespace"
    return f"vm ({host['vm']['accel']})" if host["vm"] else "vm"


def _yes(v: bool) -> Text:
    return Text("yes", style="green") if v else Text("no", style="red")


def check(
    ctx: typer.Context,
    lab: LabOpt = None,
    as_json: JsonOpt = False,
    kernel: Annotated[bool, typer.Option("--kernel", help="Drift instead: every agent's plan against a fresh dump of "
                                         "its kernel; lists the stale, missing and differing entries per host.")] = False,
) -> None:
    """Ping every pair: must reach within a network (unless a policy denies it), must not
    reach across networks. The agents send the probes: in a lab, or against real hosts
    with --controller ADDR --pki DIR."""
    from vxlab.lab import check as lab_check

    if kernel:
        _drift(call(ctx, lab_check.drift), as_json=as_json)
        return
    result = in_lab_or_call(ctx, in_lab=lambda the_lab: the_lab.check(), alone=lab_check.check)
    if as_json:
        print_json(result.to_json())
    else:
        names = sorted({p.src for p in result.probes} | {p.dst for p in result.probes})
        sources = sorted({p.src for p in result.probes})  # a VIP is only ever a destination
        cells: dict[tuple[str, str], list[str]] = {}
        for p in result.probes:
            mark = "not-probed" if p.skipped else ("ok" if p.reached else "FAIL") if p.expect else (
                ("denied" if p.rule else "blocked") if not p.reached else "LEAK")
            cells.setdefault((p.src, p.dst), []).append(f"{p.network}:{mark}")
        rows = [[src, *[Text(" ".join(cells.get((src, dst), ["-"])),
                             style="red" if any(x.endswith(("FAIL", "LEAK")) for x in cells.get((src, dst), []))
                             else "green") for dst in names]] for src in sources]
        output(as_json=False, data=None, columns=["FROM \\ TO", *names], rows=rows)
        bad, skipped = result.failures, result.skipped
        probed = len(result.probes) - len(skipped)
        typer.echo(f"{probed - len(bad)}/{probed} expectations hold"
                   + (f"; failed: {', '.join(f'{p.src}->{p.dst}@{p.network}' for p in bad)}" if bad else "")
                   + (f"; {len(skipped)} not probed" if skipped else ""), err=True)
        for why in sorted({p.error for p in bad if p.error})[:5]:
            typer.echo(f"  {why}", err=True)
        for why in sorted({p.skipped for p in skipped}):
            typer.echo(f"  not probed: {why}", err=True)
    if not result.ok:
        raise typer.Exit(1)


def _drift(hosts: list[Any], *, as_json: bool) -> None:
    """`check --kernel`'s table (or JSON); exit 1 when any host drifted or could not tell."""
    if as_json:
        print_json({"ok": all(h.ok for h in hosts), "hosts": [h.to_json() for h in hosts]})
    else:
        rows = [[h.host, e.namespace or "(host)", Text(e.state, style="red"), e.kind, e.target, e.reason]
                for h in hosts for e in h.entries]
        if rows:
            output(as_json=False, data=None, columns=["HOST", "NAMESPACE", "STATE", "KIND", "WHAT", "WHY"], rows=rows)
        for h in hosts:
            behind = f" (the agent had applied {h.applied_revision} of {h.revision})" \
                if h.applied_revision < h.revision and not h.error else ""
            said = f"cannot tell: {h.error}" if h.error else (
                f"{len(h.entries)} {'entry' if len(h.entries) == 1 else 'entries'} drifted" if h.entries else "no drift")
            typer.echo(f"{h.host}: {said}{behind}", err=True)
        if not hosts:
            typer.echo("no hosts", err=True)
    if not all(h.ok for h in hosts):
        raise typer.Exit(1)


def exec_(
    ctx: typer.Context,
    container: Annotated[str, typer.Argument(help="Container name.")],
    cmd: Annotated[list[str], typer.Argument(help="Command to run inside the container's namespace.")],
    lab: LabOpt = None,
    via_agent: Annotated[bool, typer.Option("--via-agent", help="Run it through the container's agent (the ops "
                                            "channel) also in a lab; without a lab it always is.")] = False,
) -> None:
    """Run CMD inside the container's network namespace; its exit code is passed through.
    In a lab it runs here (with stdin); against real hosts (--controller, no lab), on a
    lab's VM hosts and in a runtime's container (Docker, CNI: the host's program in its
    network namespace) the container's agent runs it (no stdin; output capped at 1 MiB per stream)."""
    from vxlab.lab.lab import Lab
    from vxlab.lab.procs import LabError

    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        fail("cmd: nothing to run (vxlab exec NAME -- CMD…)")
    to = target(ctx)
    if to.lab and not via_agent:
        try:
            the_lab = Lab(to.lab)
            by_agent = the_lab.by_agent(container)  # a VM host's (in the guest) or a runtime's container
            ns = "" if by_agent else the_lab.namespace_of(container)
        except (LabError, VxError) as e:
            fail(str(e))
        if not by_agent:
            proc = subprocess.run(["ip", "netns", "exec", ns, *cmd], stdin=sys.stdin)
            raise typer.Exit(proc.returncode)
    from vxlab import hostops

    async def go(c: Any) -> Any:
        return await hostops.exec_(c, await hostops.host_of(c, container), container, cmd)
    result = call(ctx, go)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    if result.truncated:
        typer.echo("warning: output cut at 1 MiB per stream", err=True)
    raise typer.Exit(result.exit_code if result.exit_code >= 0 else 128 - result.exit_code)


def labs(as_json: JsonOpt = False) -> None:
    """List the labs on this machine."""
    from vxlab.lab.lab import Lab
    from vxlab.lab.lab import list_labs

    rows = [Lab(name).status(brief=True) for name in list_labs()]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    output(as_json=False, data=rows, columns=["LAB", "HOSTS", "CONTROLLER"],
           rows=[[r["name"], str(len(r["hosts"])), r["controller"]] for r in rows])


def trace(
    ctx: typer.Context,
    src: Annotated[str, typer.Argument(help="Source container.")],
    dst: Annotated[str, typer.Argument(help="Destination container.")],
    network: Annotated[str, typer.Option(metavar="N", help="The network to trace on (default: the first shared).")] = "",
    lab: LabOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The path SRC -> DST hop by hop (veth, bridge, VXLAN, underlay) with a live capture,
    from the agents' kernel views: in a lab, or against real hosts with --controller."""
    from vxlab.lab import trace as lab_trace

    t = in_lab_or_call(ctx, in_lab=lambda the_lab: the_lab.trace(src, dst, network=network),
                       alone=lambda c: lab_trace.trace(c, src, dst, network=network))
    if as_json:
        print_json(t.to_json())
    else:
        typer.echo(f"{t.src} -> {t.dst} on network {t.network} (vni {t.vni})")
        output(as_json=False, data=None, columns=["#", "NAMESPACE", "DEVICE", "WHAT HAPPENS"],
               rows=[[str(i), h.where, h.what, h.detail] for i, h in enumerate(t.hops, 1)])
        if t.capture:
            typer.echo("underlay capture (source host's underlay device, udp/4789):")
            for line in t.capture:
                typer.echo(f"  {line}")
        typer.echo(f"reached: {'yes' if t.reached else 'NO'}")
    if not t.reached:
        raise typer.Exit(1)
