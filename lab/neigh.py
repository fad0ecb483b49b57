"""The machine's IPv4 neighbour table, shared by every lab.

Linux keeps one neighbour (ARP) table for all network namespaces, and caps its
non-permanent entries machine-wide at `net.ipv4.neigh.default.gc_thresh3` (1024 by
default). A lab puts in it what many kernels would each hold: every host's entries for
the other hosts' underlay addresses, and every container's for its peers (`vxlab check`
over 50 containers alone needs about 2 450). Past the cap no new entry can be made
("neighbor table overflow") and packets waiting for one are dropped: a third of the
first replies went missing in the 50-host control-plane bench
(bench/results/FINDINGS-issue6.md).

So `up` raises gc_thresh1..3 (never lowers them) while any lab runs, and the last
lab's `down` puts back what the first one found, unless someone changed the values in
between. The record `/run/vxlab.neigh.json` (under an flock) holds the values found,
the values set and the lab directories holding the raise; a lab whose directory is
gone (removed without `down`) no longer holds it.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

PATHS = tuple(Path(f"/proc/sys/net/ipv4/neigh/default/gc_thresh{i}") for i in (1, 2, 3))
LAB_VALUES = (8192, 32768, 65536)
RECORD = Path("/run/vxlab.neigh.json")


def read() -> tuple[int, ...]:
    return tuple(int(p.read_text().split()[0]) for p in PATHS)


def write(values: tuple[int, ...] | list[int]) -> None:
    # gc_thresh1 <= 2 <= 3 must hold after every single write: raise from the top,
    # lower from the bottom.
    order = list(zip(PATHS, values, strict=True))
    for path, value in (reversed(order) if values[2] >= read()[2] else order):
        path.write_text(str(value))


@contextmanager
def _locked() -> Iterator[dict[str, Any]]:
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    with open(RECORD.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            rec: dict[str, Any] = json.loads(RECORD.read_text()) if RECORD.exists() else {}
        except ValueError:
            rec = {}
        yield rec
        if rec.get("labs"):
            RECORD.write_text(json.dumps(rec))
        else:
            RECORD.unlink(missing_ok=True)


def hold(lab_dir: Path) -> str:
    """Raise the limits for the lab in `lab_dir`; what changed, for people ("" when
    nothing did: they were high enough, or another lab raised them already)."""
    try:
        with _locked() as rec:
            cur = read()
            want = tuple(max(c, w) for c, w in zip(cur, LAB_VALUES, strict=True))
            msg = ""
            if want != cur:
                if not rec.get("labs"):
                    rec["saved"] = list(cur)
                write(want)
                rec["set"] = list(want)
                msg = (f"raised the machine's neighbour table limits gc_thresh1..3 {'/'.join(map(str, cur))}"
                       f" -> {'/'.join(map(str, want))} while labs run (one table for all namespaces)")
            if "saved" in rec:
                rec["labs"] = sorted({*rec.get("labs", []), str(lab_dir)})
            return msg
    except OSError:
        return ""  # not root, or no IPv4: the lab works as before, the table stays small


def holders() -> list[str]:
    """The lab directories that hold the raise now (labs still running)."""
    try:
        rec = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    except (OSError, ValueError):
        return []
    return [d for d in rec.get("labs", []) if (Path(d) / "state.json").exists()]


def release(lab_dir: Path) -> None:
    """The lab in `lab_dir` no longer needs the raise; the last one puts back the values
    found, if they are still the ones set."""
    try:
        with _locked() as rec:
            labs = [d for d in rec.get("labs", []) if d != str(lab_dir) and (Path(d) / "state.json").exists()]
            rec["labs"] = labs
            if not labs and "saved" in rec and list(read()) == rec.get("set"):
                write(rec["saved"])
    except OSError:
        pass
