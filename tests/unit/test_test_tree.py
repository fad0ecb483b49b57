"""The test tree itself: pytest imports test files by basename (rootdir-relative,
no packages), so two test files with the same name in different tiers break the
whole collection on a clean clone (CI stop 19 failed exactly so). Every test file's
basename is unique across the tree."""

from __future__ import annotations

import collections
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_test_file_basenames_are_unique_across_tiers() -> None:
    seen: dict[str, list[str]] = collections.defaultdict(list)
    for path in TESTS.rglob("test_*.py"):
        seen[path.name].append(str(path.relative_to(TESTS)))
    clashes = {name: paths for name, paths in seen.items() if len(paths) > 1}
    assert not clashes, f"test files share a basename (pytest cannot collect both): {clashes}"
