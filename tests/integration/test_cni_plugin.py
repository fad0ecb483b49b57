"""vxlab-cni driven through the protocol itself (env and stdin, as a runtime calls it) on
h1 of a rig, into a namespace the test made as the container's: ADD gives the result
and a working interface that reaches a vxlab container on h2 across VXLAN, the agent's
DNS answers at 127.0.0.11 there, CHECK passes and then reports a missing DNS redirect
and the deleted veth, DEL is idempotent (twice, and with the namespace
gone), an unknown network is an error naming the field, STATUS and GC answer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import pytest
from rig import Rig

from vxlab.agent import cni
from vxlab.icmp import socket_in_netns

pytestmark = pytest.mark.integration
PLUGIN = str(Path(sys.executable).parent / "vxlab-cni")


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory):
    r = Rig(tmp_path_factory.mktemp("rig"), hosts=2)
    try:
        yield r.start_pair("10.79.0.0/24")
    finally:
        r.close()


def plugin(rig: Rig, command: str, *, netns: str = "", cid: str = "c0ffee" * 10 + "0001", ifname: str = "eth0",
           **conf: Any) -> tuple[int, dict[str, Any] | None]:
    """One call of vxlab-cni in h1's namespace (where a runtime on h1 runs it)."""
    config = {"cniVersion": "1.0.0", "name": "blue", "type": "vxlab", "network": "blue", "host": "h1",
              "controller": rig.sock, **conf}
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname,
           "CNI_PATH": "/usr/lib/cni", **({"CNI_NETNS": netns} if netns else {})}
    done = subprocess.run(["ip", "netns", "exec", rig.hosts["h1"].ns, PLUGIN], input=json.dumps(config),
                          capture_output=True, text=True, env=env, timeout=60)
    return done.returncode, json.loads(done.stdout) if done.stdout.strip() else None


def resolve(netns: str, name: str) -> list[str]:
    """The A records 127.0.0.11 answers for `name` in namespace `netns` ([] when nothing answers)."""
    sock = socket_in_netns(netns, socket.AF_INET, socket.SOCK_DGRAM, 0)
    try:
        r = dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.11", timeout=1, sock=sock)
    except (dns.exception.Timeout, OSError):
        return []
    finally:
        sock.close()
    return [rd.address for rrset in r.answer for rd in rrset]


def endpoints(rig: Rig) -> list[str]:
    return sorted(e.name for e in rig.api(lambda c: c.list_endpoints(network="blue")))


def test_add_check_del_through_the_protocol(rig: Rig) -> None:
    pod = f"{rig.id}-pod"  # the "container's" namespace; rig.close() removes it on failure
    subprocess.run(["ip", "netns", "add", pod], check=True)
    path = f"/run/netns/{pod}"
    rc, got = plugin(rig, "ADD", netns=path)
    assert rc == 0, got
    assert got is not None and got["cniVersion"] == "1.0.0"
    ep = rig.api(lambda c: c.get_endpoint("blue", cni.endpoint_name("c0ffee" * 10 + "0001", "eth0")))
    assert (ep.runtime, ep.host, ep.labels[cni.LABEL_CONTAINER]) == ("cni", "h1", "c0ffee" * 10 + "0001")
    assert got["interfaces"] == [{"name": "eth0", "mac": ep.mac, "sandbox": path}]
    assert got["ips"] == [{"address": f"{ep.ip}/24", "gateway": "10.79.0.1", "interface": 0}]
    assert got["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.79.0.1"}]
    assert got["dns"] == {"nameservers": ["127.0.0.11"], "options": ["ndots:0"]}
    assert ep.netns == path  # recorded once the interface was there: h1's agent enters it for ops
    db = rig.api(lambda c: c.get_endpoint("blue", "db"))
    assert rig.ping(pod, db.ip, count=3, interval=0.2).returncode == 0
    assert plugin(rig, "ADD", netns=path)[1] == got, "ADD again answers the same"
    assert plugin(rig, "CHECK", netns=path) == (0, None)
    # the embedded DNS: ADD's redirect in the pod's namespace, h1's agent listening behind it
    Rig.wait(lambda: resolve(path, "db") == [db.ip], "db resolved at 127.0.0.11 in the pod's namespace")
    subprocess.run(["ip", "netns", "exec", pod, "nft", "delete", "table", "ip", "vxlab_dns"], check=True)
    rc, err = plugin(rig, "CHECK", netns=path)
    assert rc != 0 and err is not None and err["code"] == cni.NOT_AS_MADE and "no DNS redirect" in err["msg"], err
    assert plugin(rig, "ADD", netns=path)[1] == got and plugin(rig, "CHECK", netns=path) == (0, None)

    subprocess.run(["ip", "-n", pod, "link", "del", "eth0"], check=True)
    rc, err = plugin(rig, "CHECK", netns=path)
    assert rc != 0 and err is not None and err["code"] == cni.NOT_AS_MADE and "eth0: no such interface" in err["msg"]

    assert plugin(rig, "DEL", netns=path) == (0, None)
    assert ep.name not in endpoints(rig)
    tables = subprocess.run(["ip", "netns", "exec", pod, "nft", "list", "tables"], capture_output=True, text=True)
    assert "vxlab_dns" not in tables.stdout, "DEL removed the DNS redirect"
    assert plugin(rig, "DEL", netns=path) == (0, None), "DEL is idempotent"
    subprocess.run(["ip", "netns", "del", pod], check=True)
    assert plugin(rig, "DEL", netns=path) == (0, None), "a namespace that is gone is no error"
    assert plugin(rig, "DEL") == (0, None)
    rig.settle()
    st = rig.status("h1")
    assert st.last_pass is not None and not st.last_pass.errors


def test_an_unknown_network_is_an_error_naming_the_field(rig: Rig) -> None:
    pod = f"{rig.id}-pod2"
    subprocess.run(["ip", "netns", "add", pod], check=True)
    try:
        before = endpoints(rig)
        rc, err = plugin(rig, "ADD", netns=f"/run/netns/{pod}", network="nope")
        assert rc != 0 and err is not None and err["code"] == cni.BAD_CONFIG, err
        assert err["msg"].startswith("network: ") and "'nope'" in err["msg"]
        rc, err = plugin(rig, "ADD", netns=f"/run/netns/{pod}", host="h9")
        assert rc != 0 and err is not None and err["msg"].startswith("host: "), err
        assert endpoints(rig) == before, "a refused ADD leaves nothing"
    finally:
        subprocess.run(["ip", "netns", "del", pod], check=False)


def test_status_and_gc(rig: Rig) -> None:
    assert plugin(rig, "STATUS", cniVersion="1.1.0") == (0, None)
    pod = f"{rig.id}-pod3"
    subprocess.run(["ip", "netns", "add", pod], check=True)
    try:
        assert plugin(rig, "ADD", netns=f"/run/netns/{pod}", cid="feed" * 16)[0] == 0
        name = cni.endpoint_name("feed" * 16, "eth0")
        keep = [{"containerID": "feed" * 16, "ifname": "eth0"}]
        assert plugin(rig, "GC", cniVersion="1.1.0", **{"cni.dev/valid-attachments": keep}) == (0, None)
        assert name in endpoints(rig)
        assert plugin(rig, "GC", cniVersion="1.1.0", **{"cni.dev/valid-attachments": []}) == (0, None)
        assert name not in endpoints(rig) and {"web", "db"} <= set(endpoints(rig)), "only the plugin's go"
    finally:
        subprocess.run(["ip", "netns", "del", pod], check=False)
