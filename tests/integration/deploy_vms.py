"""The rig of tests/integration/test_deploy_vms.py: three VMs booted from a Debian 12
image (lab/vmimage.py) with deploy/cloud-init/vxlab-vm.yaml, on a switch namespace of
the test's own, as deploy/README.md describes them (192.168.56.11–13, controllers on
vm1 and vm2, the certificates of a `vxlab pki init` directory in their user-data).

`Cluster.vxlab(...)` runs this checkout's CLI in the switch namespace, as an operator's
machine on the VMs' private network would (admin certificate); `Cluster.run(vm, cmd)`
runs a command inside a guest through its command channel (what `vagrant ssh VM -c`
does in the README). Everything is named `vxt<6 hex>…` and removed by `close()`.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vxlab import netns
from vxlab.bench.vm import rss_mib
from vxlab.lab import hostns, vm, vmimage

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
NAMES = ("vm1", "vm2", "vm3")
CONTROLLERS = ("vm1", "vm2")
SUBNET = "192.168.56"
SWITCH_IP = f"{SUBNET}.1"  # this machine's foot on the VMs' network, inside the switch namespace
MEMORY_MB = 1024


def ip_of(name: str) -> str:
    return f"{SUBNET}.1{name[-1]}"


def network_config(name: str) -> str:
    """NoCloud network-config (v2): a static address on eth0, no gateway (a private network)."""
    return f"version: 2\nethernets:\n  eth0:\n    addresses: [{ip_of(name)}/24]\n"


@dataclass
class Guest:
    name: str
    vm: vm.Vm
    config: vm.VmConfig
    booted: float = 0.0  # time.monotonic() when QEMU was started last
    boot: vm.Boot | None = None


@dataclass
class Cluster:
    tmp: Path
    image: vmimage.Image
    tag: str = field(default_factory=lambda: "vxt" + secrets.token_hex(3))
    guests: dict[str, Guest] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)

    @property
    def switch(self) -> str:
        return f"{self.tag}sw"

    @property
    def mark(self) -> str:
        return f"vxlab:test:{self.tag}"

    @property
    def pki(self) -> Path:
        return self.tmp / "pki"

    @property
    def controllers(self) -> str:
        return ",".join(f"{ip_of(n)}:7070" for n in CONTROLLERS)

    # --- set-up ---------------------------------------------------------------------------
    def prepare(self) -> None:
        """The switch, the PKI (the VMs' addresses as server names) and each VM's disk and seed."""
        hostns.create_switch(self.switch, mark=self.mark, mtu=1500, outside=f"{SWITCH_IP}/24")
        self.vxlab("pki", "init", str(self.pki), *[a for n in NAMES for a in ("--host", n)],
                   *[a for n in NAMES for a in ("--san", ip_of(n))], local=True)
        for i, name in enumerate(NAMES):
            d = self.tmp / name
            d.mkdir()
            user_data = subprocess.run(
                [sys.executable, str(DEPLOY / "cloud-init" / "user-data.py"), "--pki", str(self.pki), name,
                 *(["--controller"] if name in CONTROLLERS else [])], capture_output=True, text=True, check=True).stdout
            seed = vmimage.seed(d / "seed.img", user_data=user_data, network_config=network_config(name),
                                meta_data=f"instance-id: {self.tag}-{name}\nlocal-hostname: {name}\n")
            disk = vm.Disk(root=str(vmimage.overlay(self.image, d / "root.qcow2")), kernel=str(self.image.kernel),
                           initrd=str(self.image.initrd), seed=str(seed))
            nic = vm.Nic(switch_ns=self.switch, tap=f"{self.tag}v{i + 1}", mark=self.mark,
                         address=f"{ip_of(name)}/24")
            config = vm.VmConfig(name=name, spec=vm.VmSpec(cpus=1, memory_mb=MEMORY_MB), nic=nic, disk=disk,
                                 console=str(d / "console.log"))
            self.guests[name] = Guest(name, vm.Vm(d / "run"), config)

    def start(self, *names: str) -> None:
        """Boot these VMs at once; returns when each one's channel answers."""
        errors: list[BaseException] = []

        def one(g: Guest) -> None:
            g.booted = time.monotonic()
            try:
                g.boot = g.vm.start(g.config, timeout=600)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        threads = [threading.Thread(target=one, args=(self.guests[n],)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def close(self) -> None:
        """Every VM, tap and the switch; the disks' overlays too (the consoles stay in tmp)."""
        for g in self.guests.values():
            g.vm.cleanup()
            if g.config.disk:
                Path(g.config.disk.root).unlink(missing_ok=True)
        if Path(netns.path(self.switch)).exists():
            hostns.delete_ns(self.switch)

    # --- acting -----------------------------------------------------------------------------
    def run(self, name: str, cmd: str, *, timeout: float = 120) -> vm.RunResult:
        return self.guests[name].vm.run(cmd, timeout=timeout)

    def must(self, name: str, cmd: str, *, timeout: float = 120) -> str:
        rc, out, err = self.run(name, cmd, timeout=timeout)
        assert rc == 0, f"{name}: {cmd}: exit {rc}: {err.strip()[-1500:]}\n{out[-1500:]}"
        return out

    def vxlab(self, *args: str, local: bool = False, check: bool = True, timeout: float = 120,
              controller: str = "") -> subprocess.CompletedProcess[str]:
        """This checkout's CLI; `local`: here, else in the switch namespace with the admin
        certificate against the controllers."""
        argv = [sys.executable, "-m", "vxlab.cli"]
        if not local:
            argv = ["nsenter", f"--net={netns.path(self.switch)}", *argv, "--controller",
                    controller or self.controllers, "--pki", str(self.pki)]
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "VXLAB_RUN": str(self.tmp / "no-labs")}  # never a lab running here
        out = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, env=env)
        if check:
            assert out.returncode == 0, f"vxlab {' '.join(args)}: exit {out.returncode}: {out.stderr[-2000:]}"
        return out

    def hosts(self, *, controller: str = "") -> dict[str, dict[str, Any]]:
        out = self.vxlab("host", "ls", "--json", check=False, controller=controller, timeout=30)
        if out.returncode != 0:
            return {}
        return {h["name"]: h for h in json.loads(out.stdout)}

    def fdb_towards(self, name: str, ip: str, *, network: str) -> list[str]:
        """The FDB entries of `name`'s VXLAN device of `network` whose destination is `ip`
        (read inside the guest)."""
        out = self.must(name, f"ip netns exec vx-n-{network} bridge fdb show", timeout=30)
        return [line for line in out.splitlines() if f"dst {ip} " in line + " "]

    def diagnose(self, name: str) -> str:
        """The end of the journal of our units and cloud-init's status, for failure messages."""
        try:
            rc, out, err = self.run(name, "cloud-init status --long; systemctl --no-pager --failed; "
                                    "journalctl --no-pager -n 60 -u 'vxlab-*'", timeout=60)
            return f"--- {name} ---\n{out[-4000:]}{err[-1000:]}"
        except Exception as e:  # noqa: BLE001 - a diagnosis must not hide the failure
            return f"--- {name}: no diagnosis ({e}) ---"

    def memory(self) -> dict[str, float | None]:
        return {n: rss_mib(g.vm.pids()[0]) if g.vm.pids() else None for n, g in self.guests.items()}


def wait(cond: Callable[[], Any], what: str, *, timeout: float, every: float = 1.0,
         diagnose: Callable[[], str] = lambda: "") -> Any:
    """Poll `cond` until it returns something true; TimeoutError naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}\n{diagnose()}")
        time.sleep(every)
