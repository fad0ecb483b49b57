"""Hostile names: no name can reach an interface name, a namespace path, an nft rule or
a shell command. Every validator (hosts, networks, containers, label keys, lab names,
topology files) refuses them with one line naming the field; every name it accepts
derives kernel names that are short and plain."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vxlab import validate
from vxlab.agent.names import Naming
from vxlab.cli import main
from vxlab.errors import InvalidArgument
from vxlab.lab.lab import Lab
from vxlab.lab.procs import LabError
from vxlab.lab.state import check_lab_name
from vxlab.lab.topology import TopologyError, from_mapping

HOSTILE = ["a/b", "/etc", "..", "../x", "a..b", "a b", " a", "a'b", 'a"b', "a;b", "$(reboot)", "`id`", "a\nb",
           "a\rb", "a\tb", "a*", "a?", "a|b", "a&b", "a>b", "a\\b", "-a", "a-", "A", "é", "a\x00b", "", "x" * 80]
FIELDS = [("host.name", validate.HOST_NAME_MAX), ("network.name", validate.NETWORK_NAME_MAX),
          ("endpoint.name", validate.CONTAINER_NAME_MAX)]
IFNAME = re.compile(r"^[a-z0-9-]{1,15}$")


@pytest.mark.parametrize("bad", HOSTILE)
@pytest.mark.parametrize("field,max_len", FIELDS)
def test_names_refused_with_one_line_naming_the_field(bad: str, field: str, max_len: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate.name(bad, field=field, max_len=max_len)
    assert info.value.field == field and info.value.message.startswith(f"{field}: ")
    assert "\n" not in info.value.message and "\r" not in info.value.message


@pytest.mark.parametrize("bad", [b for b in HOSTILE if b not in ("A", "x" * 80, "-a", "a-", "a/b")] + [
    "a/b/c", "a//b", "/a", "a/", "a/..", "../a", ".a", "a.", "x" * 64, "a:b"])
def test_label_keys_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        validate.labels({bad: "v"}, field="network.labels")
    assert info.value.message.startswith("network.labels.") and "\n" not in info.value.message


def test_label_keys_and_values_that_stay_allowed() -> None:
    ok = {"team": "a b; $(x) 'quoted'", "vxlab/netns-prefix": "vx-", "example.com/tier": "", "A.b_c-9": "x"}
    assert validate.labels(ok) == ok  # values are data: never a name, a path, a rule or a command
    with pytest.raises(InvalidArgument, match="printable"):
        validate.labels({"k": "a\nb"})


@pytest.mark.parametrize("bad", HOSTILE)
def test_lab_names_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        check_lab_name(bad)
    with pytest.raises(LabError, match="^lab: "):
        Lab(bad)
    with pytest.raises(TopologyError) as info:
        from_mapping({"name": bad, "hosts": 1})
    assert str(info.value).startswith("name: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("bad", ["../..", "a b", "$(reboot)", "a\nb"])
def test_cli_lab_option_refused_before_anything_runs(bad: str) -> None:
    for args in (["--lab", bad, "down"], ["down", "--lab", bad], ["--lab", bad, "status"]):
        result = CliRunner().invoke(main.app, args)
        assert result.exit_code == 1 and result.stderr.startswith("error: lab: "), (args, result.output)
        assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("where,bad", [(w, b) for w in ("host", "network", "container") for b in HOSTILE[:20]])
def test_topology_names_refused_with_their_path(where: str, bad: str) -> None:
    topo: dict[str, object] = {"name": "lab", "hosts": ["h1"], "networks": [{"name": "blue"}],
                               "containers": [{"name": "c1", "host": "h1", "networks": ["blue"]}]}
    if where == "host":
        topo["hosts"] = [bad]
        path = "hosts[0]"
    elif where == "network":
        topo["networks"] = [{"name": bad}]
        path = "networks[0]"
    else:
        topo["containers"] = [{"name": bad, "host": "h1", "networks": ["blue"]}]
        path = "containers[0]"
    with pytest.raises(TopologyError) as info:
        from_mapping(topo)
    assert str(info.value).startswith(path) and "\n" not in str(info.value)


NAMES = st.from_regex(r"[a-z](?:[a-z0-9-]{0,30}[a-z0-9])?", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(host=NAMES, net=NAMES.filter(lambda n: len(n) <= validate.NETWORK_NAME_MAX), ctr=NAMES,
       lab=NAMES.filter(lambda n: len(n) <= 11), ep_id=st.from_regex(r"[0-9a-f]{64}", fullmatch=True))
def test_every_accepted_name_derives_plain_short_kernel_names(host: str, net: str, ctr: str, lab: str,
                                                             ep_id: str) -> None:
    for value, field, max_len in ((host, "host", 32), (net, "network", 11), (ctr, "container", 32)):
        validate.name(value, field=field, max_len=max_len)
    n = Naming(host, f"vx-{lab}.{host}.")
    for ifname in (n.bridge(net), n.vxlan(net), n.veth(ep_id), n.uplink_host(net), n.UPLINK):
        assert IFNAME.match(ifname), ifname  # fits IFNAMSIZ, nothing a shell or nft would read
    for ns in (n.network_ns(net), n.container_ns(ctr)):
        assert re.match(r"^[a-z0-9.-]+$", ns) and ".." not in ns.replace(f"vx-{lab}.{host}.", "")
