"""The machine-wide neighbour-table limits a lab raises while it runs (lab/neigh.py),
on stand-in files: raised once, held by every lab, put back by the last one, and never
put back over someone else's change."""

from __future__ import annotations

from pathlib import Path

import pytest

from vxlab.lab import neigh


@pytest.fixture
def sysctl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    paths = [tmp_path / f"gc_thresh{i}" for i in (1, 2, 3)]
    for p, v in zip(paths, (128, 512, 1024), strict=True):
        p.write_text(f"{v}\n")
    monkeypatch.setattr(neigh, "PATHS", tuple(paths))
    monkeypatch.setattr(neigh, "RECORD", tmp_path / "run" / "vxlab.neigh.json")
    return paths


def lab(tmp_path: Path, name: str) -> Path:
    d = tmp_path / name
    d.mkdir(exist_ok=True)
    (d / "state.json").write_text("{}")
    return d


def test_raised_while_labs_run_and_put_back_by_the_last(sysctl: list[Path], tmp_path: Path) -> None:
    a, b = lab(tmp_path, "a"), lab(tmp_path, "b")
    assert neigh.hold(a).endswith("128/512/1024 -> 8192/32768/65536 while labs run (one table for all namespaces)")
    assert neigh.read() == neigh.LAB_VALUES
    assert neigh.hold(b) == ""  # already raised: held, not raised again
    neigh.release(a)
    assert neigh.read() == neigh.LAB_VALUES  # b still runs
    neigh.release(b)
    assert neigh.read() == (128, 512, 1024) and not neigh.RECORD.exists()


def test_a_lab_gone_without_down_holds_nothing(sysctl: list[Path], tmp_path: Path) -> None:
    a, b = lab(tmp_path, "a"), lab(tmp_path, "b")
    neigh.hold(a)
    neigh.hold(b)
    (a / "state.json").unlink()  # removed without `down`
    neigh.release(b)
    assert neigh.read() == (128, 512, 1024)


def test_never_lowered_and_someone_elses_change_kept(sysctl: list[Path], tmp_path: Path) -> None:
    sysctl[2].write_text("100000\n")
    neigh.hold(lab(tmp_path, "a"))
    assert neigh.read() == (8192, 32768, 100000)
    sysctl[0].write_text("9000\n")  # changed by hand while the lab ran
    neigh.release(tmp_path / "a")
    assert neigh.read() == (9000, 32768, 100000)


def test_high_enough_already_records_nothing(sysctl: list[Path], tmp_path: Path) -> None:
    for p, v in zip(sysctl, neigh.LAB_VALUES, strict=True):
        p.write_text(str(v))
    assert neigh.hold(lab(tmp_path, "a")) == "" and not neigh.RECORD.exists()
    neigh.release(tmp_path / "a")
    assert neigh.read() == neigh.LAB_VALUES
