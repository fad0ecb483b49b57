"""Unit tests are hermetic: no lab running on this machine changes what the CLI selects."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_labs(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.setenv("VXLAB_RUN", str(tmp_path_factory.mktemp("run")))
    monkeypatch.delenv("VXLAB_CONTROLLER", raising=False)
    monkeypatch.delenv("VXLAB_LAB", raising=False)
