"""The agent: one per host, it makes this host's kernel match the controller's desired state.

It registers the host and keeps its lease (runner.py), follows the controller's Watch
into a cache of the desired state (cache.py), plans what the kernel lacks or has too
much of (desired.py, plan.py) and applies it through one kernel contract (kernel.py;
the real driver is netlink*.py with pyroute2, the firewall tables nft.py). It also
runs the embedded DNS (dns*.py), the host faults (fault*.py, hostfaults.py) and the
ops the controller's callers send it (ops*.py). It talks to the controller only through
vxlab.client; it never imports the controller.
"""
