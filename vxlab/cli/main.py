"""The `vxlab` command: the root typer app and the helpers every verb shares.

Verbs stay thin: they convert arguments, make their client calls through `call()`,
and print with `output()`. `call()` obtains the client from `client_factory` (tests
replace it with an in-memory fake) and turns a VxError into one `error: …` line on
stderr with exit code 1; exit code 2 stays typer's usage errors.

Which lab or controller a verb acts on is decided in one place, `target()` (and
`lab_name()` for verbs that need a lab), from the global `--lab`/`--controller` and the
verb's own `--lab` (`LabOpt`: `vxlab network ls --lab X` means `vxlab --lab X network
ls`): a lab named by `--lab` (or VXLAB_LAB); else the controller given by `--controller`
(or VXLAB_CONTROLLER); else the only lab running; with several running, one line
`lab: several labs are running (a, b); use --lab NAME`; with none, 127.0.0.1:7070 (real
hosts).

TLS: `--pki DIR` (the admin certificate of a `vxlab pki init` directory) or
`--tls-ca/--tls-cert/--tls-key`; a selected lab brings its own admin certificate;
`--insecure` forces plaintext and says so on stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from vxlab.errors import VxError
from vxlab.tls import Pki, TlsConfig

if TYPE_CHECKING:
    from vxlab.client import Client
    from vxlab.lab.lab import Lab

# gRPC's C core logs failed TLS handshakes on stderr; the CLI prints its own one line.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

DEFAULT_CONTROLLER = "127.0.0.1:7070"
T = TypeVar("T")


@dataclass(frozen=True)
class CliState:
    """What the root callback hands to every verb through `ctx.obj`: the global options as
    given (which lab or controller they select is `target()`'s business)."""

    controller: str | None = None  # --controller (or VXLAB_CONTROLLER); None: not given
    lab: str | None = None  # --lab (or VXLAB_LAB), a checked name; None: not given
    tls: TlsConfig | None = None  # the certificate --pki/--tls-* give (None: a lab's own, or plaintext)
    insecure: bool = False  # --insecure: plaintext even to a lab with TLS
    pki: Path | None = None  # --pki DIR: the agent takes its host's certificate from here


# Every verb that acts on a lab or its controller declares `lab: LabOpt = None`; the
# resolvers below read it from the verb's context, so the verbs never look at it.
LabOpt = Annotated[str | None, typer.Option(
    "--lab", metavar="NAME", show_default=False,
    help="The lab to act on, as the global --lab (default: the only lab running; for up: the topology's name).")]


@dataclass(frozen=True)
class Target:
    """What a verb talks to: a controller address, the lab it belongs to (None: real
    hosts), and the certificate to present (None: plaintext)."""

    controller: str
    lab: str | None
    tls: TlsConfig | None


def _state(ctx: typer.Context) -> CliState:
    return ctx.obj if isinstance(ctx.obj, CliState) else CliState()


def given_lab(ctx: typer.Context) -> str | None:
    """The lab named on the command line: the verb's --lab, else the global one (or
    VXLAB_LAB); a bad name is one error line."""
    from vxlab.layout import check_lab_name

    name = ctx.params.get("lab") or _state(ctx).lab
    if not name:
        return None
    try:
        return check_lab_name(name, field="lab")  # it names a directory and namespaces
    except VxError as err:
        fail(err.message)


def chosen_lab(ctx: typer.Context) -> str | None:
    """The lab named (`given_lab`), else the only one running (None: none is); several
    running is an error line saying so."""
    from vxlab.lab.lab import list_labs

    name = given_lab(ctx)
    if name:
        return name
    running = list_labs()
    if len(running) > 1:
        fail(f"lab: several labs are running ({', '.join(running)}); use --lab NAME")
    return running[0] if running else None


def lab_name(ctx: typer.Context) -> str:
    """The lab a lab verb (status, check, fault, …) acts on; none running is an error."""
    name = chosen_lab(ctx)
    if name is None:
        fail("lab: no lab is running")
    return name


def target(ctx: typer.Context) -> Target:
    """The controller a verb calls, by the one rule of this module's docstring."""
    from vxlab.lab.lab import Lab

    state = _state(ctx)
    explicit_tls = None if state.insecure else state.tls
    lab = chosen_lab(ctx) if state.controller is None or given_lab(ctx) else None
    if state.controller is not None:
        return Target(state.controller, lab, explicit_tls)
    if lab is None:
        return Target(DEFAULT_CONTROLLER, None, explicit_tls)
    found = Lab(lab)
    if not found.exists:
        fail(f"lab: no lab named {lab!r} on this machine")
    return Target(found.socket, lab, None if state.insecure else explicit_tls or found.client_tls())


def remote(ctx: typer.Context) -> Target | None:
    """The target when the verb runs against a deployment (`--controller` given, no
    lab named), else None: the verb works on a lab of this machine."""
    return target(ctx) if _state(ctx).controller is not None and not given_lab(ctx) else None


def client_factory(address: str, *, tls: TlsConfig | None = None) -> Client:
    """Build the client the verbs talk to; the single seam tests monkeypatch."""
    from vxlab.client import Client  # lazily: `--help` need not load grpc

    return Client(address, tls=tls)


def fail(message: str) -> NoReturn:
    """Print `error: <message>` (one line, stderr) and exit with code 1."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code=1)


def call(ctx: typer.Context, fn: Callable[[Client], Awaitable[T]]) -> T:
    """Run `fn(client)` on a fresh client for the verb's controller (`target`), then close it."""
    to = target(ctx)

    async def go() -> T:
        client = client_factory(to.controller, tls=to.tls) if to.tls else client_factory(to.controller)
        try:
            return await fn(client)
        finally:
            await client.close()

    try:
        return asyncio.run(go())
    except VxError as err:
        fail(err.message)


def in_lab_or_call(ctx: typer.Context, *, in_lab: Callable[[Lab], T], alone: Callable[[Client], Awaitable[T]]) -> T:
    """In a lab, `in_lab(lab)` (the lab's calls wait until every agent programmed the
    change); without one (real hosts), `alone(client)` on the selected controller."""
    from vxlab.lab.lab import Lab
    from vxlab.lab.procs import LabError

    lab = target(ctx).lab
    if not lab:
        return call(ctx, alone)
    try:
        return in_lab(Lab(lab))
    except LabError as err:
        fail(str(err))
    except VxError as err:
        fail(err.message)


def parse_labels(items: Sequence[str] | None, *, field: str = "label") -> dict[str, str]:
    """['k=v', …] -> {'k': 'v'}; a malformed item is bad input (exit 1)."""
    labels: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"{field}: expected key=value, got {item!r}")
        labels[key.strip()] = value
    return labels


def output(*, as_json: bool, data: Any, columns: Sequence[str],
           rows: Iterable[Sequence[str | Text]]) -> None:
    """Print `data` as JSON (stdout only) or `rows` as a plain docker-like table."""
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for name in columns:
        table.add_column(name, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    # Piped output gets a wide console so nothing is cut; a terminal keeps its width.
    console = Console(width=None if sys.stdout.isatty() else 250, highlight=False)
    console.print(table)


def print_json(data: Any) -> None:
    """Print JSON on stdout (the `inspect` verbs)."""
    typer.echo(json.dumps(data, indent=2))


app = typer.Typer(
    name="vxlab", help="Multi-host VXLAN overlay lab: networks, hosts and containers.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    controller: Annotated[str | None, typer.Option(
        "--controller", envvar="VXLAB_CONTROLLER", metavar="ADDR",
        help="Controller address(es), host:port or unix:PATH, comma-separated for failover."
             f" Default: the selected lab's controller, else {DEFAULT_CONTROLLER}.",
    )] = None,
    lab: Annotated[str | None, typer.Option(
        "--lab", envvar="VXLAB_LAB", metavar="NAME", help="The lab to act on (default: the only one running).",
    )] = None,
    pki: Annotated[Path | None, typer.Option(
        "--pki", envvar="VXLAB_PKI", metavar="DIR",
        help="Mutual TLS with the certificates of DIR (`vxlab pki init`): admin, or the agent's host.",
    )] = None,
    tls_ca: Annotated[Path | None, typer.Option("--tls-ca", envvar="VXLAB_TLS_CA", metavar="FILE",
                                                help="CA that signed the controller's certificate.")] = None,
    tls_cert: Annotated[Path | None, typer.Option("--tls-cert", envvar="VXLAB_TLS_CERT", metavar="FILE",
                                                  help="Our client certificate.")] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", envvar="VXLAB_TLS_KEY", metavar="FILE",
                                                 help="Our client key.")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", envvar="VXLAB_INSECURE",
                                           help="Plaintext, no certificates (warns on stderr).")] = False,
) -> None:
    """Multi-host VXLAN overlay lab: networks, hosts and containers."""
    from vxlab.layout import check_lab_name

    if lab is not None:
        try:
            check_lab_name(lab, field="lab")  # before any verb runs: it names a directory
        except VxError as err:
            fail(err.message)
    tls: TlsConfig | None = None
    try:
        explicit = TlsConfig.of(ca=tls_ca, cert=tls_cert, key=tls_key)
    except VxError as err:
        fail(err.message)
    if insecure:
        if explicit or pki:
            fail("insecure: contradicts --pki/--tls-*")
        typer.echo("warning: --insecure: plaintext to the controller, no authentication", err=True)
    elif explicit or pki:
        tls = explicit or Pki(pki).admin()  # type: ignore[arg-type]
    ctx.obj = CliState(controller=controller, lab=lab, tls=tls, insecure=insecure, pki=pki if not explicit else None)


def main() -> None:
    """Console-script entry point (`vxlab`). Usage errors become one `error: …` line
    (exit 2) instead of a multi-line panel."""
    from typer import _click as click  # typer vendors click; its exceptions live here

    try:
        code = app(prog_name="vxlab", standalone_mode=False)
    except click.exceptions.UsageError as e:
        message = " ".join(e.format_message().split())
        if message:  # empty: `vxlab` alone, help already printed
            hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
            typer.echo(f"error: {message}{hint}", err=True)
        sys.exit(2)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)
    except Exception as e:  # a verb that let a controller or lab error through: still one line
        from vxlab.lab.procs import LabError

        if not isinstance(e, VxError | LabError):
            raise
        typer.echo(f"error: {' '.join(str(e).split())}", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


# The verb groups import the helpers above, so they are attached last.
from vxlab.cli import container, controller, host, network

app.add_typer(network.app, name="network")
app.add_typer(host.app, name="host")
app.add_typer(container.app, name="container")
app.add_typer(controller.app, name="controller")
from vxlab.cli import bench  # noqa: E402

app.add_typer(bench.app, name="bench")
from vxlab.cli import agent  # noqa: E402

app.add_typer(agent.app, name="agent")
from vxlab.cli import lab  # noqa: E402
from vxlab.cli import pki as pki_cli  # noqa: E402

app.add_typer(pki_cli.app, name="pki")

app.command("up")(lab.up)
app.command("down")(lab.down)
app.command("status")(lab.status)
app.command("check")(lab.check)
app.command("exec", context_settings={"allow_interspersed_args": False})(lab.exec_)
app.command("trace")(lab.trace)
lab_app = typer.Typer(help="Labs on this machine.", no_args_is_help=True)
lab_app.command("ls")(lab.labs)
app.add_typer(lab_app, name="lab")
from vxlab.cli import views  # noqa: E402

app.command("graph")(views.graph)
store_app = typer.Typer(help="The lab's etcd keys and values (read-only): the overlay's key-value store.",
                        no_args_is_help=True)
store_app.command("ls")(views.store_ls)
app.add_typer(store_app, name="store")
from vxlab.cli import fault  # noqa: E402

app.add_typer(fault.app, name="fault")
from vxlab.cli import experiment  # noqa: E402
from vxlab.cli import policy as policy_cli  # noqa: E402

app.add_typer(experiment.app, name="experiment")
app.add_typer(policy_cli.app, name="policy")
from vxlab.cli import service as service_cli  # noqa: E402

app.add_typer(service_cli.app, name="service")
from vxlab.cli import fuzz as fuzz_cli  # noqa: E402

app.command("fuzz")(fuzz_cli.fuzz)
from vxlab.cli import doctor as doctor_cli  # noqa: E402

app.command("doctor")(doctor_cli.doctor)
from vxlab.cli import dockerplugin  # noqa: E402

app.command("docker-plugin")(dockerplugin.docker_plugin)
