"""`vxlab network update` against the fake client of test_cli.py: only the options
given go into the update's mask, and a refusal is one `error:` line."""

from __future__ import annotations

from dataclasses import replace

import pytest

from test_cli import FakeClient, fake, run  # noqa: F401 - `fake` is the fixture

from vxlab.errors import InvalidArgument
from vxlab.model import Network


@pytest.fixture
def updates(fake: FakeClient) -> list[tuple[Network, tuple[str, ...]]]:  # noqa: F811
    seen: list[tuple[Network, tuple[str, ...]]] = []

    async def update_network(net: Network, *, fields: tuple[str, ...] = ()) -> Network:
        fake._check()
        seen.append((net, tuple(fields)))
        cur = next(n for n in fake.networks if n.name == net.name)
        return replace(cur, **{f: getattr(net, f) for f in fields})
    fake.update_network = update_network  # type: ignore[attr-defined]
    return seen


def test_only_the_options_given_are_changed(fake: FakeClient, updates: list) -> None:  # noqa: F811
    result = run("network", "update", "front", "--mtu", "1300")
    assert result.exit_code == 0, result.output
    assert updates == [(Network("front", mtu=1300), ("mtu",))]
    assert "1300" in result.stdout and "front" in result.stdout
    run("network", "update", "back", "--external", "--gateway", "", "--label", "a=b")
    assert updates[1] == (Network("back", gateway="", internal=False, labels={"a": "b"}),
                          ("gateway", "internal", "labels"))
    run("network", "update", "front", "--clear-labels")
    assert updates[2] == (Network("front", labels={}), ("labels",))


def test_nothing_to_change_and_refusals_are_one_line(fake: FakeClient, updates: list) -> None:  # noqa: F811
    result = run("network", "update", "front")
    assert result.exit_code == 1 and result.stderr.startswith("error: update: nothing to change") and not updates
    fake.fail = InvalidArgument("network.mtu", "100 is out of range 576..9216 (0 = automatic)")
    result = run("network", "update", "front", "--mtu", "100")
    assert result.exit_code == 1 and result.stderr == "error: network.mtu: 100 is out of range 576..9216 (0 = automatic)\n"
