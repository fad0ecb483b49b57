"""vxlab: a multi-host VXLAN overlay lab — controller, agent, lab runner and CLI.

`from vxlab import Lab` is the Python API of the lab (imported on first use, so
`import vxlab.model` and friends stay light).
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab"]


def __getattr__(name: str) -> Any:
    if name == "Lab":
        from vxlab.lab.lab import Lab

        return Lab
    raise AttributeError(f"module 'vxlab' has no attribute {name!r}")
