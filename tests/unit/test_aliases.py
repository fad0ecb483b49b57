"""Endpoint aliases in the controller (in-memory store): validated like names, unique on
a network among names and aliases (the create and update transactions refuse a clash
with one line naming the field, writing nothing), freed by delete and by the network's
delete, carried over the wire."""

from __future__ import annotations

from typing import Any

import pytest

from vxlab import wire
from vxlab.controller.context import Config
from vxlab.controller.core import Controller
from vxlab.controller.store_memory import MemoryStore
from vxlab.errors import AlreadyExists, InvalidArgument
from vxlab.model import Endpoint, Host, Network


@pytest.fixture
async def ctl():
    store = MemoryStore(progress_interval=0.2)
    c = Controller(store, Config(lease_ttl=5))
    await c.hosts.register(Host(name="h1", underlay_ip="172.30.0.11"))
    for name, subnet in (("blue", "10.10.0.0/24"), ("red", "10.20.0.0/24")):
        await c.networks.create(Network(name=name, subnet=subnet))
    await c.endpoints.create(Endpoint(name="db", network="blue", host="h1", aliases=("database", "pg")))
    yield c
    await store.close()


async def refused(ctl: Controller, coro: Any, exc: type[Exception]) -> str:
    before = await ctl.store.revision()
    with pytest.raises(exc) as info:
        await coro
    assert await ctl.store.revision() == before, "a refused request wrote something"
    message = str(info.value)
    assert "\n" not in message
    return message


async def test_aliases_are_stored_and_go_over_the_wire(ctl: Controller) -> None:
    ep = await ctl.endpoints.get("blue", "db")
    assert ep.aliases == ("database", "pg")
    assert wire.endpoint_from_pb(wire.endpoint_to_pb(ep)) == ep


@pytest.mark.parametrize("aliases, field, why", [
    (("Bad_Alias",), "endpoint.aliases[0]", "not a valid name"),
    (("ok", "x" * 33), "endpoint.aliases[1]", "longer than 32"),
    (("cache", "cache"), "endpoint.aliases[1]", "given twice"),
    (("web",), "endpoint.aliases[0]", "own name"),
    (tuple(f"a{i}" for i in range(17)), "endpoint.aliases", "at most 16"),
])
async def test_bad_aliases_name_the_field(ctl: Controller, aliases: tuple[str, ...], field: str, why: str) -> None:
    message = await refused(ctl, ctl.endpoints.create(Endpoint(name="web", network="blue", host="h1",
                                                               aliases=aliases)), InvalidArgument)
    assert message.startswith(f"{field}: ") and why in message


async def test_an_alias_is_unique_on_its_network(ctl: Controller) -> None:
    # another container's alias, another container's name, and a name that is an alias
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="web", network="blue", host="h1",
                                                           aliases=("cache", "pg"))), AlreadyExists)
    assert msg == "endpoint.aliases[1]: 'pg' is already an alias of container 'db' on network 'blue'"
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="web", network="blue", host="h1",
                                                           aliases=("db",))), AlreadyExists)
    assert msg == "endpoint.aliases[0]: 'db' is already the name of container 'db' on network 'blue'"
    msg = await refused(ctl, ctl.endpoints.create(Endpoint(name="database", network="blue", host="h1")),
                        AlreadyExists)
    assert msg == "endpoint.name: 'database' is already an alias of container 'db' on network 'blue'"
    # on another network the same names are free
    ep = await ctl.endpoints.create(Endpoint(name="database", network="red", host="h1", aliases=("pg",)))
    assert ep.aliases == ("pg",)


async def test_update_changes_aliases_and_frees_the_old_ones(ctl: Controller) -> None:
    await ctl.endpoints.create(Endpoint(name="web", network="blue", host="h1"))
    msg = await refused(ctl, ctl.endpoints.update(Endpoint(name="web", network="blue", host="", aliases=("pg",)),
                                                  fields=["aliases"]), AlreadyExists)
    assert msg.startswith("endpoint.aliases[0]: 'pg' is already an alias of container 'db'")
    ep = await ctl.endpoints.update(Endpoint(name="db", network="blue", host="", aliases=("pg", "main")), fields=["aliases"])
    assert ep.aliases == ("pg", "main")
    ep = await ctl.endpoints.update(Endpoint(name="web", network="blue", host="", aliases=("database",)), fields=["aliases"])
    assert ep.aliases == ("database",)  # freed by db's update
    rev = await ctl.store.revision()
    await ctl.endpoints.update(Endpoint(name="web", network="blue", host="", aliases=("database",)), fields=["aliases"])
    assert await ctl.store.revision() == rev  # nothing changed: nothing written
    await refused(ctl, ctl.endpoints.update(Endpoint(name="web", network="blue", host="", aliases=("-x",)),
                                            fields=["aliases"]), InvalidArgument)


async def test_delete_frees_aliases(ctl: Controller) -> None:
    await ctl.endpoints.delete("blue", "db")
    ep = await ctl.endpoints.create(Endpoint(name="pg", network="blue", host="h1", aliases=("database",)))
    assert ep.aliases == ("database",)
    await ctl.networks.delete("blue", force=True)
    kvs, _ = await ctl.store.range(ctl.endpoints.keys.network_aliases("blue"))
    assert not kvs
