"""VM hosts without QEMU: the initramfs archive and module order, the topology's `vm:`
value, the QEMU command line, the kernel cache and bzImage version, the KVM verdict
cache, and both ends of the command channel over a plain socket."""

from __future__ import annotations

import json
import socket
import threading
import threading
from pathlib import Path

import pytest

from vxlab.lab import vm, vmaccel, vmchan, vminitrd, vmkernel
from vxlab.lab.yamlfile import TopologyError


def _unpack(data: bytes) -> dict[str, tuple[int, bytes]]:
    """name -> (mode, data) of a newc archive (what the kernel reads)."""
    out, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        fields = [int(data[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = fields[1], fields[6], fields[11]
        name = data[pos + 110: pos + 110 + namesize - 1].decode()
        pos = (pos + 110 + namesize + 3) & ~3
        if name == "TRAILER!!!":
            return out
        out[name] = (mode, data[pos:pos + size])
        pos = (pos + size + 3) & ~3


def test_cpio_newc_members_and_padding() -> None:
    entries = [vminitrd.Entry("d", 0o040755), vminitrd.Entry("d/f", 0o100644, b"abc"),
               vminitrd.Entry("dev/console", 0o020600, rdev=(5, 1))]
    data = vminitrd.cpio(entries)
    assert len(data) % 4 == 0
    members = _unpack(data)
    assert members["d/f"] == (0o100644, b"abc") and members["d"][0] == 0o040755
    assert members["dev/console"][0] == 0o020600


def _modules(tmp_path: Path) -> Path:
    d = tmp_path / "lib" / "modules" / "6.1.0-1-amd64"
    d.mkdir(parents=True)
    (d / "modules.dep").write_text(
        "kernel/fs/9p/9p.ko: kernel/net/9p/9pnet.ko kernel/fs/netfs/netfs.ko\n"
        "kernel/net/9p/9pnet.ko:\nkernel/fs/netfs/netfs.ko:\n"
        "kernel/net/9p/9pnet_virtio.ko: kernel/drivers/virtio/virtio_ring.ko kernel/net/9p/9pnet.ko\n"
        "kernel/drivers/virtio/virtio_ring.ko:\nkernel/fs/overlayfs/overlay.ko:\n")
    (d / "modules.builtin").write_text("kernel/drivers/virtio/virtio_pci.ko\nkernel/drivers/char/virtio_console.ko\n")
    return d


def test_module_order_puts_dependencies_first_and_skips_builtins(tmp_path: Path) -> None:
    order = vminitrd.module_order(_modules(tmp_path))
    assert order.index("kernel/net/9p/9pnet.ko") < order.index("kernel/fs/9p/9p.ko")
    assert order.index("kernel/drivers/virtio/virtio_ring.ko") < order.index("kernel/net/9p/9pnet_virtio.ko")
    assert len(order) == len(set(order)) == 6 and not any("virtio_pci" in m for m in order)
    with pytest.raises(LookupError, match="wireguard"):
        vminitrd.module_order(_modules(tmp_path / "x"), ("wireguard",))


@pytest.mark.parametrize(("value", "want"), [
    (None, None), (False, None), (True, vm.VmSpec()),
    ({"cpus": 2, "memory": "1G"}, vm.VmSpec(cpus=2, memory_mb=1024)),
    ({"memory": 512, "kernel": "/k/vmlinuz"}, vm.VmSpec(memory_mb=512, kernel="/k/vmlinuz")),
    ({"memory": "768MiB"}, vm.VmSpec(memory_mb=768)),
])
def test_vm_spec(value: object, want: vm.VmSpec | None) -> None:
    assert vm.parse_spec(value, "hosts[0].vm") == want


@pytest.mark.parametrize(("value", "where", "why"), [
    ("yes", "hosts[0].vm", "expected true, false or a mapping"),
    ({"cpus": 0}, "hosts[0].vm.cpus", "out of range"),
    ({"cpus": True}, "hosts[0].vm.cpus", "expected an integer"),
    ({"memory": "12"}, "hosts[0].vm.memory", "a size like 768M"),
    ({"memory": 100}, "hosts[0].vm.memory", "out of range 256"),
    ({"kernel": "vmlinuz"}, "hosts[0].vm.kernel", "absolute path"),
    ({"disk": 1}, "hosts[0].vm.disk", "unknown key"),
])
def test_vm_spec_errors_name_the_key(value: object, where: str, why: str) -> None:
    with pytest.raises(TopologyError) as e:
        vm.parse_spec(value, "hosts[0].vm")
    assert e.value.path == where and why in e.value.reason


def _kernel(tmp_path: Path) -> vmkernel.GuestKernel:
    return vmkernel.GuestKernel("6.1.0-1-amd64", tmp_path / "vmlinuz", tmp_path / "mods", tmp_path)


def test_qemu_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vmaccel, "qemu_binary", lambda: "/usr/bin/qemu-system-x86_64")
    nic = vm.Nic(switch_ns="vx-l.sw", tap="vxv-h3", mark="vxlab:lab:l", address="172.30.0.13/24")
    config = vm.VmConfig(name="h3", spec=vm.VmSpec(cpus=2, memory_mb=1024), nic=nic, shares=("/run/vxlab/l",))
    args = vm.qemu_args(tmp_path, config, _kernel(tmp_path), tmp_path / "initrd", vmaccel.tcg("test"),
                        chan=Path("/x/vmchan.py"), python="/usr/bin/python3")
    line = " ".join(args)
    assert args[args.index("-m") + 1] == "1024M" and args[args.index("-smp") + 1] == "2"
    assert "-accel tcg -cpu max" in line and "path=/,security_model=none,readonly=on" in line
    assert f"ifname=vxv-h3,script=no" in line and f"mac={vm.mac_for(nic)}" in line
    assert args[args.index("-pidfile") + 1] == str(tmp_path / "qemu.pid")  # what find_qemu looks for
    append = args[-1].split()
    assert {"vx.host=h3", "vx.chan=/x/vmchan.py", "vx.python=/usr/bin/python3", f"vx.mods={tmp_path / 'mods'}",
            "vx.share=vxs0:/run/vxlab/l"} <= set(append)
    assert "path=/run/vxlab/l,security_model=none,multidevs=remap" in line  # a share is writable


def test_a_checkout_under_tmp_is_shared_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guest mounts a fresh /tmp and /run: a checkout there (a clone in /tmp) and its
    venv's Python would be invisible, so they are shared read-only at the same path; a
    checkout elsewhere, or one a share covers, adds nothing."""
    monkeypatch.setattr(vmaccel, "qemu_binary", lambda: "/usr/bin/qemu-system-x86_64")
    config = vm.VmConfig(name="h3")
    args = vm.qemu_args(tmp_path, config, _kernel(tmp_path), tmp_path / "initrd", vmaccel.tcg("test"),
                        chan=Path("/tmp/clone/lab/vmchan.py"), python="/tmp/clone/.venv/bin/python")
    line = " ".join(args)
    assert "vx.share=vxs0:/tmp/clone" in args[-1].split() and "vxs1" not in line
    assert "path=/tmp/clone,security_model=none,multidevs=remap,readonly=on" in line
    assert vm.hidden_from_guest(Path("/work/x/lab/vmchan.py"), "/work/x/.venv/bin/python") == []
    assert vm.hidden_from_guest(Path("/run/x/lab/vmchan.py"), "/usr/bin/python3", shares=("/run",)) == []
    assert vm.hidden_from_guest(Path("/tmp/c/lab/vmchan.py"), "/run/py/bin/python3") == ["/tmp/c", "/run/py"]


def test_net_script_and_mac() -> None:
    nic = vm.Nic(switch_ns="s", tap="vxv-h3", mark="m", address="10.0.0.5/24", mtu=1400)
    assert "ip link set eth0 mtu 1400 up" in vm.net_script(nic) and "default" not in vm.net_script(nic)
    gw = vm.Nic(switch_ns="s", tap="vxv-h3", mark="m", address="10.0.0.5/24", gateway="10.0.0.1")
    assert vm.net_script(gw).endswith("ip route add default via 10.0.0.1")
    assert vm.mac_for(nic) == vm.mac_for(gw) != vm.mac_for(vm.Nic("s", "vxv-h4", "m", "10.0.0.6/24"))
    assert vm.mac_for(nic).startswith("52:54:00:") and len(vm.mac_for(nic)) == 17


def test_bzimage_version(tmp_path: Path) -> None:
    image = bytearray(0x800)
    image[0x202:0x206] = b"HdrS"
    image[0x20E:0x210] = (0x400 - 0x200).to_bytes(2, "little")
    image[0x400:0x420] = b"6.1.0-9-amd64 (someone@x) #1\0"
    (tmp_path / "vmlinuz").write_bytes(bytes(image))
    assert vmkernel.bzimage_version(tmp_path / "vmlinuz") == "6.1.0-9-amd64"
    assert vmkernel.from_path(tmp_path / "vmlinuz").modules is None
    (tmp_path / "elf").write_bytes(b"\x7fELF" + bytes(0x800))
    with pytest.raises(vmkernel.KernelError, match="not a bzImage"):
        vmkernel.bzimage_version(tmp_path / "elf")


def test_cache_lists_complete_kernels_newest_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VXLAB_VM_CACHE", str(tmp_path))
    for abi, complete in ((9, True), (57, True), (60, False)):
        d = tmp_path / f"6.1.0-{abi}-amd64"
        (d / "boot").mkdir(parents=True)
        (d / "boot" / f"vmlinuz-{d.name}").write_bytes(b"")
        if complete:
            (d / vmkernel.MARKER).write_text("{}")
    assert [k.version for k in vmkernel.cached()] == ["6.1.0-57-amd64", "6.1.0-9-amd64"]
    assert vmkernel.guest_kernel(fetch_missing=False).version == "6.1.0-57-amd64"
    monkeypatch.setenv("VXLAB_VM_CACHE", str(tmp_path / "empty"))
    with pytest.raises(vmkernel.KernelError, match="setup --vm"):
        vmkernel.guest_kernel(fetch_missing=False)


def test_accel_choice_and_verdict_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VXLAB_VM_CACHE", str(tmp_path))
    monkeypatch.setattr(vmaccel, "qemu_binary", lambda: str(tmp_path / "qemu"))
    (tmp_path / "qemu").write_bytes(b"")
    calls = []
    monkeypatch.setattr(vmaccel, "probe", lambda k, i: calls.append(k) or vmaccel.tcg("it hangs"))
    kernel = _kernel(tmp_path)
    assert vmaccel.choose(kernel, tmp_path, want="tcg").reason == "TCG was asked for"
    monkeypatch.setenv("VXLAB_VM_ACCEL", "kvm")
    assert vmaccel.choose(kernel, tmp_path).name == "kvm"
    monkeypatch.delenv("VXLAB_VM_ACCEL")
    assert vmaccel.choose(kernel, tmp_path) == vmaccel.choose(kernel, tmp_path) == vmaccel.tcg("it hangs")
    assert len(calls) == 1  # the second answer came from kvm-probe.json
    assert json.loads((tmp_path / "kvm-probe.json").read_text())
    with pytest.raises(ValueError, match="accel"):
        vmaccel.choose(kernel, tmp_path, want="xen")


def test_guest_side_answers() -> None:
    assert vmchan._answer({"op": "run", "argv": ["sh", "-c", "echo hi; echo no >&2; exit 4"]}) == \
        {"rc": 4, "stdout": "hi\n", "stderr": "no\n"}
    assert vmchan._answer({"op": "run", "argv": ["cat"], "stdin": "x"})["stdout"] == "x"
    slow = vmchan._answer({"op": "run", "argv": ["sleep", "5"], "timeout": 0.2})
    assert slow["rc"] == 124 and "killed after" in slow["stderr"]
    assert "error" in vmchan._answer({"op": "run", "argv": ["/nonexistent"]})
    assert "error" in vmchan._answer({"op": "reboot"})
    assert vmchan._answer({"op": "ping"})["kernel"]


def _fake_guest(tmp_path: Path, reply: object) -> Path:
    """A unix socket that answers one connection with `reply(request) -> bytes`."""
    path = tmp_path / "ctl.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            line = conn.makefile("rb").readline()
            conn.sendall(reply(json.loads(line)))  # type: ignore[operator]
    threading.Thread(target=serve, daemon=True).start()
    return path


def test_channel_skips_echoes_and_stale_answers(tmp_path: Path) -> None:
    def reply(req: dict[str, object]) -> bytes:
        return (json.dumps(req).encode() + b"\nnoise\n" + json.dumps({"re": "old", "rc": 9}).encode() + b"\n"
                + json.dumps({"re": req["id"], "rc": 0, "stdout": "ok", "stderr": ""}).encode() + b"\n")
    assert vmchan.Channel(_fake_guest(tmp_path, reply)).run("true") == (0, "ok", "")


def test_channel_errors(tmp_path: Path) -> None:
    with pytest.raises(vmchan.ChannelError, match="no VM channel .*see here"):
        vmchan.Channel(tmp_path / "none.sock", hint=" (see here)").ping(timeout=0.2)
    with pytest.raises(vmchan.ChannelError, match="closed its channel"):
        vmchan.Channel(_fake_guest(tmp_path, lambda req: b"")).ping(timeout=5)


def _elf(note_type: int) -> bytes:
    """A minimal 64-bit ELF with one PT_NOTE segment holding a Xen note of `note_type`."""
    import struct

    note = struct.pack("<III", 4, 4, note_type) + b"Xen\0" + b"\0\0\0\x01"
    phoff, phentsize = 64, 56
    header = bytearray(64)
    header[:5] = b"\x7fELF\x02"
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, phentsize, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 0, phoff + phentsize, 0, 0, len(note), len(note), 4)
    return bytes(header) + phdr + note


@pytest.mark.parametrize("compress", ["xz", "gzip"])
def test_boot_image_is_the_uncompressed_pvh_kernel(tmp_path: Path, compress: str) -> None:
    import gzip
    import lzma

    pack = {"xz": lambda b: lzma.compress(b, format=lzma.FORMAT_XZ), "gzip": gzip.compress}[compress]
    for note, want_elf in ((vmkernel.PVH_NOTE, True), (7, False)):
        home = tmp_path / f"{compress}{note}"
        home.mkdir()
        (home / "vmlinuz").write_bytes(b"MZ setup code " + pack(_elf(note)) + b"trailing")
        kernel = vmkernel.GuestKernel("6.1.0-1-amd64", home / "vmlinuz", None, home)
        image = vmkernel.boot_image(kernel)
        assert (image != kernel.vmlinuz) == want_elf
        if want_elf:
            assert image.read_bytes() == _elf(note) and vmkernel.boot_image(kernel) == image
    assert not vmkernel.has_pvh_note(b"\x7fELF\x01" + bytes(100))


def test_qemu_command_line_of_a_disk_vm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk VM (deploy/ for real): the image's kernel and initramfs, its root on vda (a
    qcow2 overlay), the seed read-only on vdb; no 9p root, no vx.* arguments, the same
    channel, console, NIC and pid file as any VM."""
    monkeypatch.setattr(vmaccel, "qemu_binary", lambda: "/usr/bin/qemu-system-x86_64")
    nic = vm.Nic(switch_ns="vxt1sw", tap="vxt1v1", mark="vxlab:test:vxt1", address="192.168.56.11/24")
    disk = vm.Disk(root="/t/vm1/root.qcow2", kernel="/c/vmlinuz-6.1.0-1-amd64", initrd="/c/initrd.img", seed="/t/seed.img")
    config = vm.VmConfig(name="vm1", nic=nic, disk=disk)
    args = vm.qemu_args(tmp_path, config, _kernel(tmp_path), Path(disk.initrd), vmaccel.tcg("test"),
                        chan=Path("/x/vmchan.py"), python="/usr/bin/python3", image=Path("/c/vmlinux"))
    line = " ".join(args)
    assert args[args.index("-kernel") + 1] == "/c/vmlinux" and args[args.index("-initrd") + 1] == "/c/initrd.img"
    assert "file=/t/vm1/root.qcow2,format=qcow2,if=virtio" in line
    assert "file=/t/seed.img,format=raw,if=virtio,readonly=on" in line
    assert "9p" not in line and "vx." not in args[-1]
    assert args[-1].split() == ["root=/dev/vda", "rw", "console=ttyS0", "net.ifnames=0", "panic=-1"]
    assert "virtconsole,bus=vxser.0,chardev=vxctl,name=vxlab.ctl" in line and f"mac={vm.mac_for(nic)}" in line
    raw = vm.qemu_args(tmp_path, vm.VmConfig(name="vm1", disk=vm.Disk("/i/root.img", "/k", "/i")), _kernel(tmp_path),
                       Path("/i"), vmaccel.tcg("test"), chan=Path("/x"), python="/p")
    assert "file=/i/root.img,format=raw,if=virtio" in " ".join(raw) and "readonly=on" not in " ".join(raw)


def test_a_disk_vm_config_round_trips_through_vm_json(tmp_path: Path) -> None:
    machine = vm.Vm(tmp_path)
    config = vm.VmConfig(name="vm2", disk=vm.Disk("/r.qcow2", "/k", "/i", "/s"),
                         nic=vm.Nic("sw", "vxt1v2", "m", "192.168.56.12/24"))
    machine._record(config)
    assert machine.config() == config


def test_a_labs_vm_host_config_and_boot_record(tmp_path: Path) -> None:
    from vxlab.lab import vmhost
    from vxlab.lab.topology import parse
    from vxlab.layout import LabLayout

    topo = parse("name: t\nunderlay: {subnet: 10.9.0.0/16, mtu: 9000}\nhosts: [h1, {name: h2, vm: {memory: 1G}}]\n")
    assert list(vmhost.vm_hosts(topo)) == ["h2"] and vmhost.vm_hosts(None) == {}
    layout = LabLayout.of_lab("t")
    cfg = vmhost.config(tmp_path, layout, topo, topo.hosts[1])
    assert cfg.nic == vm.Nic(switch_ns="vx-t.sw", tap=layout.port("h2"), mark="vxlab:lab:t", address="10.9.0.12/16",
                             mtu=9000)
    assert (cfg.name, cfg.spec.memory_mb, cfg.shares) == ("h2", 1024, (str(tmp_path),))
    assert cfg.console == str(tmp_path / "logs" / "vm-h2.console.log")
    assert vmhost.accel(tmp_path, "h2") == {}  # never booted
    run = vmhost.run_dir(tmp_path, "h2")
    run.mkdir(parents=True)
    (run / "vm.json").write_text(json.dumps({"config": {}, "kernel": "6.1.0-57-amd64",
                                             "accel": {"name": "tcg", "cpu": "max", "reason": "no KVM"}}))
    assert vmhost.accel(tmp_path, "h2") == {"accel": "tcg", "why": "no KVM", "kernel": "6.1.0-57-amd64"}


def test_stat_lines_and_guest_processes_without_a_vm(tmp_path: Path) -> None:
    from vxlab.lab import supervisor

    line = "4242 (python3 -m x) S 1 4242 4242 0 -1 4194560 " + " ".join(["0"] * 12) + " 987654 0 0"
    assert supervisor.parse_stat(line) == ("S", 987654)
    gone = supervisor.Proc(42, 1, vm=str(tmp_path / "no-vm"), boot="b")
    assert not gone.alive()  # no channel: not running
    gone.stop()  # and nothing to stop
    assert supervisor.Proc.in_guest(tmp_path / "no-vm", 42) == supervisor.Proc(42, 0, vm=str(tmp_path / "no-vm"))


def test_the_initramfs_cache_survives_writers_in_threads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three VMs booting in threads of one process build one initramfs at once (CI's deploy
    test on a clean machine): every writer has a temporary file of its own, all get the
    same cached file, and no temporary file is left."""
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF")
    monkeypatch.setattr(vminitrd, "BUSYBOX", str(busybox))
    together = threading.Barrier(3)

    def build(_modules: Path | None) -> bytes:
        together.wait(timeout=10)  # all three are past the "not cached yet" check
        return b"archive"

    monkeypatch.setattr(vminitrd, "build", build)
    cache, got, errors = tmp_path / "cache", [], []

    def boot() -> None:
        try:
            got.append(vminitrd.ensure(None, cache))
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=boot) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(got)) == 1 and got[0].read_bytes() == b"archive"
    assert [p.name for p in cache.iterdir()] == [got[0].name]
