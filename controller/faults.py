"""Faults as desired state: create, get, list, delete, and the target hosts' reports.

Kinds, parameters, claims and targets are the registry's (vxlab.faultkinds); only the
kinds that agents carry out are accepted here (the lab-only ones stay in a lab runner).

- Create is one transaction: the id `f<N>` from the counter key (compare-and-create of
  the counter and the record), and no fault created under `faults/` since the ones the
  claims were checked against were read (`PrefixUnchangedSince`), so two conflicting
  faults can never both be created. With a duration the record is put with an etcd
  lease of ceil(duration) seconds: it heals when the lease expires even if every CLI
  process and the controller are gone; `expires_at` is exactly created + duration (the
  agents' own deadline, for when they cannot hear the lease expire).
- A target's report (`report`) is put under `faultstatus/<id>/<host>` with the record's
  lease, only while the record exists (never an orphan status), and only by a target.
- Delete removes the record and every report in one transaction.
- Reads join each record with its reports: a target that reported nothing is pending.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import math
import re

from vxlab import faultkinds, validate
from vxlab.controller.context import Context
from vxlab.controller.store import Absent, Delete, DeletePrefix, KeyValue, ModRevisionIs, Put, PrefixUnchangedSince
from vxlab.controller.txn import CONFLICT, retry
from vxlab.errors import InvalidArgument, NotFound, VxError
from vxlab.model import Fault, FaultStatus, from_json, to_json

log = logging.getLogger("vxlab.controller")
STATES = ("pending", "applied", "failed", "healed")
REASON_MAX = 500
_ID = re.compile(r"f[1-9][0-9]{0,17}")


def check_id(fault_id: str, *, field: str = "id") -> str:
    if not _ID.fullmatch(fault_id):
        raise InvalidArgument(field, f"a fault id is f<N> (f1, f2, …), not {fault_id!r}")
    return fault_id


def _rfc3339(t: dt.datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


class Faults:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.store = ctx.store
        self.keys = ctx.keys

    def _active(self, kvs: list[KeyValue]) -> list[tuple[str, str, faultkinds.Params]]:
        """(id, kind, params) of the stored faults a new one must not conflict with."""
        out = []
        for kv in kvs:
            f = from_json(Fault, kv.value)
            try:
                out.append((f.id, f.kind, faultkinds.decode(f.kind, f.params)))
            except VxError as e:  # a record this controller cannot read (a newer one wrote it)
                log.warning("fault %s: %s; ignored for conflicts", f.id, e)
        return out

    async def create(self, f: Fault) -> Fault:
        kind = faultkinds.kind_of(f.kind)
        if kind.runs == faultkinds.LAB:
            raise InvalidArgument("fault.kind", f"{f.kind} acts on a lab's own processes: a lab runner injects "
                                                "it (`vxlab fault add` in a lab), not the controller")
        hosts, _ = await self.store.range(self.keys.hosts)
        params = faultkinds.validate(f.kind, f.params, hosts={kv.key[len(self.keys.hosts):] for kv in hosts})
        faultkinds.check_duration(f.kind, params, f.duration)
        keys, lease = self.keys, 0

        async def attempt():  # type: ignore[no-untyped-def]
            nonlocal lease
            kvs, rev = await self.store.range(keys.faults)
            faultkinds.conflict(f.kind, params, self._active(kvs))
            counter = await self.store.get(keys.fault_counter)
            n = int(counter.value) if counter is not None else 1
            fid, created = f"f{n}", dt.datetime.now(dt.timezone.utc)
            record = Fault(id=fid, kind=f.kind, params=faultkinds.encode(f.kind, params),
                           targets=tuple(kind.targets(params)), duration=f.duration, created=_rfc3339(created),
                           expires_at=_rfc3339(created + dt.timedelta(seconds=f.duration)) if f.duration else "")
            if f.duration and not lease:
                lease = await self.store.grant_lease(max(1, math.ceil(f.duration)))
            res = await self.store.txn(
                [PrefixUnchangedSince(keys.faults, rev), Absent(keys.fault(fid)),
                 Absent(keys.fault_counter) if counter is None else ModRevisionIs(counter.key, counter.mod_revision)],
                [Put(keys.fault_counter, str(n + 1).encode()),
                 Put(keys.fault(fid), to_json(record, exclude=("status",)), lease=lease)])
            return record if res.succeeded else CONFLICT

        try:
            record = await retry(attempt, kind="fault_create")
        except BaseException:
            if lease:
                try:
                    await self.store.revoke_lease(lease)  # it holds no key: freeing it writes nothing
                except Exception:  # noqa: BLE001 - the store is down too: the lease expires by itself
                    log.warning("fault create failed; lease %d left to expire", lease)
            raise
        return dataclasses.replace(record, status=tuple(FaultStatus(h) for h in record.targets))

    def _joined(self, kv: KeyValue, reports: list[KeyValue]) -> Fault:
        f = from_json(Fault, kv.value)
        prefix = self.keys.fault_status_of(f.id)
        found = {r.key[len(prefix):]: from_json(FaultStatus, r.value) for r in reports if r.key.startswith(prefix)}
        return dataclasses.replace(f, status=tuple(found.get(h, FaultStatus(h)) for h in f.targets))

    async def get(self, fault_id: str) -> Fault:
        kv = await self.store.get(self.keys.fault(check_id(fault_id)))
        if kv is None:
            raise NotFound(f"fault: no active fault {fault_id!r}")
        reports, _ = await self.store.range(self.keys.fault_status_of(fault_id))
        return self._joined(kv, reports)

    async def list(self) -> tuple[list[Fault], int]:
        kvs, rev = await self.store.range(self.keys.faults)
        reports, _ = await self.store.range(self.keys.fault_statuses, revision=rev)
        faults = [self._joined(kv, reports) for kv in kvs]
        return sorted(faults, key=lambda f: int(f.id[1:])), rev

    async def delete(self, fault_id: str) -> None:
        check_id(fault_id)

        async def attempt():  # type: ignore[no-untyped-def]
            kv = await self.store.get(self.keys.fault(fault_id))
            if kv is None:
                raise NotFound(f"fault: no active fault {fault_id!r}")
            res = await self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)],
                                       [Delete(kv.key), DeletePrefix(self.keys.fault_status_of(fault_id))])
            return kv.lease if res.succeeded else CONFLICT

        lease = await retry(attempt, kind="fault_delete")
        if lease:
            await self.store.revoke_lease(lease)  # its keys are gone already: only the lease is freed

    async def report(self, fault_id: str, status: FaultStatus) -> None:
        """Record what target `status.host` did about the fault (nothing when it said so already)."""
        check_id(fault_id)
        validate.name(status.host, field="status.host", max_len=validate.HOST_NAME_MAX)
        if status.state not in STATES:
            raise InvalidArgument("status.state", f"one of {', '.join(STATES)}, not {status.state!r}")
        if len(status.reason) > REASON_MAX or "\n" in status.reason:
            raise InvalidArgument("status.reason", f"one line of at most {REASON_MAX} characters")

        async def attempt():  # type: ignore[no-untyped-def]
            kv = await self.store.get(self.keys.fault(fault_id))
            if kv is None:
                raise NotFound(f"fault: no active fault {fault_id!r}")
            if status.host not in from_json(Fault, kv.value).targets:
                raise InvalidArgument("status.host", f"{status.host!r} is not a target of fault {fault_id}")
            key = self.keys.fault_status(fault_id, status.host)
            old = await self.store.get(key)
            said = None if old is None else from_json(FaultStatus, old.value)
            if said is not None and (said.state, said.reason) == (status.state, status.reason):
                return None
            record = dataclasses.replace(status, at=_rfc3339(dt.datetime.now(dt.timezone.utc)))
            res = await self.store.txn([ModRevisionIs(kv.key, kv.mod_revision)],
                                       [Put(key, to_json(record), lease=kv.lease)])
            return None if res.succeeded else CONFLICT

        await retry(attempt, kind="fault_report")
