"""The host-fault side of `NetlinkKernel` (a mixin): the fault table (through the firewall
driver), root qdiscs of ours, the IFB redirect of the underlay's ingress, and the
underlay's up/down state, with pyroute2's tc support.

Ownership: our root qdiscs carry the major handle FAULT_HANDLE (`7678:`); a root qdisc
with handle 0 is the kernel's default (replaced, and back when ours goes); any other is
someone else's and never touched (`Foreign`). The IFB device `vxifb0` carries the
ifalias `vxlab:fault:ifb`; it is created with a MAC of ours (02:76:78:…), so one left
unmarked by a stopped pass is told from a stranger's and marked again. The ingress
redirect is an ingress qdisc with one u32 filter of preference FAULT_HANDLE (this kernel
has no matchall). A missing qdisc module (no sch_netem) is `Unsupported`, said plainly.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.tcmsg.common import tick_in_usec

from vxlab.agent import fault_nft
from vxlab.agent.kernel import (
    FAULT_HANDLE,
    FAULT_IFB,
    FAULT_IFB_MARK,
    FaultTable,
    Foreign,
    HostFaults,
    NETEM_MISSING,
    KernelError,
    Qdisc,
    Route,
    Unsupported,
)
from vxlab.agent.netlink_dump import IFF_UP, Msg, route_of
from vxlab.agent.netlink_ns import NsHandle
from vxlab.agent.netlink_tables import FAULT
from vxlab.agent.nft import Nft

TC_H_ROOT = 0xFFFFFFFF
TC_H_INGRESS = 0xFFFFFFF1
INGRESS = 0xFFFF0000
OURS = FAULT_HANDLE << 16
IFB_MAC = "02:76:78:00:00:01"
ETH_P_ALL = 3


def _qdisc_of(msg: Msg) -> Qdisc | None:
    """Our qdisc from an RTM_NEWQDISC message (None: not one we write)."""
    kind = msg.get_attr("TCA_KIND")
    opts = msg.get_attr("TCA_OPTIONS")
    if kind == "tbf" and opts is not None:
        parms = opts.get_attr("TCA_TBF_PARMS")
        return Qdisc("tbf", rate=int(parms["rate"])) if parms else None
    if kind == "netem" and opts is not None:
        return Qdisc("netem", delay_us=round(opts.get("delay", 0) / tick_in_usec),
                     jitter_us=round(opts.get("jitter", 0) / tick_in_usec))
    return None


class FaultOps:
    """The host-fault methods of the Kernel contract; the class using it (before `Kernel`
    in its bases) provides `_own`, `_write`, `_op`, `_find`, `_get`, `writes`, `_nft`,
    `add_route` and the table helpers of TableOps."""

    _own: Callable[[], NsHandle]
    _write: Callable[..., Any]
    _op: Callable[..., Any]
    _find: Callable[[NsHandle, str], int]
    _get: Callable[[NsHandle, str], Msg | None]
    _replace: Callable[..., None]
    _delete: Callable[..., bool]
    add_route: Callable[[str, Route], None]
    writes: Counter[str]
    _nft: Nft

    # --- reads ----------------------------------------------------------------------------
    def _root(self, h: NsHandle, index: int) -> Msg | None:
        with self._op("dump", "", "qdiscs"):
            return next((q for q in h.ipr.get_qdiscs(index) if q["parent"] == TC_H_ROOT), None)

    def _redirected(self, h: NsHandle, index: int) -> bool:
        """`index` has an ingress qdisc with our filter."""
        with self._op("dump", "", "ingress filters"):
            if not any(q.get_attr("TCA_KIND") == "ingress" for q in h.ipr.get_qdiscs(index)):
                return False
            return any(f["info"] >> 16 == FAULT_HANDLE and f.get_attr("TCA_KIND") == "u32"
                       for f in h.ipr.get_filters(index, parent=INGRESS))

    def host_faults(self, dev: str, table: str | None) -> HostFaults:
        """The host faults on underlay `dev` (`table`: our fault table's listing, if any)."""
        h = self._own()
        index, ifb = self._find(h, dev), self._get(h, FAULT_IFB)
        if not index:
            raise KernelError(f"no underlay device {dev!r} in the agent's namespace")
        qdiscs = {}
        for name, i in ((dev, index), (FAULT_IFB, ifb["index"] if ifb else 0)):
            root = self._root(h, i) if i else None
            if root is not None and root["handle"] == OURS and (q := _qdisc_of(root)) is not None:
                qdiscs[name] = q
        ingress = bool(ifb and (ifb.get("ifalias") or "") == FAULT_IFB_MARK and ifb["flags"] & IFF_UP
                       and self._redirected(h, index))
        with self._op("dump", "", f"link {dev}"):
            link = h.ipr.link("get", index=index)[0]
            routes = tuple(sorted(r for r in (route_of(m, {index: dev}) for m in h.ipr.route("dump", family=socket.AF_INET))
                                  if r is not None))
        return HostFaults(table=fault_nft.parse(table) if table is not None else None, qdiscs=qdiscs,
                          ingress=ingress, down=not link["flags"] & IFF_UP, routes=routes)

    # --- the table ----------------------------------------------------------------------------
    def set_fault_table(self, table: FaultTable) -> None:
        self._own()
        found = self._nft.read("", (FAULT,))
        if (fault_nft.parse(found[FAULT]) if FAULT in found else None) != table:
            self._replace("set_fault_table", "", FAULT, lambda: table.script)

    def delete_fault_table(self) -> None:
        self._own()
        self._delete("delete_fault_table", "", FAULT)

    # --- qdiscs ---------------------------------------------------------------------------------
    def set_fault_qdisc(self, dev: str, want: Qdisc) -> None:
        h = self._own()
        index = self._find(h, dev)
        if not index:
            raise KernelError(f"set_fault_qdisc: no device {dev!r} in the agent's namespace")
        root = self._root(h, index)
        if root is not None and root["handle"] not in (0, OURS):
            raise Foreign(f"set_fault_qdisc: the root qdisc of {dev} is {root.get_attr('TCA_KIND')} "
                          f"{root['handle'] >> 16:x}: not ours")
        if root is not None and root["handle"] == OURS:
            if _qdisc_of(root) == want:
                return
            if root.get_attr("TCA_KIND") != want.kind:  # another kind under our handle: make it anew
                self._write("set_fault_qdisc", h, "", f"root qdisc of {dev}", h.ipr.tc, "del", index=index,
                            handle=OURS, root=True)
        args: dict[str, Any] = ({"rate": want.rate, "burst": max(16 * 1024, want.rate // 100), "latency": 100_000}
                                if want.kind == "tbf" else {"delay": want.delay_us, "jitter": want.jitter_us})
        try:
            self._write("set_fault_qdisc", h, "", f"{want.describe()} on {dev}", h.ipr.tc, "replace", want.kind,
                        index, OURS, **args)
        except KernelError as exc:
            cause = exc.__cause__
            if want.kind == "netem" and isinstance(cause, NetlinkError) and cause.code == errno.ENOENT:
                raise Unsupported(NETEM_MISSING) from cause
            raise

    def delete_fault_qdisc(self, dev: str) -> None:
        h = self._own()
        index = self._find(h, dev)
        root = self._root(h, index) if index else None
        if root is not None and root["handle"] == OURS:
            self._write("delete_fault_qdisc", h, "", f"root qdisc of {dev}", h.ipr.tc, "del", index=index,
                        handle=OURS, root=True)

    # --- the ingress redirect ---------------------------------------------------------------------
    def set_fault_ingress(self, dev: str) -> None:
        h = self._own()
        index = self._find(h, dev)
        if not index:
            raise KernelError(f"set_fault_ingress: no device {dev!r} in the agent's namespace")
        ifb = self._get(h, FAULT_IFB)
        if ifb is not None and (ifb.get("ifalias") or "") != FAULT_IFB_MARK:
            if ifb.get("ifalias") or (ifb.get("address") or "") != IFB_MAC:
                raise Foreign(f"set_fault_ingress: a link {FAULT_IFB!r} exists that is not ours")
        created = ifb is None
        if created:
            self._write("set_fault_ingress", h, "", f"ifb {FAULT_IFB}", h.ipr.link, "add", ifname=FAULT_IFB,
                        kind="ifb", address=IFB_MAC)
            ifb = self._get(h, FAULT_IFB)
            assert ifb is not None
        if (ifb.get("ifalias") or "") != FAULT_IFB_MARK or not ifb["flags"] & IFF_UP:
            self._write("set_fault_ingress", h, "", f"link {FAULT_IFB}", h.ipr.link, "set", index=ifb["index"],
                        ifalias=FAULT_IFB_MARK, state="up")
        if self._redirected(h, index):
            if not created:
                return
            # our filter redirects to the device that was gone: it goes, and comes back below
            self._write("set_fault_ingress", h, "", f"our filter on {dev}", h.ipr.tc, "del-filter", "u32", index,
                        parent=INGRESS, prio=FAULT_HANDLE, protocol=ETH_P_ALL)
        with self._op("dump", "", "qdiscs"):
            has_ingress = any(q.get_attr("TCA_KIND") == "ingress" for q in h.ipr.get_qdiscs(index))
        if not has_ingress:
            self._write("set_fault_ingress", h, "", f"ingress qdisc of {dev}", h.ipr.tc, "add", "ingress", index,
                        INGRESS)
        self._write("set_fault_ingress", h, "", f"redirect of {dev}'s ingress to {FAULT_IFB}", h.ipr.tc,
                    "add-filter", "u32", index, ":1", parent=INGRESS, prio=FAULT_HANDLE, protocol=ETH_P_ALL,
                    target=INGRESS, keys=["0x0/0x0+0"],
                    action={"kind": "mirred", "direction": "egress", "action": "redirect", "ifindex": ifb["index"]})

    def delete_fault_ingress(self, dev: str) -> None:
        h = self._own()
        index = self._find(h, dev)
        if index and self._redirected(h, index):
            with self._op("dump", "", "ingress filters"):
                others = [f for f in h.ipr.get_filters(index, parent=INGRESS) if f["info"] >> 16 != FAULT_HANDLE]
            if others:  # someone else's filters share the ingress qdisc: only ours goes
                self._write("delete_fault_ingress", h, "", f"our filter on {dev}", h.ipr.tc, "del-filter", "u32",
                            index, parent=INGRESS, prio=FAULT_HANDLE, protocol=ETH_P_ALL)
            else:
                self._write("delete_fault_ingress", h, "", f"ingress qdisc of {dev}", h.ipr.tc, "del", index=index,
                            handle=INGRESS, parent=TC_H_INGRESS)
        ifb = self._get(h, FAULT_IFB)
        if ifb is not None and (ifb.get("ifalias") or "") == FAULT_IFB_MARK:
            self._write("delete_fault_ingress", h, "", f"link {FAULT_IFB}", h.ipr.link, "del", index=ifb["index"])

    # --- the underlay's state -----------------------------------------------------------------------
    def set_underlay_state(self, dev: str, *, up: bool, routes: tuple[Route, ...] = ()) -> None:
        h = self._own()
        index = self._find(h, dev)
        if not index:
            raise KernelError(f"set_underlay_state: no device {dev!r} in the agent's namespace")
        with self._op("get", "", f"link {dev}"):
            is_up = bool(h.ipr.link("get", index=index)[0]["flags"] & IFF_UP)
        if is_up != up:
            self._write("set_underlay_state", h, "", f"link {dev}", h.ipr.link, "set", index=index,
                        state="up" if up else "down")
        for route in routes if up else ():
            self.add_route("", route)
