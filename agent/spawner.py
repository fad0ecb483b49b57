"""A zygote for agents: import everything once, then fork one agent per host.

Starting a Python agent costs about a second of CPU, almost all of it imports (grpc,
pyroute2, asyncio); a lab of 100 hosts would spend a minute just on that on 2 cores.
`python -m vxlab.agent.spawner` imports the agent once, reads one JSON request per line
on stdin (a vxlab.agentconfig.Launch: `{"agent": <the [agent] table of the agent's
options>, "netns", "log", "nice"}`), forks a child for each — the child enters the host's
network namespace, starts a session of its own, and runs exactly what `vxlab agent run`
runs — and answers
`{"pid": N}` on stdout. Each agent is still its own process, killable on its own; the
spawner exits when stdin closes. No thread or channel exists before a fork.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import sys
from typing import Any

from vxlab import netns
from vxlab.agent.faultrun import AgentExit
from vxlab.agent.netlink import NetlinkKernel
from vxlab.agent.runner import Agent
from vxlab.agentconfig import Launch


def _child(req: dict[str, Any]) -> int:
    os.setsid()
    launch = Launch.from_json(req)
    log = os.open(launch.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    netns.enter(launch.netns)
    if launch.nice:
        os.nice(launch.nice)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", force=True)
    try:
        asyncio.run(Agent(launch.config, NetlinkKernel).run())
    except AgentExit as e:  # an agent-kill or host-crash fault
        logging.warning("agent %s: %s; exit code %d", launch.config.host, e, e.code)
        return e.code
    return 0


def spawn(req: dict[str, Any]) -> int:
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = _child(req)
        except BaseException:  # noqa: BLE001 - report and leave without running the parent's code
            logging.exception("agent %s failed", (req.get("agent") or {}).get("host"))
        finally:
            os._exit(code)
    return pid


def main() -> None:
    """Arguments are ignored: a caller may name what the agents belong to (the lab runner
    passes `--for <lab dir>`), so that its cleanup finds them by their command line.

    Everything imported so far is moved out of the collector's sight before forking:
    children then neither scan it in their collections (the agent collects once after
    its first pass) nor write to its pages (copy-on-write stays shared)."""
    gc.collect()
    gc.freeze()
    for line in sys.stdin:
        if line.strip():
            print(json.dumps({"pid": spawn(json.loads(line))}), flush=True)


if __name__ == "__main__":
    main()
