"""What a fault is, for the lab: the registry's (vxlab.faultkinds) rules, with the lab's
error class and field names.

`validate(kind, params, hosts=…)` returns normalised parameters or raises FaultError
naming the parameter and the reason (`percent: must be > 0 …`; a scenario prefixes its
own path) — nothing is changed by a bad fault. `claims`: the objects a fault holds
exclusively; two active faults (of the lab runner or the controller) may not claim the
same object.
"""

from __future__ import annotations

from typing import Any

from vxlab import faultkinds
from vxlab.errors import InvalidArgument, VxError
from vxlab.faultkinds import ETCD_MEMBERS_MAX, KINDS, sides
from vxlab.lab.procs import LabError

__all__ = ["ETCD_MEMBERS_MAX", "KINDS", "FaultError", "claims", "describe", "parse_duration", "sides", "validate"]


class FaultError(LabError):
    """A fault that cannot be added or healed; the message names the field."""


def validate(kind: str, params: dict[str, Any], *, hosts: set[str] | None, members: int = 1,
             control: bool = False) -> dict[str, Any]:
    """Normalised parameters of a fault, or FaultError; `hosts`: the names a host may
    take (None: any valid name, checked later against a deployment); `members`: the lab's etcd members;
    `control`: the agents dial the controller across the underlay (`control: underlay`),
    so a partition's side may name `control` — in a lab whose agents use the controller's
    unix socket it would cut nothing, and is refused."""
    try:
        out = faultkinds.validate(kind, params, hosts=hosts, members=members, field="")
    except InvalidArgument as e:
        raise FaultError(e.message) from None
    for side in ("hosts", "from"):
        if not control and faultkinds.CONTROL in out.get(side, ()):
            raise FaultError(f"{side}: 'control' is the control plane, which a partition cuts only in a lab with"
                             " `control: underlay` (this lab's agents use the controller's unix socket)")
    return out


def parse_duration(value: Any, *, field: str = "for") -> float:
    """'10s', '500ms', '2m', '1.5' or a number -> seconds."""
    try:
        return faultkinds.parse_duration(value, field=field)
    except VxError as e:
        raise FaultError(e.message) from None


def claims(kind: str, params: dict[str, Any]) -> set[str]:
    return faultkinds.kind_of(kind).claims(params)


def describe(kind: str, params: dict[str, Any]) -> str:
    return faultkinds.describe(kind, params)
