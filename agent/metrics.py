"""Prometheus metrics of the agent: reconcile time, netlink writes, revision, entries,
and the data-plane programming latency (Watch event received -> kernel programmed)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_FAST = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

RECONCILE_SECONDS = Histogram("vxlab_agent_reconcile_seconds", "duration of a reconcile pass", ["kind"], buckets=_FAST)
NETLINK_OPS = Counter("vxlab_agent_netlink_ops_total", "netlink writes by kernel operation", ["op"])
LAST_REVISION = Gauge("vxlab_agent_last_applied_revision", "controller revision last programmed into the kernel")
FDB_ENTRIES = Gauge("vxlab_agent_fdb_entries", "static FDB entries for remote endpoints")
NEIGH_ENTRIES = Gauge("vxlab_agent_neigh_entries", "permanent neighbour entries for remote endpoints")
PROGRAMMING_LATENCY = Histogram(
    "vxlab_agent_programming_latency_seconds", "Watch event received -> kernel programmed", buckets=_FAST)
ERRORS = Counter("vxlab_agent_errors_total", "failed kernel operations and control-plane errors", ["where"])
