"""The `--for` timer of a fault: a process of its own that sleeps until the fault's end,
then heals it (`python -m vxlab.lab.faulttimer LAB FAULT_ID UNTIL`; vxlab.lab.faults
starts it and kills it when the fault is healed by hand first)."""

from __future__ import annotations

import sys
import time

from vxlab.lab import faults
from vxlab.lab.faultspec import FaultError
from vxlab.lab.lab import Lab


def main(lab_name: str, fault_id: str, until: float) -> None:
    time.sleep(max(0.0, until - time.time()))
    try:
        faults.heal(Lab(lab_name), fault_id, from_timer=True)
        print(f"{time.strftime('%H:%M:%S')} healed {fault_id} (timer)", flush=True)
    except FaultError as e:  # healed by hand meanwhile
        print(f"{time.strftime('%H:%M:%S')} {e}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], float(sys.argv[3]))
