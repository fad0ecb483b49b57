"""deploy/: the systemd units are valid (`systemd-analyze verify`, and a strict parse of our
own), their command lines parse with the real CLI, and the files they name exist; the
provisioning scripts, cloud-init file (and the user-data made from it), the certificates
the units load and the Vagrantfile agree with them.

What runs them for real: tests/integration/test_deploy.py on one machine (etcd members
from the env files, a controller and an agent from the example configs) and
tests/integration/test_deploy_vms.py on three VMs (`./vx test -m deploy`).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = {p.name: p for p in sorted((DEPLOY / "systemd").glob("*.service"))}
VXLAB = "/opt/vxlab/bin/vxlab"  # where deploy/vagrant/provision.sh installs the CLI
# Options that give a service a mount namespace of its own: the agent's /run/netns
# mounts would be invisible to the host.
MOUNT_NS_OPTIONS = {"ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "ReadWritePaths",
                    "ReadOnlyPaths", "InaccessiblePaths", "ProtectKernelTunables", "ProtectKernelModules",
                    "ProtectControlGroups", "ProtectKernelLogs", "ProtectClock", "ProtectHostname",
                    "TemporaryFileSystem", "BindPaths", "PrivateMounts", "ProtectProc", "DynamicUser"}


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> values (a key may repeat); anything not `Key=value` fails."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if m := re.fullmatch(r"\[(\w+)\]", line):
            current = sections.setdefault(m.group(1), {})
            continue
        m = re.fullmatch(r"([A-Z][A-Za-z]+)=(.*)", line)
        assert m and current is not None, f"{path.name}:{number}: not a Key=value line in a section: {raw!r}"
        current.setdefault(m.group(1), []).append(m.group(2))
    return sections


def test_the_units_we_ship() -> None:
    assert set(UNITS) == {"vxlab-etcd@.service", "vxlab-controller.service", "vxlab-agent.service"}


@pytest.mark.parametrize("name", sorted(UNITS))
def test_unit_sections_and_keys(name: str) -> None:
    unit = parse_unit(UNITS[name])
    assert set(unit) == {"Unit", "Service", "Install"}
    assert unit["Unit"]["Description"] and unit["Install"]["WantedBy"] == ["multi-user.target"]
    assert "network-online.target" in unit["Unit"]["After"][0] and unit["Service"]["Restart"]
    assert len(unit["Service"]["ExecStart"]) == 1
    assert unit["Service"]["NoNewPrivileges"] == ["yes"]


@pytest.mark.parametrize(("name", "verb"), [("vxlab-controller.service", ["controller", "serve"]),
                                            ("vxlab-agent.service", ["agent", "run"])])
def test_execstart_parses_with_the_real_cli(name: str, verb: list[str]) -> None:
    argv = shlex.split(parse_unit(UNITS[name])["Service"]["ExecStart"][0])
    assert argv[0] == VXLAB and argv[1:3] == verb
    config = argv[argv.index("--config") + 1]
    assert (DEPLOY / "config" / Path(config).name).is_file(), f"{config}: no example in deploy/config/"
    out = subprocess.run([sys.executable, "-m", "vxlab.cli", *argv[1:], "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Usage:" in out.stdout, out.stderr  # unknown options would fail here


def test_agent_keeps_the_host_mount_namespace_and_only_its_capabilities() -> None:
    service = parse_unit(UNITS["vxlab-agent.service"])["Service"]
    assert not MOUNT_NS_OPTIONS & set(service), MOUNT_NS_OPTIONS & set(service)
    # NET_RAW: the ops channel's ICMP probes; NET_BIND_SERVICE: the containers' DNS on port 53
    caps = {"CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
    assert set(service["CapabilityBoundingSet"][0].split()) == set(service["AmbientCapabilities"][0].split()) == caps
    assert {"AF_NETLINK", "AF_PACKET"} <= set(service["RestrictAddressFamilies"][0].split())  # AF_PACKET: tcpdump


@pytest.mark.parametrize("name", ["vxlab-agent.service", "vxlab-controller.service"])
def test_restarts_are_never_rate_limited(name: str) -> None:
    """An agent or controller that fails at once keeps being restarted (systemd's default
    gives up after 5 starts in 10 s)."""
    unit = parse_unit(UNITS[name])
    assert unit["Unit"]["StartLimitIntervalSec"] == ["0"] and unit["Service"]["Restart"] == ["always"]


def test_controller_and_etcd_run_without_privileges() -> None:
    for name in ("vxlab-controller.service", "vxlab-etcd@.service"):
        service = parse_unit(UNITS[name])["Service"]
        assert service["DynamicUser"] == ["yes"] and service["CapabilityBoundingSet"] == [""]
        assert service["ProtectSystem"] == ["strict"]


def test_etcd_members_one_env_file_each() -> None:
    service = parse_unit(UNITS["vxlab-etcd@.service"])["Service"]
    assert service["EnvironmentFile"] == ["/etc/vxlab/etcd/%i.env"] and service["ExecStart"] == ["/usr/bin/etcd"]
    envs = sorted(p.name for p in (DEPLOY / "etcd").glob("*.env"))
    assert envs == ["vm1.env", "vm2.env", "vm3.env"]
    for env in envs:
        values = dict(line.split("=", 1) for line in (DEPLOY / "etcd" / env).read_text().splitlines()
                      if line and not line.startswith("#"))
        assert values["ETCD_NAME"] == env.removesuffix(".env")
        assert values["ETCD_DATA_DIR"].startswith("/var/lib/vxlab-etcd/")  # the unit's StateDirectory
        assert values["ETCD_INITIAL_CLUSTER"].count("=https://") == 3
        assert all(u.startswith("https://") for k, v in values.items() if k.endswith("_URLS") for u in v.split(","))
        assert all(k.startswith("ETCD_") for k in values)
    env = dict(item.split("=", 1) for line in service["Environment"] for item in line.split())
    assert env["ETCD_CLIENT_CERT_AUTH"] == env["ETCD_PEER_CLIENT_CERT_AUTH"] == "true"  # mutual TLS both ways


def credentials(name: str) -> dict[str, str]:
    """A unit's LoadCredential= lines: credential name -> path."""
    return dict(v.split(":", 1) for v in parse_unit(UNITS[name])["Service"].get("LoadCredential", []))


def pki_files(name: str, role: str = "") -> list[str]:
    """deploy/vagrant/provision.sh's own list of the certificates a VM gets."""
    script = (DEPLOY / "vagrant" / "provision.sh").read_text()
    body = re.search(r"^pki_files\(\) \{.*?^\}", script, re.MULTILINE | re.DOTALL)
    assert body
    out = subprocess.run(["bash", "-c", f'{body.group(0)}\npki_files "$@"', "_", name, *([role] if role else [])],
                         capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize(("name", "role"), [("vxlab-etcd@.service", ""), ("vxlab-controller.service", "controller")])
def test_units_load_the_certificates_a_vm_is_given(name: str, role: str) -> None:
    """Every %d/<credential> a unit uses is loaded, from a file every VM of that role gets
    (provision.sh's pki_files; user-data.py writes the same), and no CA key anywhere."""
    loaded = credentials(name)
    service = parse_unit(UNITS[name])["Service"]
    used = set(re.findall(r"%d/([\w.-]+)", " ".join(service.get("Environment", []) + service["ExecStart"])))
    assert used and used == set(loaded), (used, loaded)
    given = {f"/etc/vxlab/pki/{f}" for f in pki_files("vm2", role)}
    assert set(loaded.values()) <= given, set(loaded.values()) - given
    for vm, r in (("vm1", "controller"), ("vm3", "")):
        assert not [f for f in pki_files(vm, r) if f.endswith("ca.key")]
    assert "hosts/vm3.key" in pki_files("vm3") and "controller.key" not in pki_files("vm3")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (./vx installs it)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd's own parser (works without systemd as PID 1). The CLI path is pointed at
    this venv's vxlab, since verify checks that ExecStart's program exists."""
    vxlab = Path(sys.executable).parent / "vxlab"
    assert vxlab.exists()
    for name, path in UNITS.items():
        (tmp_path / name).write_text(path.read_text().replace(VXLAB, str(vxlab)))
    names = ["vxlab-etcd@vm1.service" if n.endswith("@.service") else n for n in sorted(UNITS)]
    out = subprocess.run(["systemd-analyze", "verify", *names], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    ours = [line for line in (out.stdout + out.stderr).splitlines() if "vxlab" in line]
    assert out.returncode == 0 and not ours, out.stdout + out.stderr


def test_provisioning_installs_what_the_units_name() -> None:
    script = (DEPLOY / "vagrant" / "provision.sh").read_text()
    install = (DEPLOY / "vagrant" / "install.sh").read_text()
    for path in ("provision.sh", "install.sh"):
        assert subprocess.run(["bash", "-n", str(DEPLOY / "vagrant" / path)]).returncode == 0
        assert os.access(DEPLOY / "vagrant" / path, os.X_OK)
    assert "python3 -m venv" in install and "/etc/vxlab/agent.toml" in script
    assert '--no-index --find-links "$wheels"' in install  # the offline install
    assert "/usr/lib/python3/dist-packages/nftables" in install  # libnftables for the agent
    from vxlab.lab import vmimage
    assert "etcd-server" in vmimage.install_packages(ROOT)  # the image has what install.sh would apt-get
    assert '"vxlab-etcd@$name.service"' in script and "vxlab-controller.service" in script
    assert "systemctl restart --no-block" in script, "a first member blocks until a second one runs"
    vagrantfile = (DEPLOY / "Vagrantfile").read_text()
    for i in (1, 2, 3):
        ip = f"192.168.56.1{i}"
        assert f'"vm{i}" => "{ip}"' in vagrantfile
        assert f"{ip}:2380" in (DEPLOY / "etcd" / "vm1.env").read_text()
    cloud = yaml.safe_load((DEPLOY / "cloud-init" / "vxlab-vm.yaml").read_text())
    assert (DEPLOY / "cloud-init" / "vxlab-vm.yaml").read_text().startswith("#cloud-config\n")
    assert "deploy/vagrant/provision.sh" in cloud["runcmd"][0] and "packages" not in cloud  # nothing fetched offline


def test_user_data_carries_the_vms_name_role_and_certificates(tmp_path: Path) -> None:
    from vxlab import pki

    pki.init(tmp_path / "pki", hosts=["vm1", "vm2", "vm3"], san=["192.168.56.11"])
    for name, role in (("vm1", "controller"), ("vm3", "")):
        out = subprocess.run([sys.executable, str(DEPLOY / "cloud-init" / "user-data.py"), "--pki", str(tmp_path / "pki"),
                              name, *(["--controller"] if role else [])], capture_output=True, text=True, check=True).stdout
        assert out.startswith("#cloud-config\n")
        files = {f["path"]: f for f in yaml.safe_load(out)["write_files"]}
        env = dict(line.split("=", 1) for line in files.pop("/etc/vxlab/provision.env")["content"].splitlines())
        assert env["VXLAB_NAME"] == name and env["VXLAB_ROLE"] == role and env["VXLAB_SRC"] == "/opt/vxlab/src"
        assert sorted(files) == sorted(f"/etc/vxlab/pki/{f}" for f in pki_files(name, role))
        for path, f in files.items():
            assert f["content"] == (tmp_path / "pki" / path.removeprefix("/etc/vxlab/pki/")).read_text()
            assert f["permissions"] == ("0600" if path.endswith(".key") else "0644")
    bad = subprocess.run([sys.executable, str(DEPLOY / "cloud-init" / "user-data.py"), "--pki", str(tmp_path), "vm4"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "name: must be vm1, vm2 or vm3" in bad.stderr


def test_example_configs_load_through_the_cli_path() -> None:
    """`--config` of each verb accepts its example (the verbs' own resolve step)."""
    from vxlab import config

    ctl = config.resolve("controller", path=DEPLOY / "config" / "controller.toml", flags={})
    # each controller uses the etcd member of its own VM (deploy/README.md says why)
    assert ctl["listen"] == "0.0.0.0:7070" and ctl["etcd"] == ["https://127.0.0.1:2379"]
    agent = config.resolve("agent", path=DEPLOY / "config" / "agent.toml", flags={})
    assert agent["controller"] == ["192.168.56.11:7070", "192.168.56.12:7070"] and agent["host"] == "vm1"
    assert agent["pki"] == "/etc/vxlab/pki" and "hosts/vm1.crt" in pki_files("vm1")  # the host's certificate
    runtime = parse_unit(UNITS["vxlab-agent.service"])["Service"]["RuntimeDirectory"][0]
    assert agent["status_file"].startswith(f"/run/{runtime}/"), "the agent writes its status where it may"
