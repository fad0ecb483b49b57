"""A picture of the overlay: hosts, containers and networks as a Graphviz graph.

`to_dot` turns the controller's desired state into DOT source (pure and
deterministic: the same model always gives the same bytes). Each host is a cluster
(name, underlay IP, green when alive, grey and dashed when dead) holding its
containers; a VM host (a lab's QEMU guest, `vms`) is a square-cornered blue cluster
that says "VM" and how it runs (KVM or TCG); a container is one node even when it is attached to several networks
(its label lists "network: ip" per attachment). Each network is one node outside the
hosts (name, subnet, VNI, "internal"), and every attachment is an edge from the
container to its network in that network's colour.

`render` writes the source as it is (`.dot`) or runs Graphviz `dot` for `.svg` and
`.png`. Every problem (unknown suffix, no Graphviz, a file that cannot be written)
is one `GraphError` whose text is the whole message.
"""

from __future__ import annotations

import hashlib
import html
import re
import shutil
import subprocess
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from vxlab.model import Endpoint, Host, Network

FORMATS = {".svg": "svg", ".png": "png", ".dot": ""}
FONT = "Helvetica"
PALETTE = ("#1f77b4", "#e6550d", "#2ca02c", "#9467bd", "#d62728", "#17becf",
           "#8c564b", "#e377c2", "#bcbd22", "#3f51b5", "#00897b", "#6d4c41")
ALIVE = {"color": "#2e7d32", "fill": "#f3faf3", "font": "#1b5e20"}
VM_ALIVE = {"color": "#1565c0", "fill": "#f2f6fc", "font": "#0d47a1"}
DEAD = {"color": "#9e9e9e", "fill": "#f4f4f4", "font": "#757575"}
GREY = "#9e9e9e"
DOT_TIMEOUT = 60.0


class GraphError(Exception):
    """The graph cannot be written; str() is the complete message."""


# --- DOT source ---------------------------------------------------------------------

def to_dot(hosts: list[Host], networks: list[Network], endpoints: list[Endpoint], *, title: str,
           vms: Mapping[str, str] | None = None) -> str:
    """DOT source for the model; sorted throughout, so the output is deterministic.
    `vms`: the hosts that are VMs, each with how it runs ("tcg", "kvm" or "").

    Endpoints on a host the controller does not know are drawn in a dead cluster
    named after that host; endpoints of an unknown network get a grey network node.
    """
    host_by_name = {h.name: h for h in hosts}
    for ep in endpoints:  # an endpoint may outlive its host's registration
        host_by_name.setdefault(ep.host, Host(name=ep.host))
    net_by_name = {n.name: n for n in networks}
    colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(sorted(net_by_name))}
    for ep in endpoints:
        if ep.network not in net_by_name:
            net_by_name[ep.network] = Network(name=ep.network)
            colour[ep.network] = GREY

    containers: dict[tuple[str, str], list[Endpoint]] = defaultdict(list)
    for ep in sorted(endpoints, key=lambda e: (e.host, e.name, e.network)):
        containers[(ep.host, ep.name)].append(ep)

    lines = [
        "digraph vxlab {",
        (f"  graph [rankdir=LR, fontname=\"{FONT}\", fontsize=13, labelloc=t, labeljust=l, "
         "nodesep=0.35, ranksep=1.4, pad=0.3, newrank=true, bgcolor=\"white\","),
        f"         label=<<b>{_esc(title)}</b>>];",
        (f"  node [fontname=\"{FONT}\", fontsize=11, shape=box, style=\"rounded,filled\", "
         "fillcolor=\"white\", color=\"#616161\", margin=\"0.15,0.07\"];"),
        "  edge [arrowhead=none, penwidth=1.8];",
        "",
    ]
    for hname in sorted(host_by_name):
        lines += _host_cluster(host_by_name[hname], containers, colour, vm=(vms or {}).get(hname))
    lines.append("  // networks")
    net_ids = []
    for nname in sorted(net_by_name):
        net = net_by_name[nname]
        known = nname in {n.name for n in networks}
        net_ids.append(_id("net", nname))
        lines.append(f"  {_id('net', nname)} [label=<{_network_label(net, known=known)}>, "
                     f"color=\"{colour[nname]}\", fillcolor=\"{_tint(colour[nname])}\", penwidth=2"
                     + (", peripheries=2" if net.internal else "") + "];")
    if net_ids:
        lines.append(f"  {{ rank=same; {'; '.join(net_ids)}; }}")
    lines += ["", "  // attachments"]
    for (hname, cname), eps in containers.items():
        alive = host_by_name[hname].alive
        for ep in eps:
            style = "" if alive else ", style=dashed"
            lines.append(f"  {_id('ctr', hname, cname)} -> {_id('net', ep.network)} "
                         f"[color=\"{colour[ep.network] if alive else GREY}\"{style}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _host_cluster(host: Host, containers: dict[tuple[str, str], list[Endpoint]],
                  colour: dict[str, str], *, vm: str | None = None) -> list[str]:
    look = (VM_ALIVE if vm is not None else ALIVE) if host.alive else DEAD
    style = ("filled" if vm is not None else "rounded,filled") + ("" if host.alive else ",dashed")
    ip = host.underlay_ip or "no underlay IP"
    kind = "" if vm is None else "VM" + (f" ({vm.upper()})" if vm else "") + " · "
    label = (f"<b>{_esc(host.name)}</b><br/><font point-size=\"10\">{_esc(kind)}{_esc(ip)} · "
             f"{'alive' if host.alive else 'dead'}</font>")
    lines = [
        f"  subgraph {_id('cluster', host.name)} {{",
        (f"    label=<{label}>; style=\"{style}\"; color=\"{look['color']}\"; "
         f"fillcolor=\"{look['fill']}\"; fontcolor=\"{look['font']}\"; penwidth={3 if vm is not None else 2}; "
         "margin=12;"),
    ]
    mine = [(cname, eps) for (hname, cname), eps in containers.items() if hname == host.name]
    for cname, eps in mine:
        attrs = "" if host.alive else f", color=\"{GREY}\", fontcolor=\"{GREY}\", style=\"rounded,filled,dashed\""
        lines.append(f"    {_id('ctr', host.name, cname)} [label=<{_container_label(cname, eps, colour, host.alive)}>"
                     f"{attrs}];")
    if not mine:  # Graphviz drops empty clusters; keep the host visible
        lines.append(f"    {_id('empty', host.name)} [label=\"no containers\", shape=plaintext, "
                     f"style=\"\", fontsize=9, fontcolor=\"{look['font']}\"];")
    lines += ["  }", ""]
    return lines


def _container_label(name: str, eps: list[Endpoint], colour: dict[str, str], alive: bool) -> str:
    rows = [f"<b>{_esc(name)}</b>"]
    for ep in eps:
        net = _esc(ep.network)
        if alive:
            net = f"<font color=\"{colour[ep.network]}\">{net}</font>"
        rows.append(f"<font point-size=\"10\">{net}: {_esc(ep.ip or 'no ip')}</font>")
    return "<br/>".join(rows)


def _network_label(net: Network, *, known: bool) -> str:
    details = [net.subnet or "no subnet", f"VNI {net.vni}" if net.vni else "no VNI"]
    if net.internal:
        details.append("internal")
    if not known:
        details = ["unknown network"]
    return (f"<b>{_esc(net.name)}</b><br/>"
            f"<font point-size=\"10\">{_esc(' · '.join(details))}</font>")


def _esc(text: str) -> str:
    """Text for an HTML-like Graphviz label."""
    return html.escape(text, quote=True).replace("\n", "<br/>")


def _id(kind: str, *parts: str) -> str:
    """A plain DOT identifier for an object; parts that are not all [A-Za-z0-9] get a
    hash suffix, so two different objects never share an identifier."""
    safe = "__".join(re.sub(r"[^A-Za-z0-9]", "_", p) for p in parts)
    if not all(p.isascii() and p.isalnum() for p in parts):
        safe += "_" + hashlib.sha1("\0".join(parts).encode()).hexdigest()[:8]
    return f"{kind}_{safe}"


def _tint(hex_colour: str, *, keep: float = 0.14) -> str:
    """The colour mixed with white (a light fill behind dark text)."""
    rgb = [int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(255 - (255 - c) * keep):02x}" for c in rgb)


# --- rendering ----------------------------------------------------------------------

def render(dot: str, out: Path) -> Path:
    """Write `dot` to `out`: as source for .dot, through Graphviz for .svg/.png."""
    out = Path(out)
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        allowed = ", ".join(FORMATS)
        raise GraphError(f"graph: cannot write {out.name!r}: the file name must end in one of {allowed}")
    data = dot.encode()
    if fmt:
        data = _run_dot(dot, fmt)
    try:
        out.write_bytes(data)
    except OSError as e:
        raise GraphError(f"graph: cannot write {out}: {e.strerror or e}") from e
    return out


def _run_dot(dot: str, fmt: str) -> bytes:
    exe = shutil.which("dot")
    if exe is None:
        raise GraphError("graph: Graphviz 'dot' is not installed (apt-get install graphviz)")
    try:
        proc = subprocess.run([exe, f"-T{fmt}"], input=dot.encode(), capture_output=True,
                              timeout=DOT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired as e:
        raise GraphError(f"graph: Graphviz 'dot' took longer than {DOT_TIMEOUT:g}s") from e
    if proc.returncode != 0:
        why = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GraphError(f"graph: Graphviz 'dot' failed: {why[0] if why else f'exit code {proc.returncode}'}")
    return proc.stdout
