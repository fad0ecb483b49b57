"""`vxlab-cni`: the CNI plugin (the protocol is vxlab.agent.cni), run by a runtime (podman,
a Kubernetes runtime) on a host whose vxlab agent runs, in that host's namespace.

- ADD: CreateEndpoint on the controller (runtime "cni", this host, named
  `cni.endpoint_name`, labelled with the container id and the interface), wait until
  the host's agent has programmed it (its handoff end in this namespace:
  netlink_handoff.wait_programmed), move that end into CNI_NETNS as CNI_IFNAME with its
  address and a default route via the gateway, redirect 127.0.0.11:53 there to the
  agent's DNS listener (the table `ip vxlab_dns` of agent/dns_nft.py, as in vxlab's own
  containers), then record CNI_NETNS on the endpoint (`netns`: where the agent enters
  the container for ops and opens that listener; the update starts its pass) and print
  the result, with `dns` (127.0.0.11). Any failure after the create deletes the endpoint
  again. An ADD repeated for an interface that is there already (ours) answers the same.
- DEL: the DNS redirect and the interface removed from CNI_NETNS (when ours and the
  namespace still exists), then DeleteEndpoint; a missing endpoint or namespace is success.
- CHECK: the endpoint exists, and CNI_NETNS holds CNI_IFNAME with its MAC, marker and
  address, and the DNS redirect; else an error (code 100) saying what differs.
- GC: endpoints of this plugin on this network and host whose (container id, ifname)
  is not in `cni.dev/valid-attachments` are deleted. STATUS: the controller answers and
  knows this host, and its agent is alive (else code 50).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from vxlab import errors
from vxlab.agent import cni, dns_nft, netlink_handoff
from vxlab.agent.cni import CniError, Config, Env
from vxlab.agent.kernel import KernelError, NftTable
from vxlab.agent.nft import Nft
from vxlab.agent.names import Naming
from vxlab.client import Client
from vxlab.layout import Layout
from vxlab.model import Endpoint, Network
from vxlab.tls import Pki


def _client(conf: Config) -> Client:
    """The host's certificate of the `pki` directory (a host may make runtime endpoints on
    itself), or the admin's where the directory has none for the host (a lab machine's)."""
    tls = None
    if conf.pki:
        pki = Pki(Path(conf.pki))
        tls = pki.host(conf.host) if pki.pair(f"host:{conf.host}")[0].is_file() else pki.admin()
    return Client(list(conf.controller), timeout=min(conf.timeout, 10.0), tls=tls)


def _vx(exc: errors.VxError) -> CniError:
    """A controller's refusal, naming the config's field where it names one."""
    msg = (exc.message.replace("endpoint.network:", "network:").replace("endpoint.host:", "host:")
           .replace("endpoint.netns:", "CNI_NETNS:"))
    if isinstance(exc, errors.Unavailable):
        return CniError(cni.TRY_AGAIN, f"controller: {msg}")
    if isinstance(exc, (errors.Unauthenticated, errors.PermissionDenied)):
        return CniError(cni.BAD_CONFIG, f"pki: the controller refused us: {msg}")
    return CniError(cni.BAD_CONFIG, msg)


async def _host(c: Client, conf: Config) -> Layout:
    try:
        return Layout.of_host(await c.get_host(conf.host))
    except errors.NotFound:
        raise CniError(cni.BAD_CONFIG, f"host: no host named {conf.host!r} is registered with the controller"
                                       " (is its agent running?)") from None


def _cidr(ep: Endpoint, net: Network) -> str:
    return f"{ep.ip}/{ipaddress.IPv4Network(net.subnet).prefixlen}"


def _gateway(net: Network) -> str:
    return "" if net.internal else net.gateway


def _result(conf: Config, env: Env, ep: Endpoint, net: Network) -> dict[str, Any]:
    return cni.result(conf.cni_version, ifname=env.ifname, mac=ep.mac, sandbox=env.netns, ip=ep.ip,
                      subnet=net.subnet, gateway=_gateway(net))


def _mine(ep: Endpoint, env: Env) -> bool:
    return ep.runtime == "cni" and ep.labels.get(cni.LABEL_CONTAINER) == env.container_id


DNS_TABLE = (dns_nft.FAMILY, dns_nft.TABLE)


def dns_redirect(ns: str) -> NftTable | None:
    """The DNS redirect of namespace `ns` (a path) as its tag reads, None when there is none."""
    found = Nft().read(ns, (DNS_TABLE,))
    return dns_nft.parse(found[DNS_TABLE]) if DNS_TABLE in found else None


def redirect_dns(ns: str) -> None:
    """127.0.0.11:53 in `ns` to the agent's listener there (written when not right already)."""
    want = dns_nft.build()
    if dns_redirect(ns) != want:
        Nft().replace(ns, DNS_TABLE, want.script)


async def add(conf: Config, env: Env) -> dict[str, Any]:
    if not os.path.exists(env.netns):
        raise CniError(cni.UNKNOWN_CONTAINER, f"CNI_NETNS: {env.netns} does not exist")
    name = cni.endpoint_name(env.container_id, env.ifname)
    async with _client(conf) as c:
        layout = await _host(c, conf)
        want = Endpoint(name, conf.network, conf.host, runtime="cni",
                        labels={cni.LABEL_CONTAINER: env.container_id, cni.LABEL_IFNAME: env.ifname})
        try:
            net = await c.get_network(conf.network)
            ep = await c.create_endpoint(want)
        except errors.AlreadyExists:
            ep = await c.get_endpoint(conf.network, name)
            if not _mine(ep, env):
                raise CniError(cni.BAD_CONFIG, f"network: endpoint {name!r} exists and is not this container's")
        except errors.NotFound as exc:
            raise CniError(cni.BAD_CONFIG, f"network: no vxlab network named {conf.network!r}"
                           if "network" in exc.message else _vx(exc).msg) from None
        except errors.VxError as exc:
            raise _vx(exc) from None
        try:
            have = await asyncio.to_thread(netlink_handoff.interface, env.netns, env.ifname)
            if have is None or have.alias != Naming.endpoint_alias(ep.id):
                await asyncio.to_thread(netlink_handoff.wait_programmed, layout, ep, timeout=conf.timeout)
                await asyncio.to_thread(netlink_handoff.take, layout.handoff_link(ep), into=env.netns,
                                        ifname=env.ifname, cidr=_cidr(ep, net), gateway=_gateway(net))
            await asyncio.to_thread(redirect_dns, env.netns)
            if ep.netns != env.netns:  # where it is, now that it is there
                ep = await c.update_endpoint(dataclasses.replace(ep, netns=env.netns), fields=["netns"])
        except (KernelError, OSError, errors.VxError) as exc:
            try:
                await c.delete_endpoint(conf.network, name)
            except errors.VxError:
                pass
            if isinstance(exc, errors.VxError):
                raise _vx(exc) from None
            raise CniError(cni.TRY_AGAIN if "has not made" in str(exc) else cni.IO_FAILURE, str(exc)) from None
        return _result(conf, env, ep, net)


async def delete(conf: Config, env: Env) -> None:
    name = cni.endpoint_name(env.container_id, env.ifname)
    async with _client(conf) as c:
        try:
            ep = await c.get_endpoint(conf.network, name)
        except errors.NotFound:
            return  # gone already (or never made): DEL is idempotent
        except errors.VxError as exc:
            raise _vx(exc) from None
        if env.netns and os.path.exists(env.netns):
            try:
                if await asyncio.to_thread(dns_redirect, env.netns) is not None:
                    await asyncio.to_thread(Nft().delete, env.netns, DNS_TABLE)
                await asyncio.to_thread(netlink_handoff.release, env.netns, env.ifname,
                                        alias=Naming.endpoint_alias(ep.id))
            except KernelError:
                pass  # the namespace is going; the agent removes the pair with the endpoint
        try:
            await c.delete_endpoint(conf.network, name)
        except errors.NotFound:
            return
        except errors.VxError as exc:
            raise _vx(exc) from None


async def check(conf: Config, env: Env) -> None:
    name = cni.endpoint_name(env.container_id, env.ifname)
    async with _client(conf) as c:
        try:
            ep, net = await c.get_endpoint(conf.network, name), await c.get_network(conf.network)
        except errors.NotFound as exc:
            raise CniError(cni.NOT_AS_MADE, f"{name}: {exc.message}") from None
        except errors.VxError as exc:
            raise _vx(exc) from None
    if not os.path.exists(env.netns):
        raise CniError(cni.UNKNOWN_CONTAINER, f"CNI_NETNS: {env.netns} does not exist")
    have = await asyncio.to_thread(netlink_handoff.interface, env.netns, env.ifname)
    if have is None:
        raise CniError(cni.NOT_AS_MADE, f"{env.ifname}: no such interface in {env.netns} (deleted?)")
    wrong = [f"{what} {got!r}, not {want!r}" for what, got, want in (
        ("marker", have.alias, Naming.endpoint_alias(ep.id)), ("mac", have.mac, ep.mac.lower()),
        ("address", have.addrs, (_cidr(ep, net),)), ("up", have.up, True)) if got != want]
    if await asyncio.to_thread(dns_redirect, env.netns) != dns_nft.build():
        wrong.append(f"no DNS redirect (table {' '.join(DNS_TABLE)}) to the agent's listener")
    if wrong:
        raise CniError(cni.NOT_AS_MADE, f"{env.ifname} in {env.netns}: {'; '.join(wrong)}")


async def gc(conf: Config, env: Env) -> None:
    keep = cni.valid_attachments(conf)
    if keep is None:
        return
    async with _client(conf) as c:
        try:
            for ep in await c.list_endpoints(network=conf.network, host=conf.host):
                attached = (ep.labels.get(cni.LABEL_CONTAINER, ""), ep.labels.get(cni.LABEL_IFNAME, ""))
                if ep.runtime == "cni" and attached[0] and attached not in keep:
                    try:
                        await c.delete_endpoint(ep.network, ep.name)
                    except errors.NotFound:
                        pass
        except errors.VxError as exc:
            raise _vx(exc) from None


async def status(conf: Config, env: Env) -> None:
    async with _client(conf) as c:
        try:
            host = await c.get_host(conf.host)
            await c.get_network(conf.network)
        except errors.VxError as exc:
            raise CniError(cni.NOT_AVAILABLE, _vx(exc).msg) from None
    if not host.alive:
        raise CniError(cni.NOT_AVAILABLE, f"host: the agent of {conf.host!r} is not alive")


COMMANDS = {"ADD": add, "DEL": delete, "CHECK": check, "GC": gc, "STATUS": status}


def run(environ: Mapping[str, str], stdin: bytes, out: IO[str]) -> int:
    """One invocation: 0 with the command's output (if any) on `out`, else 1 with the error JSON."""
    version = cni.version_of(stdin)
    try:
        env = Env.of(environ)
        if env.command == "VERSION":
            json.dump(cni.versions(version), out)
            return 0
        conf = Config.parse(stdin)
        got = asyncio.run(COMMANDS[env.command](conf, env))
    except CniError as exc:
        json.dump(cni.error(version, exc), out)
        return 1
    except Exception as exc:  # noqa: BLE001 - the runtime gets JSON, whatever broke
        json.dump(cni.error(version, CniError(cni.IO_FAILURE, f"{type(exc).__name__}: {exc}")), out)
        return 1
    if got is not None:
        json.dump(got, out)
    return 0


def main() -> None:
    sys.exit(run(os.environ, sys.stdin.buffer.read(), sys.stdout))
