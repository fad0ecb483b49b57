"""Fuzzing with hypothesis, CI-sized: every RPC (arbitrary values in every field) gets
a clean answer and a rejected one writes nothing; the topology and scenario parsers
raise only their own one-line errors. The soak run is `vxlab fuzz --examples 10000`;
`VXLAB_FUZZ_EXAMPLES` changes the count here."""

from __future__ import annotations

import os

import pytest

from vxlab.testing import fuzz

EXAMPLES = {"rpc": 400, "topology": 300, "scenario": 150}


@pytest.mark.parametrize("target", sorted(fuzz.TARGETS))
def test_fuzz(target: str) -> None:
    n = int(os.environ.get("VXLAB_FUZZ_EXAMPLES", EXAMPLES[target]))
    stats = fuzz.TARGETS[target](n, derandomize=True)
    assert sum(stats.values()) >= n


def test_rpc_fuzzing_reaches_past_validation() -> None:
    """Not only rejections: plausible requests create hosts, networks, endpoints, policies.
    Fuzzed among the creating RPCs alone, so every RPC added to the API does not thin them
    out (the full mix is `test_fuzz[rpc]`)."""
    creates = frozenset({"RegisterHost", "CreateNetwork", "CreateEndpoint", "CreatePolicy"})
    stats = fuzz.run_rpcs(300, derandomize=True, only=creates)
    assert {f"{name} OK" for name in creates} <= set(stats), stats
    assert "INTERNAL" not in " ".join(stats)


def test_a_broken_property_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(examples: int, **_: object) -> dict[str, int]:
        raise AssertionError("CreateNetwork failed (INVALID_ARGUMENT) but wrote to the store")
    monkeypatch.setitem(fuzz.TARGETS, "rpc", boom)
    lines: list[str] = []
    assert fuzz.soak(5, targets=["rpc"], out=lines.append) == 1
    assert lines[0].startswith("rpc: FAILED") and lines[-1] == "fuzz: FAILED"
