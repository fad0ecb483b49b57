"""A pytest fixture for your own experiments: a whole vxlab lab per test.

    import pytest

    @pytest.mark.vxlab_topology("examples/quickstart.yaml")
    def test_web_reaches_db(vxlab_lab):
        assert vxlab_lab.exec("web", "ping", "-c1", "10.10.0.3").returncode == 0
        assert vxlab_lab.check().ok

The lab is brought up before the test and torn down after it, also when the test fails.
`name=` in the marker overrides the topology's lab name (to run next to another lab).
Needs root, like every lab. Registered as a pytest plugin (entry point `vxlab`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vxlab.lab.lab import Lab


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "vxlab_topology(path, name=None): the topology file for vxlab_lab")


@pytest.fixture
def vxlab_lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    marker = request.node.get_closest_marker("vxlab_topology")
    if marker is None or not marker.args:
        raise pytest.UsageError("vxlab_lab needs @pytest.mark.vxlab_topology('path/to/topology.yaml')")
    lab = Lab.from_file(marker.args[0], name=marker.kwargs.get("name"))
    try:
        lab.up(lab.topology)  # type: ignore[arg-type]
        yield lab
    finally:
        lab.down()
