"""Config files (`--config FILE`, vxlab.config): loading, checks naming the key, and the
precedence flags > file > defaults through the real CLI verbs (servers replaced by fakes)."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vxlab import config
from vxlab.cli import main
from vxlab.errors import InvalidArgument

runner = CliRunner()


def write(tmp_path: Path, text: str, name: str = "controller.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path: Path, section: str) -> str:
    with pytest.raises(InvalidArgument) as e:
        config.load(path, section)
    return e.value.message


def test_defaults_file_and_flags_in_that_order(tmp_path: Path) -> None:
    path = write(tmp_path, '[controller]\nlisten = "0.0.0.0:7070"\netcd = ["http://a:2379", "http://b:2379"]\n'
                           'lease-ttl = 7\n')
    opts = config.resolve("controller", path=path, flags={"lease_ttl": 3})
    assert opts == {"listen": "0.0.0.0:7070", "listen_netns": {}, "etcd": ["http://a:2379", "http://b:2379"], "embedded_etcd": None,
                    "metrics": None, "lease_ttl": 3, "subnet_pool": "10.0.0.0/8", "subnet_prefix": 24,
                    "pki": None, "tls_ca": None, "tls_cert": None, "tls_key": None, "etcd_ca": None,
                    "etcd_cert": None, "etcd_key": None, "insecure": False}
    assert config.resolve("controller", path=None, flags={})["listen"] == "127.0.0.1:7070"


def test_addresses_as_list_or_comma_string(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\ncontroller = "10.0.0.1:7070, 10.0.0.2:7070"\nhost = "vm1"\n', "agent.toml")
    assert config.load(path, "agent")["controller"] == ["10.0.0.1:7070", "10.0.0.2:7070"]


@pytest.mark.parametrize(("text", "message"), [
    ("[agent]\nresync = 400\n", "controller.toml: agent.resync: must be between 0.5 and 300"),
    ("[agent]\nresync = \"fast\"\n", "controller.toml: agent.resync: must be a number"),
    ("[controller]\nlease-ttl = 2.5\n", "controller.toml: controller.lease-ttl: must be an integer"),
    ("[controller]\nlease-ttl = true\n", "controller.toml: controller.lease-ttl: must be an integer"),
    ("[controller]\nlisten = \"\"\n", "controller.toml: controller.listen: must be a non-empty string"),
    ("[controller]\nlisen = \"x\"\n", "controller.toml: controller.lisen: unknown key (known: listen, listen-netns,"),
    ("[controller]\nlisten-netns = \"vx-a.sw=1.2.3.4:7070\"\n",
     "controller.toml: controller.listen-netns: must be a table of strings"),
    ("[controller]\nlisten-netns = { \"vx-a.sw\" = \"unix:/x.sock\" }\n",
     "controller.toml: controller.listen-netns.vx-a.sw: a unix socket belongs to no network namespace"),
    ("[controller]\nlisten-netns = { \"vx-a.sw\" = \"172.30.0.2\" }\n",
     "controller.toml: controller.listen-netns.vx-a.sw: '172.30.0.2' is not host:port"),
    ("[controller]\nlisten-netns = { \"a/b\" = \"172.30.0.2:7070\" }\n",
     "controller.toml: controller.listen-netns.a/b: a network namespace: a name under /run/netns"),
    ("[controler]\n", "controller.toml: controler: unknown table (expected controller or agent)"),
    ("listen = \"x\"\n", "controller.toml: listen: unknown table"),
    ("[controller]\nsubnet-pool = \"10.0.0.1/8\"\n", "controller.toml: controller.subnet-pool: '10.0.0.1/8' is not"),
    ("[controller]\netcd = []\n", "controller.toml: controller.etcd: no address given"),
    ("[agent]\nunderlay-ip = \"10.0.0.300\"\n", "controller.toml: agent.underlay-ip: '10.0.0.300' is not a valid"),
    ("[agent]\nhost = \"Bad_Name\"\n", "controller.toml: agent.host: 'Bad_Name' is not a valid name"),
    ("[agent]\nnetns-prefix = \"ns-\"\n", "controller.toml: agent.netns-prefix: must start with 'vx'"),
    ("[agent]\nlabels = {\"bad key\" = \"x\"}\n", "controller.toml: agent.labels.bad key: label keys are"),
    ("[agent]\nlabels = {zone = 3}\n", "controller.toml: agent.labels: must be a table of strings"),
    ("[controller\n", "controller.toml: not valid TOML: "),
])
def test_bad_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, "[controller]\n" + text if text.startswith("[agent]") else text)
    assert error_of(path, "controller").replace(str(tmp_path) + "/", "").startswith(message)


def test_missing_table_and_missing_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\nhost = "vm1"\n')
    assert error_of(path, "controller") == f"{path}: no [controller] table"
    assert "No such file" in error_of(tmp_path / "nope.toml", "agent")


def test_a_bad_flag_is_named_by_the_flag() -> None:
    with pytest.raises(InvalidArgument, match="^--subnet-pool: "):
        config.resolve("controller", path=None, flags={"subnet_pool": "nonsense"})


# -- through the CLI -----------------------------------------------------------------

@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    server = types.ModuleType("vxlab.controller.server")
    server.serve_forever = lambda **kw: seen.update(kw)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vxlab.controller.server", server)
    return seen


def test_controller_serve_config_then_flags(tmp_path: Path, served: dict[str, Any]) -> None:
    path = write(tmp_path, '[controller]\nlisten = "0.0.0.0:7171"\netcd = ["http://a:2379"]\nsubnet-prefix = 26\n')
    result = runner.invoke(main.app, ["controller", "serve", "--config", str(path), "--listen", "127.0.0.1:9"])
    assert result.exit_code == 0, result.output
    assert served["listen"] == "127.0.0.1:9" and served["etcd_endpoints"] == ["http://a:2379"]
    assert served["subnet_prefix"] == 26 and served["lease_ttl"] == 5


def test_controller_serve_listen_netns_from_file_and_flags(tmp_path: Path, served: dict[str, Any]) -> None:
    path = write(tmp_path, '[controller]\netcd = "http://a:2379"\nlisten-netns = { "vx-a.sw" = "172.30.0.2:7070" }\n')
    result = runner.invoke(main.app, ["controller", "serve", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert served["listen_netns"] == {"vx-a.sw": "172.30.0.2:7070"}
    result = runner.invoke(main.app, ["controller", "serve", "--config", str(path),
                                      "--listen-netns", "vx-b.sw=172.30.0.2:7071", "--listen-netns", "/x/y=10.0.0.1:9"])
    assert result.exit_code == 0, result.output
    assert served["listen_netns"] == {"vx-b.sw": "172.30.0.2:7071", "/x/y": "10.0.0.1:9"}  # flags replace the table
    result = runner.invoke(main.app, ["controller", "serve", "--etcd", "http://a:2379", "--listen-netns", "vx-b.sw"])
    assert (result.exit_code, result.stderr) == (1, "error: listen-netns: expected key=value, got 'vx-b.sw'\n")
    result = runner.invoke(main.app, ["controller", "serve", "--etcd", "http://a:2379", "--listen-netns", "n=x:y"])
    assert (result.exit_code, result.stderr) == (1, "error: --listen-netns.n: 'x:y' is not host:port\n")


def test_controller_serve_bad_config_is_one_line(tmp_path: Path, served: dict[str, Any]) -> None:
    path = write(tmp_path, "[controller]\nlease-ttl = 0\n")
    result = runner.invoke(main.app, ["controller", "serve", "--config", str(path)])
    assert (result.exit_code, result.stderr) == (1, f"error: {path}: controller.lease-ttl: must be between 1 and 3600\n")
    assert served == {}


def test_controller_serve_file_etcd_and_flag_embedded_conflict(tmp_path: Path, served: dict[str, Any]) -> None:
    path = write(tmp_path, '[controller]\netcd = "http://a:2379"\n')
    result = runner.invoke(main.app, ["controller", "serve", "--config", str(path), "--embedded-etcd", "/tmp/x"])
    assert result.exit_code == 1 and "mutually exclusive" in result.stderr and served == {}


class FakeAgent:
    configs: list[Any] = []

    def __init__(self, cfg: Any, kernel: Any) -> None:
        FakeAgent.configs.append(cfg)

    async def run(self) -> None:
        return None


@pytest.fixture
def agents(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    import vxlab.agent.runner as runner_mod

    FakeAgent.configs = []
    monkeypatch.setattr(runner_mod, "Agent", FakeAgent)
    return FakeAgent.configs


def test_agent_run_config_then_flags(tmp_path: Path, agents: list[Any]) -> None:
    path = write(tmp_path, '[agent]\ncontroller = ["10.0.0.1:7070", "10.0.0.2:7070"]\nhost = "vm1"\nresync = 5\n'
                           'underlay-dev = "eth1"\n[agent.labels]\nzone = "a"\n', "agent.toml")
    result = runner.invoke(main.app, ["agent", "run", "--config", str(path), "--resync", "2", "--label", "rack=r1"])
    assert result.exit_code == 0, result.output
    cfg = agents[-1]
    assert cfg.controller == ["10.0.0.1:7070", "10.0.0.2:7070"] and cfg.host == "vm1" and cfg.resync == 2.0
    assert cfg.underlay_dev == "eth1" and cfg.labels == {"rack": "r1"}  # the flag replaces the table
    result = runner.invoke(main.app, ["--controller", "unix:/x.sock", "agent", "run", "--config", str(path),
                                      "--host", "vm9"])
    assert result.exit_code == 0, result.output
    assert agents[-1].controller == ["unix:/x.sock"] and agents[-1].host == "vm9" and agents[-1].labels == {"zone": "a"}


def test_agent_run_without_host_or_config(agents: list[Any]) -> None:
    result = runner.invoke(main.app, ["agent", "run"])
    assert result.exit_code == 1 and result.stderr.startswith("error: host: required") and agents == []
    result = runner.invoke(main.app, ["agent", "run", "--host", "h1"])
    assert result.exit_code == 0 and agents[-1].controller == ["127.0.0.1:7070"]

