"""What every part of the controller shares: the store, the key layout and the config."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field

from vxlab import validate
from vxlab.controller.alloc import DEFAULT_POOL, DEFAULT_PREFIX
from vxlab.controller.keys import DEFAULT_PREFIX as DEFAULT_KEY_PREFIX
from vxlab.controller.keys import Keys
from vxlab.controller.store import Store
from vxlab.errors import InvalidArgument


@dataclass(frozen=True)
class Config:
    lease_ttl: int = 5                   # seconds a host stays alive without a keepalive
    subnet_pool: str = DEFAULT_POOL      # where networks without a subnet get one
    subnet_prefix: int = DEFAULT_PREFIX  # the prefix length of those subnets
    key_prefix: str = DEFAULT_KEY_PREFIX

    def __post_init__(self) -> None:
        pool = validate.subnet(self.subnet_pool, field="subnet_pool")
        if not pool.prefixlen <= self.subnet_prefix <= validate.PREFIX_MAX:
            raise InvalidArgument(
                "subnet_prefix", f"/{self.subnet_prefix} must lie between the pool's /{pool.prefixlen}"
                f" and /{validate.PREFIX_MAX}")
        if self.lease_ttl < 1:
            raise InvalidArgument("lease_ttl", "must be at least 1 second")

    def pool(self) -> ipaddress.IPv4Network:
        return ipaddress.IPv4Network(self.subnet_pool)


@dataclass
class Context:
    store: Store
    config: Config = field(default_factory=Config)

    def __post_init__(self) -> None:
        self.keys = Keys(self.config.key_prefix)


def now() -> str:
    """The current time, RFC 3339 in UTC with microseconds."""
    return dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z")
