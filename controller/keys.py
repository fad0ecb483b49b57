"""The etcd key layout, under a versioned prefix (default `/vxlab/v1/`).

    hosts/<host>                 host record (JSON)
    alive/<host>                 present while the host's lease lives (put with the lease)
    networks/<network>           network record (JSON)
    endpoints/<network>/<name>   endpoint record (JSON)
    policies/<network>/<name>    network policy rule (JSON)
    services/<network>/<name>    service (JSON)
    alloc/vni/<vni>              -> network name       (uniqueness of VNIs)
    alloc/ip/<network>/<ip>      -> endpoint name      (uniqueness of addresses; a service's VIP:
                                    `service:<name>`)
    alloc/mac/<network>/<mac>    -> endpoint name      (uniqueness of MACs in a network)
    alloc/alias/<network>/<alias> -> endpoint name     (DNS names: an alias is unique on its
                                                        network among names and aliases; a
                                                        service's name: `service:<name>`)
    alloc/port/<host>/<proto>/<port> -> `<container>@<network>` (a published host port, once
                                                        per host and protocol, whatever the address)
    alloc/publish/<host>/<container> -> network        (the one network a container publishes on)

Every allocation is a compare-and-create of the alloc/ key in the same transaction
as the record it belongs to, so two controllers can never hand out the same value.
Per-network allocations live under a per-network prefix so that deleting a network
is a constant number of operations (etcd caps a transaction at 128 by default).
MACs are unique per network (the L2 domain where they matter); being 46 random
bits, a collision across networks is as good as impossible too.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_PREFIX = "/vxlab/v1/"


@dataclass(frozen=True)
class Keys:
    root: str = DEFAULT_PREFIX

    @property
    def hosts(self) -> str:
        return self.root + "hosts/"

    @property
    def alive(self) -> str:
        return self.root + "alive/"

    @property
    def networks(self) -> str:
        return self.root + "networks/"

    @property
    def endpoints(self) -> str:
        return self.root + "endpoints/"

    @property
    def policies(self) -> str:
        return self.root + "policies/"

    @property
    def services(self) -> str:
        return self.root + "services/"

    def network_services(self, network: str) -> str:
        return f"{self.services}{network}/"

    def service(self, network: str, name: str) -> str:
        return f"{self.services}{network}/{name}"

    def port(self, host: str, protocol: str, port: int) -> str:
        return f"{self.alloc}port/{host}/{protocol}/{port}"

    def publish(self, host: str, container: str) -> str:
        return f"{self.alloc}publish/{host}/{container}"

    def network_policies(self, network: str) -> str:
        return f"{self.policies}{network}/"

    def policy(self, network: str, name: str) -> str:
        return f"{self.policies}{network}/{name}"

    @property
    def alloc(self) -> str:
        return self.root + "alloc/"

    def host(self, name: str) -> str:
        return self.hosts + name

    def alive_key(self, name: str) -> str:
        return self.alive + name

    def network(self, name: str) -> str:
        return self.networks + name

    def network_endpoints(self, network: str) -> str:
        return f"{self.endpoints}{network}/"

    def endpoint(self, network: str, name: str) -> str:
        return f"{self.endpoints}{network}/{name}"

    def vni(self, vni: int) -> str:
        return f"{self.alloc}vni/{vni}"

    def network_ips(self, network: str) -> str:
        return f"{self.alloc}ip/{network}/"

    def ip(self, network: str, ip: str) -> str:
        return f"{self.alloc}ip/{network}/{ip}"

    def network_macs(self, network: str) -> str:
        return f"{self.alloc}mac/{network}/"

    def mac(self, network: str, mac: str) -> str:
        return f"{self.alloc}mac/{network}/{mac}"

    def network_aliases(self, network: str) -> str:
        return f"{self.alloc}alias/{network}/"

    def alias(self, network: str, alias: str) -> str:
        return f"{self.alloc}alias/{network}/{alias}"

    def classify(self, key: str) -> tuple[str, list[str]]:
        """('hosts'|'alive'|'networks'|'endpoints'|'policies'|'services'|'alloc'|'', path parts after it)."""
        if not key.startswith(self.root):
            return "", []
        kind, _, rest = key[len(self.root):].partition("/")
        return kind, rest.split("/") if rest else []
