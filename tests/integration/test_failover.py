"""Controller failover: two controller replicas on one etcd, agents given both addresses.

`kill -9` of the controller every agent talks to loses no probe (20 Hz), and the agents
keep converging through the other one: their Watch resumes there from their last
revision, their keepalives go there, and a container created afterwards (through the
same failover in the client) is programmed on every host. Then the other way round.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

import pytest
from rig import Rig, lost, wait_answers

from vxlab.lab.probe import Pinger
from vxlab.model import Endpoint

pytestmark = pytest.mark.integration


@pytest.fixture
def rig(tmp_path_factory: pytest.TempPathFactory):
    r = Rig(tmp_path_factory.mktemp("failover"), hosts=3, controllers=2)
    try:
        yield r.start_pair("10.79.0.0/24")
    finally:
        r.close()


def programmed_everywhere(rig: Rig, name: str, host: str) -> None:
    """`name` on `host` has its namespace there and an FDB entry towards `host` on every peer."""
    ep = rig.api(lambda c: c.get_endpoint("blue", name))
    assert rig.cns(host, name) in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    for peer in rig.hosts:
        if peer != host and rig.nns(peer, "blue") in subprocess.run(["ip", "netns"], capture_output=True,
                                                                     text=True).stdout:
            fdb = rig.sh(rig.nns(peer, "blue"), "bridge", "fdb", "show", "dev", "vxv-blue").stdout
            assert f"{ep.mac} dst {rig.hosts[host].ip}" in fdb, (peer, fdb)
    assert rig.ping(rig.cns("h1", "web"), ep.ip).returncode == 0


def test_kill9_of_a_controller_loses_no_probe_and_agents_keep_converging(rig: Rig):
    web = rig.cns("h1", "web")
    for dead, survivor in ((0, 1), (1, 0)):
        p = Pinger(web, "10.79.0.3", interval=0.05).start()
        try:
            wait_answers(p, 5)
            rig.kill_controller(dead)
            killed = time.monotonic()
            wait_answers(p, 40)  # 2 s of probes from the kill on
        finally:
            samples = p.stop()
        assert samples and lost(samples) == 0, f"{lost(samples)} of {len(samples)} probes lost"
        name = f"late{dead}"
        rig.container(name, "h3", "blue")  # the client fails over too
        rig.settle()
        programmed_everywhere(rig, name, "h3")
        assert all(rig.status(h).registered for h in rig.hosts)
        # every agent's lease is kept alive through the survivor: nobody is dead a TTL
        # after the kill (the waiting is the behaviour under test: a lease renewed through
        # the dead controller only would have expired by then)
        time.sleep(max(0.0, killed + rig.lease_ttl + 1 - time.monotonic()))
        hosts = rig.api(lambda c: c.list_hosts())
        assert all(h.alive for h in hosts), hosts
        rig.start_controller(dead)  # back as the replica for the next round
        assert rig.controllers[survivor] is not None and rig.controllers[survivor].poll() is None


def test_a_hung_controller_is_failed_over_too(rig: Rig):
    """SIGSTOP: connections stay open but nothing answers (a hung VM, a partition).
    Agents move their keepalives after FAILOVER_TIMEOUT and their Watch after WATCH_IDLE.
    A create is not repeated on another controller after a timeout (the first may have
    done it), so this one goes to the survivor directly."""
    from vxlab.agent.runner import WATCH_IDLE
    from vxlab.client import Client

    web = rig.cns("h1", "web")
    hung = rig.controllers[0]
    assert hung is not None
    p = Pinger(web, "10.79.0.3", interval=0.05).start()
    try:
        wait_answers(p, 5)
        os.killpg(hung.pid, signal.SIGSTOP)
        wait_answers(p, 60)  # 3 s of probes with the controller hung
        samples = p.stop()
        assert samples and lost(samples) == 0, f"{lost(samples)} of {len(samples)} probes lost"

        async def create(_: Client) -> Endpoint:
            async with Client(rig.socks[1]) as survivor:
                return await survivor.create_endpoint(Endpoint(name="late", network="blue", host="h3"))
        rig.api(create)
        revision = rig.revision()
        rig.wait(lambda: all(rig.status(h).applied_revision >= revision for h in rig.hosts),
                 "agents converged through the survivor", timeout=WATCH_IDLE + 20)
        programmed_everywhere(rig, "late", "h3")
        hosts = rig.api(lambda c: c.list_hosts())  # a read fails over after the client's failover_timeout
        assert all(h.alive for h in hosts), hosts
    finally:
        p.stop()
        os.killpg(hung.pid, signal.SIGCONT)


async def test_an_idle_watch_gets_heartbeats_also_when_nothing_changed(etcd, controllers):
    """Agents take a silent Watch for a hung controller, so heartbeats must flow also to a
    subscriber that has seen no change since it joined (fresh, or resumed at the head)."""
    from vxlab.client import Client

    ctl = controllers(etcd.endpoints)
    async with Client(ctl.address) as client:
        stream = client.watch()
        snap = await anext(stream)
        beat = await asyncio.wait_for(anext(stream), 15)
        assert beat.revision == snap.revision and not beat.changes and not beat.snapshot
        await stream.aclose()  # type: ignore[attr-defined]
        stream = client.watch(start_revision=snap.revision)
        beat = await asyncio.wait_for(anext(stream), 15)
        assert beat.revision == snap.revision and not beat.changes and not beat.snapshot
        await stream.aclose()  # type: ignore[attr-defined]


async def test_two_controllers_over_three_etcd_members_lose_the_leader_and_a_controller(tmp_path, controllers):
    """The control plane as deploy/ runs it: two controllers over a 3-member etcd. With
    the etcd leader and one controller killed, a client given both keeps working."""
    from vxlab.client import Client
    from vxlab.errors import Unavailable
    from vxlab.etcdproc import EtcdCluster
    from vxlab.model import Network

    cluster = EtcdCluster(3, tmp_path / "etcd")
    try:
        cluster.start()
        first, second = controllers(cluster.endpoints), controllers(cluster.endpoints)
        async with Client([first.address, second.address]) as client:
            await client.create_network(Network(name="blue"))
            leader = cluster.leader()
            assert leader is not None
            cluster.kill(leader)
            os.killpg(first.proc.pid, signal.SIGKILL)
            for _ in range(100):  # UNAVAILABLE while the members elect a new leader
                try:
                    await client.create_network(Network(name="red"))
                    break
                except Unavailable:
                    await asyncio.sleep(0.2)
            else:
                pytest.fail("no create through the surviving controller and etcd members")
            assert {n.name for n in await client.list_networks()} == {"blue", "red"}
            assert client.address == second.address
    finally:
        cluster.stop()
