"""Prometheus metrics of the controller: requests, latency, transaction retries, watchers.

The gRPC interceptor in server.py fills the request metrics; the core counts retries
and watch subscribers. `start_metrics_server` serves them over HTTP (/metrics).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter(
    "vxlab_controller_requests_total", "gRPC requests by method and status code", ["method", "code"]
)
LATENCY = Histogram(
    "vxlab_controller_request_seconds", "gRPC request latency by method", ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
TXN_RETRIES = Counter(
    "vxlab_controller_txn_retries_total", "etcd transactions retried after a conflict", ["kind"]
)
TXN_TOTAL = Counter("vxlab_controller_txn_total", "etcd write transactions committed", ["kind"])
WATCHERS = Gauge("vxlab_controller_watch_subscribers", "open Watch streams")
ETCD_UP = Gauge("vxlab_controller_etcd_up", "1 when the last etcd health probe succeeded")


def start_metrics_server(listen: str) -> tuple[str, int]:
    """Serve /metrics on `listen` ("host:port", port 0 picks one); returns the bound address."""
    host, _, port = listen.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "127.0.0.1")
    bound_host, bound_port = server.server_address[:2]
    return str(bound_host), int(bound_port)
