"""The controller: the gRPC API over the desired state kept in etcd.

The servicer (servicer.py) converts requests to calls of the core (core.py with
hosts.py, networks.py, endpoints.py, policies.py, services.py, faults.py), which
validates, allocates atomically (alloc.py, txn.py) and writes through the store
contract (store.py; etcd in store_etcd.py, in memory in store_memory.py). Watch
(watch.py) streams the state to agents; the ops hub (opshub.py) relays ops to them;
server.py runs it all (TLS, authorization in authz.py, health, metrics). It never
imports the agent.
"""
