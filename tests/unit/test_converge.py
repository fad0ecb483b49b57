"""Why agents have not converged, from their status files (vxlab.lab.converge)."""

from __future__ import annotations

from vxlab.agentstatus import AgentStatus, LastPass
from vxlab.lab import converge

NFT = "set_vtep_filter: nft: [Errno 2] No such file or directory: 'nft'"


def status(pid: int, *, converged: bool = False, applied: int = 0, revision: int = 9, full: bool = True,
           errors: tuple[str, ...] = (), time: float = 100.0) -> AgentStatus:
    return AgentStatus(pid=pid, converged=converged, applied_revision=applied, revision=revision, time=time,
                       last_pass=LastPass(full=full, errors=errors, actions=1, writes=0, ms=1.0))


def look(statuses: dict, *, now: float = 100.0, revision: int = 9, alive: dict | None = None) -> converge.Waiting:
    return converge.waiting(statuses, revision=revision, pids={h: s.pid for h, s in statuses.items()},
                            alive=alive or {}, now=now)


def test_every_full_pass_failing_stops_the_wait_with_one_line_per_host():
    w = look({"h1": status(1, errors=(NFT, "more")), "h2": status(2, errors=(NFT,))})
    assert w.failing == {"h1": NFT, "h2": NFT} and not w.behind
    assert w.lines() == [f"h1: {NFT}", f"h2: {NFT}"]
    stop = converge.all_failing(w, hosts=2, revision=9, logs="/run/x/logs")
    assert isinstance(stop, converge.NotConverged) and stop.waiting is w
    assert str(stop).startswith(f"agents cannot converge at revision 9: the full pass of every agent fails — h1, h2: {NFT}")
    assert str(stop).endswith("(agent logs in /run/x/logs)")


def test_some_converged_is_no_reason_to_stop_but_the_failing_ones_are_named():
    w = look({"h1": status(1, converged=True, applied=9), "h2": status(2, errors=(NFT,))})
    assert w.failing == {"h2": NFT}
    assert converge.all_failing(w, hosts=2, revision=9, logs="") is None
    assert w.summary() == f"h2: {NFT}"


def test_an_event_pass_error_or_a_fresh_failure_behind_the_revision_is_not_final():
    event = status(1, full=False, errors=(NFT,))
    fresh = status(2, revision=7, errors=(NFT,), time=99.5)  # its cache lags: another pass is coming
    w = look({"h1": event, "h2": fresh})
    assert not w.failing and set(w.behind) == {"h1", "h2"}
    assert w.behind["h2"] == f"applied revision 0 of 9 (its last pass: {NFT})"
    settled = look({"h2": status(2, revision=7, errors=(NFT,), time=98.0)})  # no new pass for a second
    assert settled.failing == {"h2": NFT}


def test_a_stale_status_of_an_earlier_agent_or_a_dead_agent_is_behind():
    statuses = {"h1": status(1, errors=(NFT,)), "h2": status(2, errors=(NFT,))}
    w = converge.waiting(statuses, revision=9, pids={"h1": 11, "h2": 2}, alive={"h2": False}, now=100.0)
    assert w.behind == {"h1": "no status from its agent yet", "h2": "its agent is not running (see its log)"}
    assert converge.all_failing(w, hosts=2, revision=9, logs="") is None


def test_converged_is_done_and_hosts_with_the_same_error_are_named_together():
    assert look({"h1": status(1, converged=True, applied=9)}).done
    same = look({f"h{i:02}": status(i, errors=(NFT,)) for i in range(8)})
    assert same.summary() == f"h00, h01, h02, h03, h04 and 3 more: {NFT}"
    assert len(same.lines()) == 8  # for people: still one line per host
    many = look({f"h{i:02}": status(i, errors=(f"error {i}",)) for i in range(8)})
    assert many.summary().endswith("; and 3 more") and many.summary().count("error") == converge.SHOWN


def test_wait_is_not_done_by_the_status_an_earlier_agent_left(monkeypatch) -> None:
    """After an agent restart its predecessor's status file says converged until the new
    agent writes one: the wait must not take it."""
    class Proc:
        pid = 11

        def alive(self) -> bool:
            return True

    files = {"h1": status(1, converged=True, applied=9)}  # written by pid 1, now gone
    seen = []

    def wait_for(done, what, **kw):  # type: ignore[no-untyped-def]
        seen.append(done())
        files["h1"] = status(11, converged=True, applied=9)  # the new agent's first pass
        seen.append(done())
    monkeypatch.setattr(converge, "wait_for", wait_for)
    converge.wait({"h1": Proc()}, lambda h: files[h], revision=9, timeout=1.0, logs="")
    assert seen == [False, True]
