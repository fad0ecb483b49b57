"""The agent's executor of ops: containers it refuses, probes, kernel views and drift
over the FakeKernel, programs (real processes, run here instead of in a namespace:
`enter` is the seam), caps, deadlines, cancel, the concurrency bound."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from vxlab import icmp, ops
from vxlab.agent.cache import StateCache
from vxlab.agent.desired import HostInfo
from vxlab.testing.fakekernel import FakeKernel
from vxlab.agent.kernel import Fdb
from vxlab.agent.ops import AgentSide, Executor
from vxlab.agent.reconciler import Reconciler
from vxlab.model import Endpoint, Host, Network, WatchBatch

ME = HostInfo(name="h1", underlay_ip="172.30.0.11", underlay_mtu=1500, netns_prefix="vxt-h1-")
DB_MAC = "02:00:00:00:00:02"


def ep(name: str, host: str, ip: str, mac: str) -> Endpoint:
    return Endpoint(name=name, network="blue", host=host, ip=ip, mac=mac, id=(name + host).ljust(64, "0"), created="1")


def snapshot() -> StateCache:
    s = StateCache()
    s.apply(WatchBatch(revision=10, snapshot=True,
                       hosts=(Host("h1", "172.30.0.11", alive=True), Host("h2", "172.30.0.12", alive=True)),
                       networks=(Network("blue", subnet="10.10.0.0/24", gateway="10.10.0.1", vni=4096),),
                       endpoints=(ep("web", "h1", "10.10.0.2", "02:00:00:00:00:01"),
                                  ep("db", "h2", "10.10.0.3", DB_MAC))))
    return s


class Probes:
    """A prober that answers every target reached (in order), and can hold a batch."""

    def __init__(self, hold: threading.Event | None = None) -> None:
        self.batches: list[list[icmp.Target]] = []
        self.hold = hold

    def __call__(self, targets: list[icmp.Target], *, cancelled: Any) -> list[icmp.Reached]:
        self.batches.append(list(targets))
        while self.hold is not None and not self.hold.wait(0.01):
            if cancelled():
                return []
        return [icmp.Reached(True, 0.5) for _ in targets]


class Agent:
    """An executor over a FakeKernel the reconciler programmed; replies collected."""

    def __init__(self, *, limit: int = 4, prober: Any = None) -> None:
        self.kernel = FakeKernel()
        self.cache = snapshot()
        Reconciler(self.kernel, ME).reconcile(self.cache, full=True)
        self.prober = prober or Probes()
        self.executor = Executor(AgentSide(ME, "eth0", cache=lambda: self.cache, applied=lambda: 10,
                                           kernel=lambda: self.kernel),
                                 limit=limit, prober=self.prober, enter=lambda ns: [])
        self.events: dict[str, list[ops.Event]] = {}

    def submit(self, op: ops.Op, op_id: str = "1", *, timeout: float = 0.0, link: object = "link") -> None:
        self.executor.submit(link, ops.OpRequest("h1", op, id=op_id, timeout=timeout),
                             lambda e: self.events.setdefault(e.id, []).append(e.event))

    async def done(self, op_id: str = "1", timeout: float = 10.0) -> list[ops.Event]:
        deadline = time.monotonic() + timeout
        while not any(isinstance(e, ops.Done) for e in self.events.get(op_id, [])):
            assert time.monotonic() < deadline, f"op {op_id} did not end: {self.events.get(op_id)}"
            await asyncio.sleep(0.01)
        return self.events[op_id]

    async def run(self, op: ops.Op, **kw: Any) -> list[ops.Event]:
        self.submit(op, **kw)
        return await self.done()


def go(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_probe_batch_runs_in_the_containers_namespaces_and_keeps_the_order() -> None:
    async def body() -> None:
        a = Agent()
        events = await a.run(ops.ProbeBatch((ops.ProbeSpec("web", "10.10.0.3"),
                                             ops.ProbeSpec("web", "10.10.0.9", "tcp", 80, 0.5))))
        assert a.prober.batches == [[icmp.Target("vxt-h1-c-web", "10.10.0.3"),
                                     icmp.Target("vxt-h1-c-web", "10.10.0.9", "tcp", 80, 0.5)]]
        assert events == [ops.ProbeResults((ops.ProbeResult(0, True, 0.5), ops.ProbeResult(1, True, 0.5))), ops.Done()]
    go(body())


@pytest.mark.parametrize("op, said", [
    (ops.ProbeBatch((ops.ProbeSpec("web", "10.10.0.3"), ops.ProbeSpec("db", "10.10.0.2"))),
     "probe.probes[1].container: 'db' is not a container of host h1"),
    (ops.Exec("ghost", ("true",)), "exec.container: 'ghost' is not a container of host h1"),
    (ops.KernelView("blue", ("db",)), "kernel_view.containers[0]: 'db' is not a container of host h1"),
])
def test_containers_that_are_not_the_agents_are_refused(op: ops.Op, said: str) -> None:
    async def body() -> None:
        a = Agent()
        assert await a.run(op) == [ops.Done(said)]
        assert a.prober.batches == []
    go(body())


def test_the_kernel_view_is_the_agents_dump_of_the_network_and_the_container() -> None:
    async def body() -> None:
        a = Agent()
        state = (await a.run(ops.KernelView("blue", ("web",))))[0]
        assert isinstance(state, ops.KernelState)
        assert [n.name for n in state.namespaces] == ["vxt-h1-n-blue", "vxt-h1-c-web"]
        assert state.namespaces[0].fdb == (("vxv-blue", DB_MAC, "172.30.0.12"),)
        assert ("eth0", "10.10.0.2/24") in state.namespaces[1].addrs and state.underlay_dev == "eth0"
        a.events.clear()
        assert (await a.run(ops.KernelView("red")))[0] == ops.KernelState(  # no namespace for it here
            (), underlay_ip="172.30.0.11", underlay_dev="eth0", underlay_mtu=1500)
    go(body())


def test_drift_lists_what_was_changed_behind_the_agents_back_and_writes_nothing() -> None:
    async def body() -> None:
        a = Agent()
        assert (await a.run(ops.Drift()))[0] == ops.DriftReport((), revision=10, applied_revision=10)
        a.kernel.del_fdb("vxt-h1-n-blue", Fdb("vxv-blue", DB_MAC, "172.30.0.12"))           # deleted by hand
        a.kernel.add_fdb("vxt-h1-n-blue", Fdb("vxv-blue", "02:00:00:00:00:99", "172.30.0.99"))  # a stale peer
        writes = sum(a.kernel.writes.values())
        a.events.clear()
        report = (await a.run(ops.Drift()))[0]
        assert isinstance(report, ops.DriftReport)
        found = {(e.namespace, e.state, e.kind) for e in report.entries}
        assert found == {("vxt-h1-n-blue", "missing", "fdb"), ("vxt-h1-n-blue", "stale", "fdb")}, report
        assert any(DB_MAC in e.target for e in report.entries if e.state == "missing")
        assert sum(a.kernel.writes.values()) == writes  # a dry run
    go(body())


def test_drift_before_the_first_snapshot_says_so() -> None:
    async def body() -> None:
        a = Agent()
        a.cache = StateCache()
        assert (await a.run(ops.Drift())) == [ops.Done("host h1: the agent has no snapshot of the desired state yet")]
    go(body())


def test_exec_passes_exit_code_and_output_and_caps_it() -> None:
    async def body() -> None:
        a = Agent()
        result = (await a.run(ops.Exec("web", ("sh", "-c", "echo out; echo err >&2; exit 7"))))[0]
        assert result == ops.ExecResult(7, b"out\n", b"err\n", False)
        a.events.clear()
        big = (await a.run(ops.Exec("web", ("head", "-c", str(ops.OUTPUT_CAP + 5000), "/dev/zero"))))[0]
        assert isinstance(big, ops.ExecResult) and big.truncated and len(big.stdout) == ops.OUTPUT_CAP
    go(body())


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text()), 0)
    except (OSError, ValueError):
        return False
    return True


def test_a_deadline_ends_an_op_and_kills_its_program(tmp_path: Path) -> None:
    async def body() -> None:
        a = Agent()
        pid = tmp_path / "pid"
        events = await a.run(ops.Exec("web", ("sh", "-c", f"echo $$ > {pid}; exec sleep 30")), timeout=0.5)
        assert events == [ops.Done("deadline of 0.5s passed")]
        assert not _alive(pid)
    go(body())


def test_a_cancel_or_its_link_closing_stops_the_op_without_a_done_and_kills_its_program(tmp_path: Path) -> None:
    async def body() -> None:
        a = Agent()
        pids = {op_id: tmp_path / op_id for op_id in ("7", "8")}
        for op_id, pid in pids.items():
            a.submit(ops.Exec("web", ("sh", "-c", f"echo $$ > {pid}; exec sleep 30")), op_id=op_id, link="L")

        async def until(cond: Any) -> None:
            for _ in range(500):
                if cond():
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("condition not met")
        await until(lambda: all(_alive(p) for p in pids.values()))
        a.submit(ops.Cancel("7"), link="other")  # another link's op 7: not this one
        a.submit(ops.Cancel("7"), link="L")
        await until(lambda: a.executor.running == 1)
        assert not _alive(pids["7"]) and _alive(pids["8"])
        a.executor.detach("L")  # its stream was lost: an exec is not kept
        await until(lambda: a.executor.running == 0)
        assert not _alive(pids["8"]) and a.events == {}
    go(body())


def test_at_most_limit_ops_run_at_once() -> None:
    async def body() -> None:
        hold = threading.Event()
        a = Agent(limit=1, prober=Probes(hold))
        batch = ops.ProbeBatch((ops.ProbeSpec("web", "10.10.0.3"),))
        a.submit(batch, "1")
        a.submit(batch, "2")
        for _ in range(100):
            await asyncio.sleep(0.01)
        assert len(a.prober.batches) == 1 and not a.events  # the second waits for a slot
        hold.set()
        await a.done("1")
        await a.done("2")
        assert len(a.prober.batches) == 2
        await a.executor.close()
    go(body())


class FakePinger:
    """Answers every echo with 1 ms, sends `count` of them at once."""

    def __init__(self, namespace: str, ip: str, *, interval: float, timeout: float, count: int) -> None:
        self.args = (namespace, ip, interval, timeout, count)
        self.started = self.stopped = False

    def start(self) -> FakePinger:
        self.started = True
        return self

    def decided(self, start: int) -> list[icmp.Sample]:
        return [icmp.Sample(100.0 + k, 1.0 if k % 2 == 0 else None) for k in range(start, self.args[4])]

    @property
    def finished(self) -> bool:
        return True

    def stop(self) -> list[icmp.Sample]:
        self.stopped = True
        return []


def test_a_ping_stream_sends_samples_in_order_with_wall_clock_times() -> None:
    async def body() -> None:
        a = Agent()
        a.executor._pinger = FakePinger  # type: ignore[assignment]
        offset = time.time() - time.monotonic()
        events = await a.run(ops.PingStream("web", "10.10.0.3", interval=0.1, count=3))
        samples = [e for e in events if isinstance(e, ops.PingSample)]
        assert [(s.seq, s.rtt_ms) for s in samples] == [(0, 1.0), (1, None), (2, 1.0)] and events[-1] == ops.Done()
        assert all(abs(s.sent - (100.0 + s.seq + offset)) < 1.0 for s in samples)
    go(body())
