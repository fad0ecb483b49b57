"""`vxlab agent …`: run the per-host agent, print its plan, or remove what it created."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from vxlab import config
from vxlab.cli.flags import given
from vxlab.cli.main import CliState, fail, parse_labels, target

app = typer.Typer(help="Run the per-host agent that programs the kernel.", no_args_is_help=True)

Host = Annotated[str, typer.Option("--host", metavar="NAME", help="This host's name.")]
Prefix = Annotated[str, typer.Option(metavar="PREFIX", help="Prefix of the namespaces the agent creates.")]


def _default(key: str) -> Any:
    return config.default("agent", key)


@app.command("run")
def run(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option("--host", metavar="NAME", help="This host's name.")] = None,
    config_file: Annotated[str | None, typer.Option(
        "--config", metavar="FILE", help="TOML file with an [agent] table; flags override it.")] = None,
    underlay_ip: Annotated[str, typer.Option(metavar="IP", help="VTEP address (default: detected).")] = "",
    underlay_dev: Annotated[str, typer.Option(metavar="DEV", help="Underlay device (default: detected).")] = "",
    netns_prefix: Prefix = _default("netns-prefix"),
    resync: Annotated[float, typer.Option(min=config.RESYNC_MIN, max=config.RESYNC_MAX, metavar="SECONDS",
                                          help="Full resync period.")] = _default("resync"),
    metrics: Annotated[str | None, typer.Option(metavar="ADDR", help="Prometheus metrics address.")] = None,
    status_file: Annotated[str, typer.Option(metavar="FILE", help="Write convergence status here.")] = "",
    label: Annotated[list[str] | None, typer.Option(metavar="K=V", help="Host label.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan and exit; change nothing.")] = False,
    dns_forward: Annotated[bool, typer.Option(
        "--dns-forward/--no-dns-forward",
        help="The embedded DNS forwards names it does not know to this host's resolvers (else REFUSED).")
    ] = _default("dns-forward"),
) -> None:
    """Register HOST, follow the controller's Watch and reconcile the kernel."""
    from vxlab.agent.kernel import KernelError
    from vxlab.agent.netlink import NetlinkKernel
    from vxlab.agent.runner import Agent, plan_once
    from vxlab.agentconfig import AgentConfig
    from vxlab.errors import VxError
    from vxlab.tls import TlsConfig

    state: CliState = ctx.obj
    flags = given(ctx, exclude=frozenset({"config_file", "dry_run", "label"}))
    if label:
        flags["labels"] = parse_labels(label)
    root = ctx.find_root()
    if "controller" in given(root):  # the global --controller (or VXLAB_CONTROLLER) beats the file
        flags["controller"] = state.controller
    try:
        opts = config.resolve("agent", path=config_file, flags=flags)
        if opts["host"] is None:
            fail("host: required (--host NAME, or host in the [agent] table of --config)")
        to = None if opts["controller"] else target(ctx)  # neither flag nor file names one: the CLI's rule
        in_file = None if state.insecure else TlsConfig.of(ca=opts["tls_ca"], cert=opts["tls_cert"],
                                                           key=opts["tls_key"], field="agent.tls")
        agent_config = AgentConfig.from_options(
            {**opts, "controller": opts["controller"] or to.controller.split(",")},  # type: ignore[union-attr]
            tls=_tls(state, pki=opts["pki"], host=opts["host"],
                     otherwise=state.tls or in_file or (to.tls if to else None)))
        if dry_run:
            lines = asyncio.run(plan_once(agent_config, NetlinkKernel))
            typer.echo("\n".join(lines) if lines else "nothing to do")
            return
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
        agent = Agent(agent_config, NetlinkKernel)
        if agent_config.metrics:
            _serve_metrics(agent_config.metrics)
        asyncio.run(agent.run())
    except (VxError, KernelError) as e:
        fail(str(e))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _tls(state: CliState, *, pki: str | None, host: str, otherwise: Any) -> Any:
    """With a PKI (the global --pki, or `pki` in the [agent] table): this host's own
    certificate; else `otherwise` (what --tls-* or the selected lab give; None: plaintext)."""
    from vxlab.tls import Pki

    directory = state.pki or pki
    return Pki(Path(directory)).host(host) if directory else otherwise


def _serve_metrics(listen: str) -> None:
    from prometheus_client import start_http_server

    host, _, port = listen.rpartition(":")
    start_http_server(int(port), addr=host or "127.0.0.1")


@app.command("cleanup")
def cleanup(host: Host, netns_prefix: Prefix = _default("netns-prefix")) -> None:
    """Delete every namespace HOST's agent created (found by its marker), nothing else."""
    from vxlab.agent.netlink import NetlinkKernel
    from vxlab.agent.runner import teardown

    for name in teardown(NetlinkKernel(), host=host, netns_prefix=netns_prefix):
        typer.echo(f"deleted {name}")
