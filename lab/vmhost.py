"""A lab's VM hosts: boot, agent, crash, removal (issue 16).

A VM host (`vm:` in the topology) is a QEMU guest (vxlab.lab.vm) instead of a network
namespace of this machine:

- its run directory is `<lab dir>/vms/<host>/`, its tap on the switch is its switch port
  (LabLayout.vm_tap), its address, MTU and the lab's underlay those of any host; its
  serial console goes to `<lab dir>/logs/vm-<host>.console.log`;
- the guest sees this machine's root read-only and the lab's directory read-write at the
  same path, so its agent reads the lab's certificates and writes its status file and
  log exactly where the lab reads a namespace host's;
- its agent runs in the guest (`start_agent`: a `Proc` of the guest, lab/supervisor.py),
  with the namespace prefix a namespace host's agent would have, and dials the
  controller's control address across the underlay (`control: underlay`);
- `up` boots the new ones in threads (`Boots`) while it starts the controller and writes
  the desired state, and waits for them before it starts their agents; a host-crash
  kills QEMU (`crash`: the tap stays, without carrier) and its heal boots it again with
  the configuration recorded in its run directory (`boot_again`);
- `down` and `remove` clean up QEMU, the tap and the files (vxlab.lab.vm.sweep/cleanup),
  also after a kill -9 of the `up` that booted them.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vxlab.agentconfig import AgentConfig
from vxlab.lab import vm
from vxlab.lab.supervisor import Proc
from vxlab.lab.topology import HostSpec, Topology
from vxlab.layout import LabLayout

VMS = "vms"                          # under the lab's directory
ENV_PASSED = ("VXLAB_NFT_BACKEND",)  # this process's settings the guest's agent gets too


class VmHostError(RuntimeError):
    """A VM host could not be booted or reached; the message says where to look."""


def run_dir(lab_dir: Path, host: str) -> Path:
    return lab_dir / VMS / host


def machine(lab_dir: Path, host: str) -> vm.Vm:
    return vm.Vm(run_dir(lab_dir, host))


def vm_hosts(topo: Topology | None) -> dict[str, HostSpec]:
    """The topology's VM hosts by name."""
    return {h.name: h for h in (topo.hosts if topo else ()) if h.vm is not None}


def config(lab_dir: Path, layout: LabLayout, topo: Topology, host: HostSpec) -> vm.VmConfig:
    """What the VM of `host` boots with."""
    assert host.vm is not None
    prefix = topo.underlay.network.prefixlen
    nic = vm.Nic(switch_ns=layout.switch_ns, tap=layout.vm_tap(host.name), mark=layout.marker,
                 address=f"{host.underlay_ip}/{prefix}", mtu=topo.underlay.mtu)
    return vm.VmConfig(name=host.name, spec=host.vm, nic=nic, console=str(console(lab_dir, host.name)),
                       shares=(str(lab_dir),))


def console(lab_dir: Path, host: str) -> Path:
    return lab_dir / "logs" / f"vm-{host}.console.log"


@dataclass
class Boots:
    """VM boots running in threads: `start` each, `wait` for all (a VmHostError naming
    every one that failed)."""

    done: dict[str, vm.Boot] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self, lab_dir: Path, name: str, cfg: vm.VmConfig) -> None:
        def boot() -> None:
            try:
                self.done[name] = machine(lab_dir, name).start(cfg)
            except (vm.VmError, vm.ChannelError, OSError) as e:
                self.failed[name] = str(e)
            except Exception as e:  # noqa: BLE001 - any failure is the boot's, said in wait()
                self.failed[name] = f"{type(e).__name__}: {e}"
        thread = threading.Thread(target=boot, name=f"vxlab-boot-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def wait(self) -> dict[str, vm.Boot]:
        """The boots started since the last wait, once all ended (each started again later
        is a new one)."""
        for thread in self.threads:
            thread.join()
        done, failed = self.done, self.failed
        self.threads, self.done, self.failed = [], {}, {}
        if failed:
            raise VmHostError("; ".join(f"VM host {h}: {why}" for h, why in sorted(failed.items())))
        return done


def start_agent(lab_dir: Path, agent: AgentConfig, *, log: str) -> Proc:
    """The agent of a VM host, started in its guest with `agent`'s options."""
    guest = machine(lab_dir, agent.host)
    env = {k: v for k in ENV_PASSED if (v := os.environ.get(k))}
    try:
        pid = guest.spawn([sys.executable, "-m", "vxlab.cli", *agent.argv()], log=log, env=env)
    except vm.ChannelError as e:
        raise VmHostError(f"VM host {agent.host}: cannot start its agent: {e}") from None
    return Proc.in_guest(guest.dir, pid)


def accel(lab_dir: Path, host: str) -> dict[str, Any]:
    """How the VM of `host` runs: {"accel": kvm|tcg, "why": …, "kernel": …} ({} before a boot)."""
    booted = machine(lab_dir, host).booted()
    return {"accel": booted["accel"]["name"], "why": booted["accel"]["reason"], "kernel": booted["kernel"]} \
        if booted else {}


def crash(lab_dir: Path, host: str) -> None:
    """host-crash: SIGKILL its QEMU (its tap stays, without carrier: a cable pulled)."""
    guest = machine(lab_dir, host)
    if not guest.alive():
        raise VmHostError(f"host: the VM of {host!r} is not running")
    guest.kill()


def boot_again(lab_dir: Path, host: str) -> vm.Boot:
    """Boot a crashed VM host again as it was booted before (its recorded configuration)."""
    guest = machine(lab_dir, host)
    cfg = guest.config()
    if cfg is None:
        raise VmHostError(f"VM host {host}: no configuration in {guest.dir} to boot it again")
    try:
        return guest.start(cfg)
    except (vm.VmError, vm.ChannelError) as e:
        raise VmHostError(f"VM host {host}: {e}") from None


def remove(lab_dir: Path, host: str) -> None:
    """Everything of one VM host: QEMU, its tap, its run directory."""
    machine(lab_dir, host).cleanup()


def sweep(lab_dir: Path) -> list[str]:
    """Every VM host of the lab (`down`), also those an `up` killed halfway left."""
    return vm.sweep(lab_dir / VMS)
