"""The controller core: hosts, networks, endpoints, policies, services and watch over one store.

Stateless apart from in-flight reservations and the agents' ops channels connected to
this process (`ops`, opshub.py): any number of controller processes can serve the same
etcd. The gRPC servicer (servicer.py) is a thin edge over this.
"""

from __future__ import annotations

from vxlab.controller.context import Config, Context
from vxlab.controller.endpoints import Endpoints
from vxlab.controller.hosts import Hosts
from vxlab.controller.networks import Networks
from vxlab.controller.opshub import OpsHub
from vxlab.controller.policies import Policies
from vxlab.controller.services import Services
from vxlab.controller.store import Store
from vxlab.controller.watch import Watcher


class Controller:
    def __init__(self, store: Store, config: Config | None = None) -> None:
        self.ctx = Context(store, config or Config())
        self.store = store
        self.networks = Networks(self.ctx)
        self.endpoints = Endpoints(self.ctx)
        self.hosts = Hosts(self.ctx, self.endpoints)
        self.policies = Policies(self.ctx)
        self.services = Services(self.ctx)
        self.watcher = Watcher(self.ctx)
        self.ops = OpsHub()

    async def healthy(self) -> bool:
        """True when the store answers."""
        try:
            await self.store.revision()
        except Exception:
            return False
        return True
