"""matplotlib for the PNGs of experiments and benchmarks: an extra (`vxlab[plots]`), so
an agent on a VM, or a deploy/ install, does not pull it in.

`pyplot()` is matplotlib.pyplot with the Agg backend (no display needed), or
`PlotsMissing` whose message is the one line to show: what is missing and the pip
command that installs it. Callers write everything else and say so.
"""

from __future__ import annotations

from typing import Any

MISSING = "no plots: matplotlib is not installed (pip install 'vxlab[plots]')"


class PlotsMissing(RuntimeError):
    """matplotlib cannot be imported; str() is `MISSING`."""


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend; PlotsMissing without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotsMissing(MISSING) from None
    return plt
