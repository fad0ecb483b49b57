"""vxlab-cni's protocol (agent/cni.py, agent/cniplugin.py) without a controller: VERSION,
and the errors a runtime gets for a bad environment or config — JSON with the spec's
code on stdout and a non-zero exit, nothing asked of any controller."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from vxlab.agent import cni
from vxlab.agent.cniplugin import run

CONF = {"cniVersion": "1.0.0", "name": "blue", "type": "vxlab", "network": "blue", "host": "h1",
        "controller": "unix:/nonexistent/vxt.sock"}
ENV = {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "a" * 64, "CNI_NETNS": "/run/netns/vxt-none", "CNI_IFNAME": "eth0",
       "CNI_PATH": "/usr/lib/cni"}


def call(env: dict[str, str], conf: Any = CONF) -> tuple[int, dict[str, Any]]:
    out = io.StringIO()
    stdin = conf if isinstance(conf, bytes) else json.dumps(conf).encode()
    rc = run(env, stdin, out)
    return rc, json.loads(out.getvalue() or "null")


def test_version_lists_what_it_speaks() -> None:
    rc, got = call({"CNI_COMMAND": "VERSION"}, {"cniVersion": "0.4.0"})
    assert rc == 0 and got == {"cniVersion": "0.4.0", "supportedVersions": list(cni.SUPPORTED)}
    assert "1.0.0" in got["supportedVersions"]


@pytest.mark.parametrize(("env", "conf", "code", "says"), [
    ({**ENV, "CNI_NETNS": ""}, CONF, cni.BAD_ENV, "CNI_NETNS: missing"),
    ({k: v for k, v in ENV.items() if k != "CNI_NETNS"}, CONF, cni.BAD_ENV, "CNI_NETNS: missing"),
    ({**ENV, "CNI_CONTAINERID": ""}, CONF, cni.BAD_ENV, "CNI_CONTAINERID: missing"),
    ({**ENV, "CNI_COMMAND": "CHECK", "CNI_NETNS": ""}, CONF, cni.BAD_ENV, "CNI_NETNS: missing"),
    ({**ENV, "CNI_COMMAND": "FROB"}, CONF, cni.BAD_ENV, "CNI_COMMAND"),
    ({**ENV, "CNI_IFNAME": "a-very-long-interface"}, CONF, cni.BAD_ENV, "CNI_IFNAME"),
    (ENV, b"{not json", cni.DECODE, "not JSON"),
    (ENV, {**CONF, "cniVersion": "9.9.9"}, cni.INCOMPATIBLE, "cniVersion"),
    (ENV, {**CONF, "network": ""}, cni.BAD_CONFIG, "network: missing"),
    (ENV, {k: v for k, v in CONF.items() if k != "host"}, cni.BAD_CONFIG, "host: missing"),
    (ENV, {**CONF, "type": "bridge"}, cni.BAD_CONFIG, "type"),
    (ENV, {**CONF, "timeout": 0}, cni.BAD_CONFIG, "timeout"),
    (ENV, CONF, cni.UNKNOWN_CONTAINER, "CNI_NETNS: /run/netns/vxt-none does not exist"),
])
def test_errors_are_json_with_a_code_and_a_non_zero_exit(env: dict[str, str], conf: Any, code: int,
                                                          says: str) -> None:
    rc, got = call(env, conf)
    assert rc != 0 and got["code"] == code and says in got["msg"], got
    assert got["cniVersion"] in cni.SUPPORTED


def test_del_without_a_controller_is_try_again_not_success() -> None:
    rc, got = call({**ENV, "CNI_COMMAND": "DEL", "CNI_NETNS": ""}, {**CONF, "timeout": 1})
    assert rc != 0 and got["code"] in (cni.TRY_AGAIN, cni.IO_FAILURE), got


def test_endpoint_names_are_vxlab_names() -> None:
    from vxlab import validate
    for cid, ifname in (("a" * 64, "eth0"), ("My_Container.1", "eth0"), ("b" * 64, "Net-1"), ("c" * 64, "eth15")):
        name = cni.endpoint_name(cid, ifname)
        assert validate.name(name, field="n", max_len=validate.CONTAINER_NAME_MAX) == name
    assert cni.endpoint_name("a" * 64, "eth0") == "cni-aaaaaaaaaaaa-eth0"
    assert cni.endpoint_name("a" * 64, "eth0") != cni.endpoint_name("a" * 64, "eth1")


def test_results_in_the_configs_version() -> None:
    new = cni.result("1.0.0", ifname="eth0", mac="02:00:00:00:00:04", sandbox="/run/netns/x", ip="10.1.0.4",
                     subnet="10.1.0.0/24", gateway="10.1.0.1")
    assert new == {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "mac": "02:00:00:00:00:04",
                                                           "sandbox": "/run/netns/x"}],
                   "ips": [{"address": "10.1.0.4/24", "interface": 0, "gateway": "10.1.0.1"}],
                   "routes": [{"dst": "0.0.0.0/0", "gw": "10.1.0.1"}],
                   "dns": {"nameservers": ["127.0.0.11"], "options": ["ndots:0"]}}
    old = cni.result("0.4.0", ifname="eth0", mac="m", sandbox="s", ip="10.1.0.4", subnet="10.1.0.0/24", gateway="")
    assert old["ips"] == [{"address": "10.1.0.4/24", "interface": 0, "version": "4"}] and old["routes"] == []
