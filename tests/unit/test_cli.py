"""The `vxlab` CLI against an in-memory fake client (no controller, no network).

The CLI builds its client through `vxlab.cli.main.client_factory`; every test here
monkeypatches that factory to return a `FakeClient` holding a few hosts, networks
and endpoints.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import replace
from typing import Any

import pytest
from typer.testing import CliRunner

from vxlab.cli import main
from vxlab.errors import InvalidArgument, NotFound, Unavailable, VxError
from vxlab.model import Endpoint, Host, Network

NET_ID = "a1" * 32
EP_IDS = {("web", "front"): "e1" * 32, ("db", "front"): "e2" * 32, ("web", "back"): "e3" * 32}


class FakeClient:
    """Implements the async methods of vxlab.client.Client that the CLI uses."""

    def __init__(self) -> None:
        self.address = ""
        self.tls: object = None
        self.closed = False
        self.fail: VxError | None = None
        self.created: list[Network] = []
        self.deleted: list[tuple[str, bool]] = []
        self.hosts = [
            Host("h1", underlay_ip="192.168.0.1", underlay_mtu=1500, alive=True, registered_at="2024-01-01T00:00:00Z"),
            Host("h2", underlay_ip="192.168.0.2", alive=False, registered_at="2024-01-01T00:00:01Z"),
        ]
        self.networks = [
            Network("front", id=NET_ID, subnet="10.0.1.0/24", gateway="10.0.1.1", vni=4096,
                    created="2024-01-01T00:00:02Z", labels={"team": "a"}),
            Network("back", id="b2" * 32, subnet="10.0.2.0/24", gateway="10.0.2.1", vni=4097, mtu=1400,
                    internal=True),
        ]
        self.endpoints = [
            Endpoint("web", "front", "h1", ip="10.0.1.2", mac="02:00:00:00:00:01", id=EP_IDS["web", "front"]),
            Endpoint("db", "front", "h2", ip="10.0.1.3", mac="02:00:00:00:00:02", id=EP_IDS["db", "front"]),
            Endpoint("web", "back", "h1", ip="10.0.2.2", mac="02:00:00:00:00:03", id=EP_IDS["web", "back"]),
        ]

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def close(self) -> None:
        self.closed = True

    async def list_hosts(self) -> list[Host]:
        self._check()
        return list(self.hosts)

    async def list_networks(self) -> list[Network]:
        self._check()
        return list(self.networks)

    async def create_network(self, net: Network) -> Network:
        self._check()
        self.created.append(net)
        return replace(net, id="c3" * 32, subnet=net.subnet or "10.0.9.0/24",
                       gateway=net.gateway or "10.0.9.1", vni=net.vni or 4100)

    async def delete_network(self, name: str, *, force: bool = False) -> int:
        self._check()
        if name not in {n.name for n in self.networks}:
            raise NotFound(f"network: no network named {name!r}")
        self.deleted.append((name, force))
        return 0

    async def list_endpoints(self, *, network: str = "", host: str = "", name: str = "") -> list[Endpoint]:
        self._check()
        return [e for e in self.endpoints
                if (not network or e.network == network) and (not host or e.host == host)
                and (not name or e.name == name)]

    async def list_policies(self, *, network: str = "") -> list[Any]:
        self._check()
        return []

    async def revision(self) -> int:
        return 7


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    client = FakeClient()

    def factory(address: str, *, tls: object = None) -> FakeClient:
        client.address = address
        client.tls = tls
        return client

    monkeypatch.setattr(main, "client_factory", factory)
    monkeypatch.delenv("VXLAB_CONTROLLER", raising=False)
    return client


runner = CliRunner()


def run(*args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return runner.invoke(main.app, list(args), env=env)


# -- help ---------------------------------------------------------------------------

@pytest.mark.parametrize("verb", [
    [], ["network"], ["network", "create"], ["network", "ls"], ["network", "inspect"], ["network", "rm"],
    ["host"], ["host", "ls"], ["container"], ["container", "ls"], ["container", "inspect"],
    ["controller"], ["controller", "serve"],
])
def test_help_of_every_verb(verb: list[str]) -> None:
    result = run(*verb, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout


# -- network ------------------------------------------------------------------------

def test_network_ls_table(fake: FakeClient) -> None:
    result = run("network", "ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "ID", "SUBNET", "GATEWAY", "VNI", "MTU", "INTERNAL", "ENDPOINTS"]
    back, front = lines[1].split(), lines[2].split()
    assert back == ["back", "b2" * 6, "10.0.2.0/24", "10.0.2.1", "4097", "1400", "yes", "1"]
    assert front == ["front", "a1" * 6, "10.0.1.0/24", "10.0.1.1", "4096", "auto", "no", "2"]
    assert fake.closed and fake.address == "127.0.0.1:7070"


def test_network_ls_json(fake: FakeClient) -> None:
    result = run("network", "ls", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [n["name"] for n in data] == ["back", "front"]
    assert data[1]["id"] == NET_ID and data[1]["labels"] == {"team": "a"}


def test_controller_option_and_env(fake: FakeClient) -> None:
    assert run("--controller", "10.1.1.1:1,10.1.1.2:1", "host", "ls").exit_code == 0
    assert fake.address == "10.1.1.1:1,10.1.1.2:1"
    assert run("host", "ls", env={"VXLAB_CONTROLLER": "10.9.9.9:7070"}).exit_code == 0
    assert fake.address == "10.9.9.9:7070"


def test_network_create_passes_arguments_and_prints_row(fake: FakeClient) -> None:
    result = run("network", "create", "blue", "--subnet", "10.5.0.0/16", "--vni", "5000", "--mtu", "1450",
                 "--internal", "--label", "a=1", "--label", "b=x=y")
    assert result.exit_code == 0, result.output
    assert fake.created == [Network("blue", subnet="10.5.0.0/16", vni=5000, mtu=1450, internal=True,
                                    labels={"a": "1", "b": "x=y"})]
    header, row = result.stdout.splitlines()[:2]
    assert header.split()[0] == "NAME"
    assert row.split() == ["blue", "c3" * 6, "10.5.0.0/16", "10.0.9.1", "5000", "1450", "yes", "0"]


def test_network_create_json(fake: FakeClient) -> None:
    result = run("network", "create", "blue", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["name"] == "blue" and data["id"] == "c3" * 32 and data["vni"] == 4100


def test_network_create_invalid_argument(fake: FakeClient) -> None:
    fake.fail = InvalidArgument("subnet", "not a valid IPv4 CIDR")
    result = run("network", "create", "blue", "--subnet", "10.0.0.300/24")
    assert result.exit_code == 1
    assert result.stderr == "error: subnet: not a valid IPv4 CIDR\n"
    assert result.stdout == ""


def test_bad_label_is_one_error_line(fake: FakeClient) -> None:
    result = run("network", "create", "blue", "--label", "nokey")
    assert result.exit_code == 1
    assert result.stderr == "error: label: expected key=value, got 'nokey'\n"
    assert fake.created == []


def test_usage_error_exits_2(fake: FakeClient) -> None:
    assert run("network", "create", "blue", "--vni", "many").exit_code == 2


def test_network_inspect_is_docker_shaped(fake: FakeClient) -> None:
    result = run("network", "inspect", "front", "back")
    assert result.exit_code == 0, result.output
    front, back = json.loads(result.stdout)
    assert front == {
        "Name": "front", "Id": NET_ID, "Created": "2024-01-01T00:00:02Z", "Scope": "swarm",
        "Driver": "overlay", "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None,
                 "Config": [{"Subnet": "10.0.1.0/24", "Gateway": "10.0.1.1"}]},
        "Internal": False, "Attachable": True, "Ingress": False,
        "Containers": {
            EP_IDS["db", "front"]: {"Name": "db", "EndpointID": EP_IDS["db", "front"],
                                    "MacAddress": "02:00:00:00:00:02", "IPv4Address": "10.0.1.3/24",
                                    "IPv6Address": ""},
            EP_IDS["web", "front"]: {"Name": "web", "EndpointID": EP_IDS["web", "front"],
                                     "MacAddress": "02:00:00:00:00:01", "IPv4Address": "10.0.1.2/24",
                                     "IPv6Address": ""},
        },
        "Options": {"com.docker.network.driver.overlay.vxlanid_list": "4096"},
        "Labels": {"team": "a"},
        "Peers": [{"Name": "h1", "IP": "192.168.0.1"}, {"Name": "h2", "IP": "192.168.0.2"}],
    }
    assert back["Internal"] is True
    assert back["Options"] == {"com.docker.network.driver.overlay.vxlanid_list": "4097",
                               "com.docker.network.driver.mtu": "1400"}
    assert back["Peers"] == [{"Name": "h1", "IP": "192.168.0.1"}]


def test_network_inspect_unknown(fake: FakeClient) -> None:
    result = run("network", "inspect", "front", "x")
    assert result.exit_code == 1
    assert result.stderr == "error: network: no network named 'x'\n"
    assert result.stdout == ""


def test_network_rm(fake: FakeClient) -> None:
    result = run("network", "rm", "front", "back", "--force")
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == ["front", "back"]
    assert fake.deleted == [("front", True), ("back", True)]


def test_network_rm_error(fake: FakeClient) -> None:
    result = run("network", "rm", "nope")
    assert result.exit_code == 1
    assert result.stderr == "error: network: no network named 'nope'\n"


# -- host ---------------------------------------------------------------------------

def test_host_ls_table(fake: FakeClient) -> None:
    result = run("host", "ls")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "UNDERLAY", "IP", "MTU", "ALIVE", "ENDPOINTS", "REGISTERED"]
    assert lines[1].split() == ["h1", "192.168.0.1", "1500", "yes", "2", "2024-01-01T00:00:00Z"]
    assert lines[2].split() == ["h2", "192.168.0.2", "-", "no", "1", "2024-01-01T00:00:01Z"]


def test_host_ls_json(fake: FakeClient) -> None:
    result = run("host", "ls", "--json")
    assert result.exit_code == 0, result.output
    assert [(h["name"], h["alive"]) for h in json.loads(result.stdout)] == [("h1", True), ("h2", False)]


def test_unavailable_controller(fake: FakeClient) -> None:
    fake.fail = Unavailable("controller: cannot reach 127.0.0.1:7070")
    result = run("host", "ls")
    assert (result.exit_code, result.stderr) == (1, "error: controller: cannot reach 127.0.0.1:7070\n")
    assert "Traceback" not in result.output


# -- container ----------------------------------------------------------------------

def test_container_ls_filters(fake: FakeClient) -> None:
    result = run("container", "ls", "--host", "h1")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "HOST", "NETWORK", "IP", "MAC", "ID"]
    assert [line.split()[:3] for line in lines[1:]] == [["web", "h1", "back"], ["web", "h1", "front"]]
    assert lines[1].split()[-1] == "e3" * 6
    data = json.loads(run("container", "ls", "--json", "--network", "front").stdout)
    assert sorted(e["name"] for e in data) == ["db", "web"]


def test_container_inspect_json(fake: FakeClient) -> None:
    result = run("container", "inspect", "web", "--json")
    assert result.exit_code == 0, result.output
    [web] = json.loads(result.stdout)
    assert web["Name"] == "web" and web["Host"] == "h1" and len(web["Id"]) == 64
    assert web["NetworkSettings"]["Networks"] == {
        "back": {"NetworkID": "b2" * 32, "EndpointID": EP_IDS["web", "back"], "Gateway": "",
                 "IPAddress": "10.0.2.2", "IPPrefixLen": 24, "MacAddress": "02:00:00:00:00:03",
                 "Aliases": [], "DNSNames": ["web", "web.back"]},
        "front": {"NetworkID": NET_ID, "EndpointID": EP_IDS["web", "front"], "Gateway": "10.0.1.1",
                  "IPAddress": "10.0.1.2", "IPPrefixLen": 24, "MacAddress": "02:00:00:00:00:01",
                  "Aliases": [], "DNSNames": ["web", "web.front"]},
    }
    assert web["NetworkSettings"]["SandboxKey"] == "/run/netns/vx-c-web"


def test_container_inspect_table(fake: FakeClient) -> None:
    result = run("container", "inspect", "web")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NETWORK", "HOST", "IP", "GATEWAY", "MAC", "ENDPOINT", "ID"]
    assert lines[2].split() == ["front", "h1", "10.0.1.2/24", "10.0.1.1", "02:00:00:00:00:01", "e1" * 6]


def test_container_inspect_unknown(fake: FakeClient) -> None:
    result = run("container", "inspect", "ghost")
    assert (result.exit_code, result.stderr) == (1, "error: container: no container named 'ghost'\n")


# -- controller serve ---------------------------------------------------------------

def test_controller_serve_rejects_both_etcds() -> None:
    result = run("controller", "serve", "--etcd", "http://a:2379", "--embedded-etcd", "/tmp/x")
    assert result.exit_code == 1
    assert result.stderr == "error: etcd: --etcd and --embedded-etcd are mutually exclusive\n"


def test_controller_serve_passes_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}
    server = types.ModuleType("vxlab.controller.server")
    server.serve_forever = lambda **kw: seen.update(kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vxlab.controller.server", server)
    result = run("controller", "serve", "--listen", "0.0.0.0:7171", "--etcd", "http://a:2379, http://b:2379",
                 "--metrics", "127.0.0.1:9100", "--lease-ttl", "3", "--subnet-pool", "172.16.0.0/12",
                 "--subnet-prefix", "26")
    assert result.exit_code == 0, result.output
    assert seen == {"listen": "0.0.0.0:7171", "listen_netns": {}, "etcd_endpoints": ["http://a:2379", "http://b:2379"],
                    "embedded_etcd_dir": None, "metrics": "127.0.0.1:9100", "lease_ttl": 3,
                    "subnet_pool": "172.16.0.0/12", "subnet_prefix": 26,
                    "tls": None, "etcd_tls": None, "embedded_etcd_tls": None}
    seen.clear()
    assert run("controller", "serve", "--embedded-etcd", "/tmp/etcd").exit_code == 0
    assert seen["etcd_endpoints"] is None and seen["embedded_etcd_dir"] == "/tmp/etcd"
    assert seen["listen"] == "127.0.0.1:7070" and seen["lease_ttl"] == 5 and seen["subnet_prefix"] == 24


# -- containers on real hosts (no lab): straight to the controller --------------------

class Endpoints:
    """The endpoint calls of vxlab.client.Client, in memory."""

    def __init__(self) -> None:
        self.endpoints: list[Any] = []
        self.address = ""

    async def create_endpoint(self, ep: Any) -> Any:
        made = replace(ep, ip=ep.ip or f"10.0.{len(self.endpoints)}.2", mac="02:00:00:00:00:01", id="ab" * 32)
        self.endpoints.append(made)
        return made

    async def list_endpoints(self, *, name: str = "", **_: Any) -> list[Any]:
        return [e for e in self.endpoints if e.name == name]

    async def delete_endpoint(self, network: str, name: str) -> None:
        self.endpoints = [e for e in self.endpoints if (e.network, e.name) != (network, name)]

    async def close(self) -> None:
        return None


def test_container_run_and_rm_without_a_lab_go_to_the_controller(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = Endpoints()
    monkeypatch.setattr(main, "client_factory", lambda address: fake)
    result = run("--controller", "10.0.0.1:7070,10.0.0.2:7070", "container", "run", "web",
                 "--host", "vm1", "--network", "blue", "--network", "red", "--ip", "10.9.0.5")
    assert result.exit_code == 0, result.output
    assert [(e.network, e.host, e.ip) for e in fake.endpoints] == [("blue", "vm1", "10.9.0.5"), ("red", "vm1", "10.0.1.2")]
    assert "web" in result.stdout and "10.9.0.5" in result.stdout
    result = run("container", "rm", "web")
    assert result.exit_code == 0 and fake.endpoints == [] and "removed web (2 endpoints)" in result.stderr
    result = run("container", "rm", "web")
    assert (result.exit_code, result.stderr) == (1, "error: container: no container named 'web'\n")


# -- which lab or controller a verb acts on: one rule, and --lab on every verb ----------

class FakeLab:
    """vxlab.lab.lab.Lab for the CLI's choice of lab: records the names it is made with,
    finds the labs the `labs` fixture saved (with no etcd); anything else the verb asks
    of it is a LabError (a one-line failure)."""

    made: list[str] = []

    def __init__(self, name: str) -> None:
        FakeLab.made.append(name)
        self.name = name

    @property
    def exists(self) -> bool:
        from vxlab.lab.state import LabState

        return LabState.load(self.name) is not None

    @property
    def socket(self) -> str:
        from vxlab.lab.state import LabState

        return LabState(self.name).socket

    def client_tls(self) -> None:
        return None

    etcd_endpoints: list[str] = []

    def network_modes(self) -> dict[str, tuple[str, str]]:
        return {}

    def __getattr__(self, attr: str) -> Any:
        from vxlab.lab.procs import LabError

        raise LabError(f"lab {self.name}: {attr} (fake)")


@pytest.fixture
def labs(fake: FakeClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    """Labs 'running' here (their state files under VXLAB_RUN), the fake Lab and client;
    returns a function making them, which gives the socket of each."""
    from vxlab.lab import experiment
    from vxlab.lab.state import LabState

    FakeLab.made = []
    monkeypatch.setattr("vxlab.lab.lab.Lab", FakeLab)

    def run_experiment(sc: Any, **_: Any) -> None:
        FakeLab.made.append(f"experiment:{sc.topology.name}")
        raise experiment.LabError("stop (fake)")

    monkeypatch.setattr(experiment, "run", run_experiment)
    (tmp_path / "lab.yaml").write_text("name: q\nhosts: 1\n")
    (tmp_path / "s.yaml").write_text("lab: lab.yaml\nprobes: [all]\n")
    monkeypatch.chdir(tmp_path)

    def make(*names: str) -> dict[str, str]:
        for name in names:
            LabState(name, insecure=True).save()
        return {name: LabState(name).socket for name in names}
    return make


# (verb and its arguments, what it acts on: "client" = a controller call, "lab" = vxlab.lab.Lab)
VERBS = [
    (["network", "create", "blue"], "client"), (["network", "ls"], "client"),
    (["network", "inspect", "front"], "client"), (["network", "rm", "front"], "client"),
    (["host", "ls"], "client"),
    (["container", "ls"], "client"), (["container", "inspect", "web"], "client"),
    (["container", "run", "c9", "--host", "h1", "--network", "front"], "lab"), (["container", "rm", "web"], "lab"),
    (["policy", "add", "p", "-n", "front", "--action", "deny"], "lab"), (["policy", "ls"], "client"),
    (["policy", "rm", "p", "-n", "front"], "lab"), (["policy", "test", "web", "db"], "client"),
    (["fault", "add", "loss", "--host", "h1", "--percent", "5"], "lab"), (["fault", "ls"], "lab"),
    (["fault", "heal", "--all"], "lab"),
    (["graph", "-o", "g.dot"], "client"), (["store", "ls"], "store"),
    (["status"], "lab"), (["check"], "lab"), (["trace", "web", "db"], "lab"), (["down"], "lab"),
    (["up", "lab.yaml"], "lab"), (["experiment", "run", "s.yaml", "-o", "out"], "experiment"),
]
EXEC = (["exec", "web", "--", "true"], "lab")  # options only before CMD: `exec --lab a web -- true`


def _acted_on(kind: str, result: Any, fake: FakeClient, sockets: dict[str, str]) -> str:
    """The lab the verb acted on."""
    if kind == "client":
        return next((name for name, sock in sockets.items() if fake.address == sock), f"address {fake.address!r}")
    if kind == "store":  # the lab's state has no etcd: the error names the lab it chose
        return result.stderr.split("'")[1] if "has no etcd" in result.stderr else result.stderr
    made = [m.removeprefix("experiment:") for m in FakeLab.made if (kind == "experiment") == m.startswith("experiment:")]
    return made[0] if made else f"no lab made ({result.output!r})"


@pytest.mark.parametrize("verb, kind", [*VERBS, EXEC], ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_lab_option_on_every_verb(labs: Any, fake: FakeClient, verb: list[str], kind: str) -> None:
    sockets = labs("aa", "bb")
    after = [*verb[:verb.index("--")], "--lab", "bb", *verb[verb.index("--"):]] if "--" in verb else [*verb, "--lab", "bb"]
    if verb[0] == "exec":
        after = ["exec", "--lab", "bb", *verb[1:]]
    for args in (after, ["--lab", "bb", *verb]):
        FakeLab.made, fake.address = [], ""
        result = run(*args)
        assert result.exit_code != 2, result.output  # not a usage error: --lab is an option of the verb
        assert _acted_on(kind, result, fake, sockets) == "bb", (args, result.output)


@pytest.mark.parametrize("verb, kind", [v for v in [*VERBS, EXEC] if v[0][0] not in ("up", "experiment")],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_several_labs_running_and_none_named(labs: Any, fake: FakeClient, verb: list[str], kind: str) -> None:
    """Every verb that would fall back to 127.0.0.1:7070 or pick a lab says why it cannot."""
    labs("aa", "bb")
    result = run(*verb)
    assert (result.exit_code, result.stderr) == (1, "error: lab: several labs are running (aa, bb); use --lab NAME\n")
    assert fake.address == "" and FakeLab.made == []


def test_agent_run_with_several_labs_running(labs: Any) -> None:
    labs("aa", "bb")
    result = run("agent", "run", "--host", "h1", "--dry-run")
    assert (result.exit_code, result.stderr) == (1, "error: lab: several labs are running (aa, bb); use --lab NAME\n")


def test_the_only_lab_is_chosen_and_controller_overrides(labs: Any, fake: FakeClient) -> None:
    sockets = labs("aa")
    assert run("network", "ls").exit_code == 0 and fake.address == sockets["aa"]
    run("container", "run", "c9", "--host", "h1", "--network", "front")
    assert set(FakeLab.made) == {"aa"}
    labs("bb")
    assert run("--controller", "10.0.0.1:7070", "network", "ls").exit_code == 0  # no lab involved
    assert fake.address == "10.0.0.1:7070"
    FakeLab.made = []
    result = run("--controller", "10.0.0.1:7070", "container", "run", "c9", "--host", "h1", "--network", "front")
    assert FakeLab.made == [] and result.exit_code == 1  # the controller's (the fake has no create_endpoint)


def test_a_lab_that_is_not_here(labs: Any, fake: FakeClient) -> None:
    labs("aa")
    for args in (["network", "ls", "--lab", "nope"], ["--lab", "nope", "host", "ls"]):
        result = run(*args)
        assert (result.exit_code, result.stderr) == (1, "error: lab: no lab named 'nope' on this machine\n")
    assert fake.address == ""
    result = run("network", "ls", "--lab", "../x")
    assert result.exit_code == 1 and result.stderr.startswith("error: lab: '../x' is not a valid name")


def test_no_lab_and_no_controller_is_the_default_controller(labs: Any, fake: FakeClient) -> None:
    assert run("host", "ls").exit_code == 0 and fake.address == "127.0.0.1:7070"
    assert run("status").stderr == "error: lab: no lab is running\n"


@pytest.mark.parametrize("verb", [v for v, _ in [*VERBS, EXEC]], ids=" ".join)
def test_help_shows_the_lab_option(verb: list[str]) -> None:
    result = run(*[a for a in verb if a != "--"][:2 if verb[0] in ("network", "host", "container", "policy", "fault",
                                                                    "experiment", "store") else 1], "--help")
    assert result.exit_code == 0 and "--lab" in result.stdout, result.stdout
