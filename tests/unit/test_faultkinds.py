"""The registry of fault kinds (vxlab.faultkinds): validation with field names, the
string form of the API, targets, claims, the duration rule, and the CLI help."""

from __future__ import annotations

import pytest

from vxlab import faultkinds as fk
from vxlab.errors import FailedPrecondition, InvalidArgument

HOSTS = {"h1", "h2", "h3"}


@pytest.mark.parametrize("kind, params, field, reason", [
    ("wobble", {}, "fault.kind", "unknown fault kind 'wobble'"),
    ("loss", {"host": "h1", "percent": "130"}, "fault.params.percent", "must be > 0 and <= 100, not '130'"),
    ("loss", {"host": "h1", "percent": "nan"}, "fault.params.percent", "must be > 0 and <= 100, not 'nan'"),
    ("loss", {"host": "h1"}, "fault.params.percent", "loss needs it"),
    ("loss", {"host": "h1", "percent": "5", "color": "red"}, "fault.params.color", "not a parameter of loss"),
    ("partition", {"hosts": "h1", "from": "control,h1"}, "fault.params.from", "'h1' is on both sides"),
    ("partition", {"hosts": "h1", "from": "h2", "oneway": "maybe"}, "fault.params.oneway", "true or false"),
    ("link-down", {"host": "h9"}, "fault.params.host", "unknown host 'h9' (hosts: h1, h2, h3)"),
    ("link-down", {"host": "control"}, "fault.params.host", "unknown host 'control'"),
    ("etcd-member-kill", {"member": "1.5"}, "fault.params.member", "a whole number"),
])
def test_bad_params_name_the_field(kind: str, params: dict[str, str], field: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        fk.validate(kind, params, hosts=HOSTS)
    assert info.value.field == field and reason in info.value.reason


def test_the_string_form_round_trips() -> None:
    p = fk.validate("partition", {"hosts": "h2,h1", "from": ["control"]}, hosts=HOSTS)
    wire = fk.encode("partition", p)
    assert wire == {"hosts": "h1,h2", "from": "control", "oneway": "false"}
    assert fk.decode("partition", wire) == p
    d = fk.validate("delay", {"host": "h1", "ms": 12.5}, hosts=HOSTS)
    assert fk.encode("delay", d) == {"host": "h1", "ms": "12.5", "jitter_ms": "0", "direction": "egress"}
    assert fk.decode("delay", fk.encode("delay", d)) == d


def test_targets_leave_the_control_plane_out() -> None:
    p = fk.validate("partition", {"hosts": "h3,h1", "from": "control"}, hosts=HOSTS)
    assert fk.KINDS["partition"].targets(p) == ["h1", "h3"]
    q = fk.validate("partition", {"hosts": "h1", "from": "h2"}, hosts=HOSTS)
    assert fk.KINDS["partition"].targets(q) == ["h1", "h2"]
    assert fk.KINDS["rate"].targets(fk.validate("rate", {"host": "h2", "mbit": 1}, hosts=HOSTS)) == ["h2"]


@pytest.mark.parametrize("kind, params", [
    ("link-down", {"host": "h1"}), ("host-crash", {"host": "h1"}), ("loss", {"host": "h1", "percent": 100}),
    ("partition", {"hosts": "h1", "from": "control"})])
def test_faults_that_can_cut_the_control_plane_need_a_duration(kind: str, params: dict[str, object]) -> None:
    p = fk.validate(kind, params, hosts=HOSTS)
    with pytest.raises(InvalidArgument, match="^fault.duration: .*could never hear the heal"):
        fk.check_duration(kind, p, 0.0)
    fk.check_duration(kind, p, 4.0)
    fk.check_duration("loss", fk.validate("loss", {"host": "h1", "percent": 99}, hosts=HOSTS), 0.0)
    for bad in (-1.0, float("inf"), float("nan"), fk.DURATION_MAX + 1):
        with pytest.raises(InvalidArgument, match="^fault.duration: "):
            fk.check_duration("loss", fk.validate("loss", {"host": "h1", "percent": 5}, hosts=HOSTS), bad)


def test_claims_conflict_across_kinds() -> None:
    down = fk.validate("link-down", {"host": "h2"}, hosts=HOSTS)
    crash = fk.validate("host-crash", {"host": "h2"}, hosts=HOSTS)
    with pytest.raises(FailedPrecondition, match="^host-crash: conflicts with active fault f1 .link-down h2. on "
                                                 "the link of h2; heal it first$"):
        fk.conflict("host-crash", crash, [("f1", "link-down", down)])
    egress = fk.validate("rate", {"host": "h1", "mbit": 5, "direction": "egress"}, hosts=HOSTS)
    fk.conflict("rate", fk.validate("rate", {"host": "h1", "mbit": 5, "direction": "ingress"}, hosts=HOSTS),
                [("f1", "rate", egress)])  # the other side is free
    with pytest.raises(FailedPrecondition, match="egress qdisc of h1"):
        fk.conflict("delay", fk.validate("delay", {"host": "h1", "ms": 5}, hosts=HOSTS), [("f1", "rate", egress)])


def test_where_kinds_run_and_their_help() -> None:
    assert {k for k, v in fk.KINDS.items() if v.runs == fk.AGENT} == {"partition", "loss", "rate", "delay",
                                                                       "link-down"}
    assert {k for k, v in fk.KINDS.items() if v.runs == fk.HOST} == {"agent-kill", "host-crash"}
    assert fk.KINDS["loss"].usage() == "loss --host H --percent N [--direction D]"
    assert "partition --hosts A[,B] --from A[,B] [--oneway]" in fk.kinds_help()
    assert "percent of packets dropped" in fk.option_help("percent")
    assert fk.option_help("host").startswith("The host (loss, rate")


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("500ms", 0.5), ("2m", 120), ("1.5", 1.5), (3, 3)])
def test_durations(text: object, seconds: float) -> None:
    assert fk.parse_duration(text) == seconds
    with pytest.raises(InvalidArgument, match="^for: not a duration"):
        fk.parse_duration("soon")
