"""vxlab.layout: the names every existing lab and agent already uses, exactly (a change here
would orphan the objects of running labs), and the ownership rule."""

from __future__ import annotations

import hashlib

import pytest

from vxlab.errors import InvalidArgument
from vxlab.layout import DEFAULT_PREFIX, LabLayout, Layout
from vxlab.model import Host


def test_a_labs_names() -> None:
    lab = LabLayout.of_lab("demo")
    assert (lab.prefix, lab.marker, lab.switch_ns) == ("vx-demo.", "vxlab:lab:demo", "vx-demo.sw")
    assert lab.host_ns("h1") == "vx-demo.h1" and lab.agent("h1") == Layout("h1", "vx-demo.h1.")
    assert lab.network_ns("h1", "blue") == "vx-demo.h1.n-blue"
    assert lab.container_ns("h2", "web") == "vx-demo.h2.c-web"
    assert lab.port("h1") == "vxu-" + hashlib.sha1(b"h1").hexdigest()[:8] and len(lab.port("h" * 63)) <= 15
    assert lab.is_container_ns("vx-demo.h2.c-web") and not lab.is_container_ns("vx-demo.h2.n-blue")
    assert lab.owns("vx-demo.sw") and not lab.owns("vx-demo2.sw")  # no lab's prefix is another's


def test_a_lab_name_is_checked() -> None:
    with pytest.raises(InvalidArgument):
        LabLayout.of_lab("a" * 12)
    with pytest.raises(InvalidArgument):
        LabLayout.of_lab("../x")


def test_an_agent_on_a_real_host() -> None:
    me = Layout("vm1")
    assert me.prefix == DEFAULT_PREFIX == "vx-"
    assert (me.network_ns("blue"), me.container_ns("web")) == ("vx-n-blue", "vx-c-web")
    assert (me.network_marker("blue"), me.container_marker("web")) == ("vxlab:vm1:net:blue", "vxlab:vm1:ctr:web")
    assert me.labels() == {"vxlab/netns-prefix": "vx-"}
    assert me.is_network_ns("vx-n-blue") and not me.is_network_ns("vx-c-web")


def test_the_prefix_a_host_registered() -> None:
    assert Layout.of_host(Host("h1", "1.2.3.4", labels={"vxlab/netns-prefix": "vx-l.h1."})).container_ns("c") \
        == "vx-l.h1.c-c"
    assert Layout.of_host(Host("h1", "1.2.3.4")).container_ns("c") == "vx-c-c"


def test_ownership_needs_the_marker_and_the_name_it_gives() -> None:
    me = Layout("h1")
    assert me.owns_ns("vx-n-blue", "vxlab:h1:net:blue")
    assert not me.owns_ns("vx-n-blue", "vxlab:h2:net:blue")  # another host's marker
    assert not me.owns_ns("vx-lab.h1.n-blue", "vxlab:h1:net:blue")  # a lab's host of the same name
    assert not me.owns_ns("vx-n-red", "vxlab:h1:net:blue")  # not the name it gives that network
    assert not me.owns_ns("vx-n-blue", "vxlab:h1:what:blue")
