"""The firewall driver (agent/nft.py) on the real kernel, with each backend: a table
lands in the namespace asked for and nowhere else (not in the caller's, not in a
sibling, not in the test process's), "" is the calling thread's namespace, reads list
only the asked-for tables, replace and delete are whole-table transactions, and a
foreign table is never touched.

Each test works in `vxt<6 hex>…` namespaces, removed also when it fails; the test
tables are named `vxt<6 hex>` too, so looking for them in the machine's own namespace
is safe.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from vxlab import netns
from vxlab.agent.kernel import KernelError
from vxlab.agent.nft import Nft

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)"),
              pytest.mark.skipif(shutil.which("nft") is None, reason="nft is not installed (apt-get install nftables)")]


def nft_in(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = ["nft", *args] if not ns else ["ip", "netns", "exec", ns, "nft", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=20)


@pytest.fixture(params=["libnftables", "nft"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "libnftables" and importlib.util.find_spec("nftables") is None:
        pytest.skip("no nftables module (apt-get install python3-nftables; ./vx setup links it into .venv)")
    return str(request.param)


@pytest.fixture
def spaces() -> Iterator[tuple[str, str, str, str]]:
    """(caller, target, sibling, table name): three plain namespaces and a unique name."""
    tag = "vxt" + secrets.token_hex(3)
    names = [f"{tag}-{x}" for x in ("caller", "target", "sibling")]
    try:
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True)
        yield names[0], names[1], names[2], tag
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], check=False)
        assert tag not in nft_in("", "list", "tables").stdout


def body(name: str, port: int) -> str:
    return (f"table inet {name} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n"
            f"    tcp dport {port} accept\n  }}\n}}\n")


def test_a_table_lands_in_the_namespace_asked_for_only(backend: str, spaces: tuple[str, str, str, str]) -> None:
    caller, target, sibling, name = spaces
    table = ("inet", name)
    assert nft_in(target, "add", "table", "inet", "vxtforeign").returncode == 0

    def inside_caller() -> tuple[str, dict[tuple[str, str], str], dict[tuple[str, str], str]]:
        driver = Nft(backend=backend)
        assert driver.read(target, [table]) == {}
        driver.replace(target, table, body(name, 1))
        driver.replace(target, table, body(name, 2))  # replaced whole, not appended
        driver.replace("", ("inet", name + "c"), body(name + "c", 3))  # "" = this thread's namespace
        return driver.backend, driver.read(target, [table, ("ip", "vxtnone")]), driver.read("", [table])

    used, found, own = netns.run_in(caller, inside_caller)
    assert used == backend
    assert list(found) == [table] and own == {}
    rules = [i["rule"] for i in json.loads(found[table])["nftables"] if "rule" in i]
    assert len(rules) == 1 and rules[0]["expr"][0]["match"]["right"] == 2
    assert f"table inet {name}\n" in nft_in(target, "list", "tables").stdout
    assert f"table inet {name}c\n" in nft_in(caller, "list", "tables").stdout
    assert name not in nft_in(sibling, "list", "tables").stdout
    assert f"table inet {name}\n" not in nft_in(caller, "list", "tables").stdout
    assert name not in nft_in("", "list", "tables").stdout, "a table landed in the test process's namespace"

    def delete() -> None:
        driver = Nft(backend=backend)
        driver.delete(target, table)
        driver.delete(target, table)  # a missing table is no error
        with pytest.raises(KernelError, match="must define that table alone"):
            driver.replace(target, table, body("vxtforeign", 1))
        with pytest.raises(KernelError, match="nft in netns"):
            driver.replace(target, table, f"table inet {name} {{ nonsense }}\n")
    netns.run_in(caller, delete)
    assert name not in nft_in(target, "list", "tables").stdout
    assert "vxtforeign" in nft_in(target, "list", "tables").stdout, "a foreign table was touched"
