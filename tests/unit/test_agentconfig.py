"""vxlab.agentconfig: one AgentConfig through every shape it travels in — the [agent]
mapping (the spawner's JSON), a TOML file, the command line of `vxlab agent run` — and
back, unchanged; bad values are refused naming the key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from vxlab.agentconfig import AgentConfig, Launch
from vxlab.errors import InvalidArgument
from vxlab.tls import TlsConfig


def full(tmp: Path) -> AgentConfig:
    return AgentConfig(controller=["unix:/run/x/controller.sock", "10.0.0.2:7070"], host="h1",
                       underlay_ip="172.30.0.11", underlay_dev="eth0", netns_prefix="vx-lab.h1.", resync=25.0,
                       status_file=str(tmp / "h1.json"), labels={"site": "a b", "vxlab/x": "1"},
                       tls=TlsConfig(tmp / "ca.pem", tmp / "h1.pem", tmp / "h1.key"), metrics="127.0.0.1:9464",
                       dns_forward=False)


def test_mapping_and_json_round_trip(tmp_path: Path) -> None:
    c = full(tmp_path)
    assert AgentConfig.from_mapping(json.loads(json.dumps(c.to_mapping()))) == c
    minimal = AgentConfig(controller=["a:1"], host="h2")
    assert minimal.to_mapping() == {"controller": ["a:1"], "host": "h2"}  # defaults are left out
    assert AgentConfig.from_mapping(minimal.to_mapping()) == minimal


def test_toml_round_trip(tmp_path: Path) -> None:
    c = full(tmp_path)
    (tmp_path / "agent.toml").write_text(c.to_toml())
    assert AgentConfig.from_toml(tmp_path / "agent.toml") == c


def test_launch_round_trip(tmp_path: Path) -> None:
    launch = Launch(full(tmp_path), netns="vx-lab.h1", log=str(tmp_path / "h1.log"), nice=10)
    assert Launch.from_json(json.loads(json.dumps(launch.to_json()))) == launch


@pytest.mark.parametrize("key, value, field", [
    ("resync", 0.1, "spawner: agent.resync"), ("netns-prefix", "x-", "spawner: agent.netns-prefix"),
    ("host", "bad name", "spawner: agent.host"), ("colour", "red", "spawner: agent.colour"),
    ("tls-ca", "/ca.pem", "spawner: agent.tls-cert")])
def test_bad_values_name_the_key(key: str, value: Any, field: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        AgentConfig.from_mapping({"controller": ["a:1"], "host": "h1", key: value}, source="spawner")
    assert e.value.field == field


def test_the_command_line_runs_the_same_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vxlab.agent import runner
    from vxlab.cli.main import app

    for name in ("ca.pem", "h1.pem", "h1.key"):
        (tmp_path / name).write_text("x")
    ran: list[AgentConfig] = []

    class Agent:
        def __init__(self, config: AgentConfig, kernel: Any) -> None:
            ran.append(config)

        async def run(self) -> None:
            return None

    monkeypatch.setattr(runner, "Agent", Agent)
    monkeypatch.setattr("vxlab.cli.agent._serve_metrics", lambda listen: None)
    c = full(tmp_path)
    result = CliRunner().invoke(app, c.argv())
    assert result.exit_code == 0, result.output
    assert ran == [c]
