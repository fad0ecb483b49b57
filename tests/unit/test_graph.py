"""The overlay picture (vxlab.lab.graph): DOT source from a small model, and rendering
to .dot, .svg (when Graphviz is installed) and an unsupported suffix. No root needed.
"""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from vxlab.lab import graph
from vxlab.lab.graph import GraphError, render, to_dot
from vxlab.model import Endpoint, Host, Network

HOSTS = [Host("h2", "172.30.0.12", alive=False), Host("h1", "172.30.0.11", alive=True)]
NETWORKS = [Network("red", subnet="10.20.0.0/24", vni=4098, internal=True),
            Network("blue", subnet="10.10.0.0/24", vni=4097)]
ENDPOINTS = [
    Endpoint("web", "red", "h1", "10.20.0.2"),
    Endpoint("web", "blue", "h1", "10.10.0.2"),
    Endpoint("db", "red", "h2", "10.20.0.3"),
]
BLUE, RED = graph.PALETTE[0], graph.PALETTE[1]  # colours go to networks in name order


@pytest.fixture
def dot() -> str:
    return to_dot(HOSTS, NETWORKS, ENDPOINTS, title="lab demo · revision 7")


def _statement(dot: str, start: str) -> str:
    """The one line of the DOT source that starts with `start` (after indentation)."""
    lines = [line.strip() for line in dot.splitlines() if line.strip().startswith(start)]
    assert len(lines) == 1, (start, lines)
    return lines[0]


def test_deterministic_whatever_the_input_order(dot: str) -> None:
    again = to_dot(list(reversed(HOSTS)), list(reversed(NETWORKS)), list(reversed(ENDPOINTS)),
                   title="lab demo · revision 7")
    assert again == dot
    assert dot.startswith("digraph vxlab {") and dot.endswith("}\n")
    assert "rankdir=LR" in dot and 'style="rounded,filled"' in dot
    assert "lab demo · revision 7" in dot


def test_one_cluster_per_host_alive_green_dead_grey_dashed(dot: str) -> None:
    assert dot.count("subgraph cluster_") == 2
    h1 = dot.split("subgraph cluster_h1 {")[1].split("}")[0]
    h2 = dot.split("subgraph cluster_h2 {")[1].split("}")[0]
    assert "172.30.0.11" in h1 and "alive" in h1 and graph.ALIVE["color"] in h1 and "dashed" not in h1
    assert "172.30.0.12" in h2 and "dead" in h2 and graph.DEAD["color"] in h2
    assert 'style="rounded,filled,dashed"' in h2
    assert "ctr_h1__web" in h1 and "ctr_h2__db" in h2  # containers sit inside their host


def test_vm_hosts_are_square_blue_and_say_how_they_run() -> None:
    dot = to_dot(HOSTS, NETWORKS, ENDPOINTS, title="t", vms={"h1": "tcg", "h2": ""})
    h1 = dot.split("subgraph cluster_h1 {")[1].split("}")[0]
    h2 = dot.split("subgraph cluster_h2 {")[1].split("}")[0]
    assert "VM (TCG) · 172.30.0.11" in h1 and graph.VM_ALIVE["color"] in h1 and 'style="filled"' in h1
    assert "penwidth=3" in h1 and "rounded" not in h1
    assert "VM · 172.30.0.12" in h2 and graph.DEAD["color"] in h2 and 'style="filled,dashed"' in h2
    assert "VM" not in to_dot(HOSTS, NETWORKS, ENDPOINTS, title="t")


def test_multi_homed_container_is_one_node_listing_each_network(dot: str) -> None:
    web = _statement(dot, "ctr_h1__web [")
    assert "<b>web</b>" in web
    assert re.search(r"blue</font>: 10\.10\.0\.2", web) and re.search(r"red</font>: 10\.20\.0\.2", web)
    assert _statement(dot, "ctr_h1__web -> net_blue") == f'ctr_h1__web -> net_blue [color="{BLUE}"];'
    assert _statement(dot, "ctr_h1__web -> net_red") == f'ctr_h1__web -> net_red [color="{RED}"];'


def test_networks_outside_hosts_with_subnet_vni_internal(dot: str) -> None:
    outside = dot.split("// networks")[1]
    blue, red = _statement(outside, "net_blue ["), _statement(outside, "net_red [")
    assert "10.10.0.0/24 · VNI 4097" in blue and "internal" not in blue and f'color="{BLUE}"' in blue
    assert "10.20.0.0/24 · VNI 4098 · internal" in red and "peripheries=2" in red
    assert "{ rank=same; net_blue; net_red; }" in dot


def test_dead_host_greys_its_container_and_edges(dot: str) -> None:
    db = _statement(dot, "ctr_h2__db [")
    assert f'color="{graph.GREY}"' in db and "dashed" in db
    assert _statement(dot, "ctr_h2__db -> net_red") == f'ctr_h2__db -> net_red [color="{graph.GREY}", style=dashed];'


def test_labels_are_escaped_and_odd_names_get_safe_ids() -> None:
    dot = to_dot([Host('a"b<c>', "10.0.0.1", alive=True)], [Network("x&y")],
                 [Endpoint("w-1", "x&y", 'a"b<c>', "1.2.3.4")], title="<t> & \"q\"")
    assert "&lt;t&gt; &amp; &quot;q&quot;" in dot and "a&quot;b&lt;c&gt;" in dot and "x&amp;y" in dot
    assert '<c>' not in dot and 'a"b' not in dot
    ids = re.findall(r"^\s*(\w+) \[", dot, flags=re.MULTILINE)
    assert any(i.startswith("ctr_a_b_c___w_1_") for i in ids)


def test_empty_host_and_unknown_references_still_drawn() -> None:
    dot = to_dot([Host("h1", "10.0.0.1", alive=True), Host("h3", "10.0.0.3", alive=True)], [],
                 [Endpoint("web", "gone", "h9", "")], title="t")
    assert "subgraph cluster_h3" in dot and "no containers" in dot  # Graphviz drops empty clusters
    assert "subgraph cluster_h9" in dot and "dead" in dot.split("cluster_h9")[1].split("}")[0]
    assert "unknown network" in _statement(dot, "net_gone [") and "no ip" in dot


def test_render_dot_writes_the_source(tmp_path: Path, dot: str) -> None:
    out = render(dot, tmp_path / "overlay.dot")
    assert out == tmp_path / "overlay.dot" and out.read_text() == dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' is not installed (apt-get install graphviz)")
def test_render_svg_parses_and_names_the_containers(tmp_path: Path, dot: str) -> None:
    out = render(dot, tmp_path / "overlay.SVG")
    root = ET.fromstring(out.read_bytes())
    assert root.tag.endswith("svg")
    text = " ".join(t for t in root.itertext())
    assert "web" in text and "db" in text and "blue" in text and "10.20.0.3" in text


def test_unknown_suffix_names_the_allowed_ones(tmp_path: Path, dot: str) -> None:
    with pytest.raises(GraphError) as info:
        render(dot, tmp_path / "overlay.jpg")
    assert ".svg" in str(info.value) and ".png" in str(info.value) and ".dot" in str(info.value)
    assert not (tmp_path / "overlay.jpg").exists()


def test_missing_graphviz_is_one_clear_error(tmp_path: Path, dot: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    with pytest.raises(GraphError, match=r"^graph: Graphviz 'dot' is not installed \(apt-get install graphviz\)$"):
        render(dot, tmp_path / "overlay.png")
    assert render(dot, tmp_path / "overlay.dot").exists()  # the source needs no Graphviz


def test_unwritable_target_is_a_graph_error(tmp_path: Path, dot: str) -> None:
    with pytest.raises(GraphError, match="cannot write"):
        render(dot, tmp_path / "missing-dir" / "overlay.dot")
