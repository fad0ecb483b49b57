"""Runs the store contract suite (tests/contract_store.py) on `MemoryStore`."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contract_store import Backend, StoreContract
from vxlab.controller.store_memory import MemoryStore


class TestMemoryStoreContract(StoreContract):
    @pytest.fixture
    def store(self) -> MemoryStore:
        return MemoryStore(progress_interval=0.3)

    @pytest.fixture
    def backend(self, store: MemoryStore) -> Backend:
        async def outage() -> None:
            store.set_available(False)

        async def recover() -> None:
            store.set_available(True)

        return Backend(outage=outage, recover=recover, lease_ttl=1, expiry_timeout=3.0,
                       progress_timeout=2.0)  # fmt: skip
