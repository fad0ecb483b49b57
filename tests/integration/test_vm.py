"""VM hosts (issue 16, the foundation): one QEMU guest booted with its own kernel on a
switch namespace, reached through its command channel, killed, booted again, stopped,
cleaned up — and what only a VM host can do here: netem in its kernel, a neighbour
table and conntrack of its own.

One VM for the module (a boot is ~5 s under TCG, at nice 19), removed in the fixture's
finalizer also when a test fails; everything is named `vxt<6 hex>…`. Without QEMU,
busybox-static or a guest kernel every test is skipped with the reason
(VXLAB_VM_REQUIRED=1 fails instead, as CI sets it).
"""

from __future__ import annotations

import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from vxlab.lab import hostns, vm, vmaccel, vminitrd, vmkernel

pytestmark = [pytest.mark.integration, pytest.mark.vm, pytest.mark.timeout(600)]
SUBNET = "172.30.99"


def _skip(reason: str) -> None:
    if os.environ.get("VXLAB_VM_REQUIRED") == "1":
        pytest.fail(f"{reason} (VXLAB_VM_REQUIRED=1)")
    pytest.skip(reason)


def guest_kernel() -> vmkernel.GuestKernel:
    """The guest kernel (fetched into the cache if need be), or skip saying why not."""
    missing = vm.available()
    if missing:
        _skip(missing)
    try:
        return vmkernel.guest_kernel()
    except vmkernel.KernelError as e:
        _skip(f"no guest kernel: {e}")
    raise AssertionError("unreachable")


@dataclass
class Rig:
    vm: vm.Vm
    config: vm.VmConfig
    switch: str
    kernel: vmkernel.GuestKernel
    share: Path
    boot: vm.Boot


def _pids(rig: Rig) -> list[int]:
    return vm.find_qemu(rig.vm.dir)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    kernel = guest_kernel()
    tag = "vxt" + secrets.token_hex(3)
    switch, mark = f"{tag}sw", f"vxlab:test:{tag}"
    tmp = tmp_path_factory.mktemp("vm")
    share = tmp / "share"
    share.mkdir()
    hostns.create_switch(switch, mark=mark, mtu=1500, outside=f"{SUBNET}.1/24")
    machine = vm.Vm(tmp / "run")
    config = vm.VmConfig(name="vmt", nic=vm.Nic(switch_ns=switch, tap=f"{tag}v", mark=mark,
                                                address=f"{SUBNET}.50/24", gateway=f"{SUBNET}.1", mtu=1400),
                         shares=(str(share),))
    try:
        boot = machine.start(config)
        yield Rig(machine, config, switch, kernel, share, boot)
    finally:
        machine.cleanup()
        hostns.delete_ns(switch)


def _ping_switch_to_guest(rig: Rig, count: int = 3) -> list[float]:
    out = subprocess.run(["ip", "netns", "exec", rig.switch, "ping", "-n", "-c", str(count), "-i", "0.2", "-W", "5",
                          f"{SUBNET}.50"], capture_output=True, text=True).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def test_the_guest_runs_its_own_kernel(rig: Rig) -> None:
    rc, out, _ = rig.vm.run("uname -r")
    assert rc == 0 and out.strip() == rig.kernel.version == rig.boot.kernel
    assert out.strip() != platform.release()  # not this machine's kernel
    assert rig.vm.channel.ping()["kernel"] == rig.kernel.version
    assert rig.boot.accel.name in ("kvm", "tcg") and rig.boot.accel.reason
    rc, out, err = rig.vm.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (rc, out, err) == (3, "out\n", "err\n")
    assert rig.vm.run("cat", stdin="fed through stdin").stdout == "fed through stdin"
    assert rig.vm.run(["/nonexistent"]).rc == 127


def test_the_root_is_this_machines_read_only_and_writes_stay_in_the_guest(rig: Rig) -> None:
    probe = Path("/etc") / f".vxt-vm-write-{secrets.token_hex(3)}"  # a path of this machine's root
    rc, out, _ = rig.vm.run(f"echo guest > {probe} && cat {probe} && hostname")
    assert rc == 0 and out.split() == ["guest", "vmt"]
    assert not probe.exists()  # the write went to the guest's tmpfs overlay
    rc, out, _ = rig.vm.run(f"test -f {vminitrd.__file__} && echo visible")  # host files are there
    assert out.strip() == "visible"
    rc, _, _ = rig.vm.run(f"echo shared > {rig.share}/from-guest")  # a share is read-write
    assert rc == 0 and (rig.share / "from-guest").read_text() == "shared\n"
    assert rig.vm.run("ls /run/netns 2>/dev/null | wc -l").stdout.strip() == "0"  # /run is the guest's


def test_underlay_nic_on_the_switch(rig: Rig) -> None:
    rc, out, _ = rig.vm.run("ip -4 -o addr show dev eth0; ip route show default; cat /sys/class/net/eth0/mtu")
    assert rc == 0
    assert f"{SUBNET}.50/24" in out and f"default via {SUBNET}.1 dev eth0" in out and out.split()[-1] == "1400"
    tap = hostns.ip("-o", "link", "show", "dev", rig.config.nic.tap, ns=rig.switch).stdout  # type: ignore[union-attr]
    assert "master vxsw" in tap and f"alias {rig.config.nic.mark}" in tap  # type: ignore[union-attr]
    rc, out, _ = rig.vm.run(f"ping -n -c 2 -W 5 {SUBNET}.1")
    assert rc == 0, out
    assert len(_ping_switch_to_guest(rig)) == 3


def test_netem_delay_in_the_guest_kernel(rig: Rig) -> None:
    """This machine's kernel has no sch_netem; the guest's has, so a ping through the
    guest's eth0 takes at least the delay."""
    rc, _, err = rig.vm.run("modprobe sch_netem && tc qdisc add dev eth0 root netem delay 50ms")
    assert rc == 0, err
    try:
        rtts = _ping_switch_to_guest(rig)
        assert len(rtts) == 3 and min(rtts) >= 50.0, rtts
    finally:
        rig.vm.run("tc qdisc del dev eth0 root")
    assert len(_ping_switch_to_guest(rig)) == 3


def test_a_neighbour_table_and_conntrack_of_its_own(rig: Rig) -> None:
    """A namespace host shares this machine's neighbour table and conntrack (its limits are
    the machine's, and not writable in a namespace); the guest has its own."""
    lladdr = "02:00:5e:%02x:%02x:%02x" % tuple(secrets.token_bytes(3))
    rc, out, err = rig.vm.run(
        f"ip neigh replace {SUBNET}.77 lladdr {lladdr} dev eth0 nud permanent && ip neigh show {SUBNET}.77 && "
        "echo 4242 > /proc/sys/net/ipv4/neigh/default/gc_thresh3 && cat /proc/sys/net/ipv4/neigh/default/gc_thresh3 && "
        "modprobe nf_conntrack && echo 12345 > /proc/sys/net/netfilter/nf_conntrack_max && "
        "cat /proc/sys/net/netfilter/nf_conntrack_max")
    assert rc == 0, err
    assert lladdr in out and out.split()[-2:] == ["4242", "12345"]
    for ns in (None, rig.switch):  # not in this machine's tables, neither in its own namespace nor the switch's
        assert lladdr not in hostns.ip("neigh", "show", ns=ns).stdout
    assert Path("/proc/sys/net/ipv4/neigh/default/gc_thresh3").read_text().strip() != "4242"
    host_max = Path("/proc/sys/net/netfilter/nf_conntrack_max")
    assert not host_max.exists() or host_max.read_text().strip() != "12345"
    # A flow the guest's conntrack tracks (an nftables rule hooks conntrack in).
    rc, out, err = rig.vm.run(
        "nft add table ip vxt && nft add chain ip vxt out '{ type filter hook output priority 0; }' && "
        f"nft add rule ip vxt out ct state new counter && ping -n -c 1 -W 5 {SUBNET}.1 >/dev/null && "
        "cat /proc/net/nf_conntrack; nft delete table ip vxt")
    assert rc == 0, err
    assert re.search(rf"icmp .*src={SUBNET}\.50 dst={SUBNET}\.1 ", out), out


def test_the_checkouts_venv_runs_in_the_guest(rig: Rig) -> None:
    rc, out, err = rig.vm.run([sys.executable, "-c", "import vxlab.agent.runner, pyroute2; print('ok')"],
                              timeout=300)
    assert (rc, out.strip()) == (0, "ok"), err


def test_spawn_leaves_a_process_running(rig: Rig) -> None:
    log = rig.share / "spawned.log"
    pid = rig.vm.spawn(["/bin/sh", "-c", "echo started; exec sleep 300"], log=str(log))
    try:
        assert rig.vm.run(f"cat /proc/{pid}/comm").stdout.strip() == "sleep"
        assert log.read_text() == "started\n"
    finally:
        rig.vm.run(f"kill {pid}")


def test_kill_then_start_again(rig: Rig) -> None:
    """host-crash: SIGKILL QEMU; the tap stays (no carrier); the next start boots it again
    with its address."""
    rig.vm.kill()
    assert not _pids(rig)
    tap = hostns.ip("-o", "link", "show", "dev", rig.config.nic.tap, ns=rig.switch).stdout  # type: ignore[union-attr]
    assert "NO-CARRIER" in tap and "master vxsw" in tap
    with pytest.raises(vm.ChannelError):
        rig.vm.channel.ping(timeout=1)
    again = rig.vm.start(rig.config)
    assert again.pid != rig.boot.pid and again.seconds > 0
    assert rig.vm.start(rig.config).seconds == 0.0  # running: kept as it is
    assert len(_ping_switch_to_guest(rig)) == 3
    assert rig.vm.console.read_text().count("--- vxlab: booting vmt") == 2


def test_cleanup_after_the_starter_was_killed(tmp_path: Path, rig: Rig) -> None:
    """The process that started a VM dies (kill -9) while the VM boots: cleanup still
    finds its QEMU (its command line names the run directory) and its tap (vm.json)."""
    other = vm.Vm(tmp_path / "orphan")
    nic = replace(rig.config.nic, tap=rig.config.nic.tap + "o", address=f"{SUBNET}.51/24")  # type: ignore[type-var]
    code = ("import sys; from vxlab.lab import vm; from pathlib import Path; import json\n"
            f"vm.Vm(Path({str(other.dir)!r})).start(vm.VmConfig(name='orphan', nic=vm.Nic(**{nic.__dict__!r})))")
    starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (other.dir / "qemu.pid").exists():
            assert starter.poll() is None, starter.stderr.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "QEMU did not start"
            time.sleep(0.05)
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        assert other.alive()
        assert hostns.ip("link", "show", "dev", nic.tap, ns=rig.switch, check=False).returncode == 0
    finally:
        swept = vm.sweep(tmp_path)  # what `lab down` calls on the lab's VM directory
        if starter.poll() is None:
            starter.kill()
            starter.wait()
    assert swept == [str(other.dir)]
    assert not vm.find_qemu(other.dir) and not other.dir.exists()
    assert hostns.ip("link", "show", "dev", nic.tap, ns=rig.switch, check=False).returncode != 0


def test_a_vm_that_cannot_boot_is_a_clear_error(tmp_path: Path, rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """QEMU refusing its configuration, and a kernel whose modules are nowhere (no 9p: the
    init cannot mount the root), are one error each naming where to look; neither
    leaves a process behind."""
    monkeypatch.setenv("VXLAB_VM_CACHE", str(tmp_path / "cache"))  # that kernel's initramfs goes there
    broken = vm.Vm(tmp_path / "broken")
    alone = tmp_path / "boot" / rig.kernel.vmlinuz.name  # no ../lib/modules next to it
    alone.parent.mkdir()
    shutil.copy2(rig.kernel.vmlinuz, alone)
    try:
        with pytest.raises(vm.VmError, match=r"QEMU exited.*nonexistent"):
            broken.start(vm.VmConfig(name="broken", spec=vm.VmSpec(kernel=str(rig.kernel.vmlinuz)),
                                     shares=(str(tmp_path / "nonexistent"),), accel="tcg"), timeout=120)
        assert not broken.alive()
        with pytest.raises(vm.VmError, match=r"QEMU exited.*console .*console\.log.*vxlab-init: error: mount the 9p root"):
            broken.start(vm.VmConfig(name="broken", spec=vm.VmSpec(kernel=str(alone)), accel="tcg"), timeout=120)
        assert not broken.alive()
    finally:
        broken.cleanup()
    assert not broken.dir.exists()


def test_the_kvm_probe(rig: Rig) -> None:
    """The probe's verdict is cached with its reason; its detection works (a guest that
    boots is recognised, shown under TCG, which every machine has)."""
    initrd = vminitrd.ensure(rig.kernel.modules, rig.kernel.home)
    verdict = vmaccel.cached_probe(rig.kernel, initrd)
    assert verdict.name in ("kvm", "tcg") and verdict.reason
    assert vmaccel.boots(rig.kernel, initrd, accel="tcg", cpu="max", timeout=120) is None


def test_a_kernel_given_by_its_path(rig: Rig) -> None:
    """`kernel: /path/to/vmlinuz`: its version from the bzImage header, its modules where
    `dpkg -x` put them."""
    given = vmkernel.guest_kernel(str(rig.kernel.vmlinuz))
    assert (given.version, given.modules, given.home) == (rig.kernel.version, rig.kernel.modules, rig.kernel.home)


def test_stop_and_cleanup_leave_nothing(rig: Rig) -> None:
    rig.vm.stop()
    assert not _pids(rig)
    rig.vm.cleanup()
    assert not rig.vm.dir.exists()
    assert hostns.ip("link", "show", "dev", rig.config.nic.tap, ns=rig.switch,  # type: ignore[union-attr]
                     check=False).returncode != 0
