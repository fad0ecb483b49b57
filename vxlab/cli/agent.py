"""`vxlab agent …`: run the per-host agent, print its plan, or remove what it created."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

import typer

from vxlab.cli.main import CliState, fail, parse_labels

app = typer.Typer(help="Run the per-host agent that programs the kernel.", no_args_is_help=True)

Host = Annotated[str, typer.Option("--host", metavar="NAME", help="This host's name.")]
Prefix = Annotated[str, typer.Option(metavar="PREFIX", help="Prefix of the namespaces the agent creates.")]


@app.command("run")
def run(
    ctx: typer.Context,
    host: Host,
    underlay_ip: Annotated[str, typer.Option(metavar="IP", help="VTEP address (default: detected).")] = "",
    underlay_dev: Annotated[str, typer.Option(metavar="DEV", help="Underlay device (default: detected).")] = "",
    netns_prefix: Prefix = "vx-",
    resync: Annotated[float, typer.Option(min=0.5, max=300.0, metavar="SECONDS", help="Full resync period.")] = 10.0,
    metrics: Annotated[str | None, typer.Option(metavar="ADDR", help="Prometheus metrics address.")] = None,
    status_file: Annotated[str, typer.Option(metavar="FILE", help="Write convergence status here.")] = "",
    label: Annotated[list[str] | None, typer.Option(metavar="K=V", help="Host label.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit; change nothing.")] = False,
) -> None:
    """Register HOST, follow the controller's Watch and reconcile the kernel."""
    from vxlab import validate
    from vxlab.agent.kernel import KernelError
    from vxlab.agent.netlink import NetlinkKernel
    from vxlab.agent.runner import Agent, AgentConfig, plan_once
    from vxlab.errors import VxError
    from vxlab.tls import Pki

    state: CliState = ctx.obj
    try:
        validate.name(host, field="host", max_len=validate.HOST_NAME_MAX)
        if not netns_prefix.startswith("vx"):
            fail("netns-prefix: must start with 'vx'")
        tls = Pki(state.pki).host(host) if state.pki else state.tls  # --pki: this host's own certificate
        config = AgentConfig(controller=state.controller.split(","), host=host, underlay_ip=underlay_ip,
                             underlay_dev=underlay_dev, netns_prefix=netns_prefix, resync=resync,
                             status_file=status_file, labels=parse_labels(label), tls=tls)
        if dry_run:
            lines = asyncio.run(plan_once(config, NetlinkKernel))
            typer.echo("\n".join(lines) if lines else "nothing to do")
            return
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
        agent = Agent(config, NetlinkKernel)
        if metrics:
            _serve_metrics(metrics)
        asyncio.run(agent.run())
    except (VxError, KernelError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _serve_metrics(listen: str) -> None:
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")


@app.command("cleanup")
def cleanup(host: Host, netns_prefix: Prefix = "vx-") -> None:
    """Delete every namespace HOST's agent created (found by its marker), nothing else."""
    from vxlab.agent.netlink import NetlinkKernel
    from vxlab.agent.runner import teardown

    for name in teardown(NetlinkKernel(), host=host, netns_prefix=netns_prefix):
        typer.echo(f"deleted {name}")
