"""Topology and scenario files are YAML 1.2 (vxlab.lab.yamlfile), and every error in a file
names it with line, column and YAML path: `lab.yaml:5:10: networks[0].mtu: …`. Config
files are TOML, which refuses a leading zero by itself. No root needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vxlab import config
from vxlab.cli import main
from vxlab.errors import InvalidArgument
from vxlab.lab import scenario
from vxlab.lab.topology import TopologyError, from_mapping, load, parse

MTU = "name: t\nhosts: 2\nnetworks:\n  - name: blue\n    mtu: {}\n"  # the value starts at 5:10


def _error(text: str, source: str = "lab.yaml") -> str:
    with pytest.raises(TopologyError) as info:
        parse(text, source=source)
    assert "\n" not in str(info.value)
    return str(info.value)


# --- numbers ---------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["1400", "+1400", "0o2570", "0x578"])
def test_yaml12_integers(text: str) -> None:
    assert parse(MTU.format(text)).networks[0].mtu == 1400


@pytest.mark.parametrize("text, message", [
    # YAML 1.1 reads 01400 as octal 768 (with MTU 768 a lab never converged), YAML 1.2 as
    # 1400: either silent choice is wrong for someone, so it is refused
    ("01400", "networks[0].mtu: 01400 has a leading zero (YAML 1.1 would read it as octal 768);"
              " write 1400, or '01400' for a string"),
    ("09000", "networks[0].mtu: 09000 has a leading zero (YAML 1.1 would read it as a string);"
              " write 9000, or '09000' for a string"),
    # YAML 1.1-only numbers are strings in YAML 1.2: never base 60, no separators, no 0b
    ("23:20", "networks[0].mtu: expected an integer, got str (23:20 is a string in YAML 1.2;"
              " YAML 1.1 would read it as 1400)"),
    ("1_400", "networks[0].mtu: expected an integer, got str (1_400 is a string in YAML 1.2;"
              " YAML 1.1 would read it as 1400)"),
    ("0b10101111000", "networks[0].mtu: expected an integer, got str (0b10101111000 is a string in"
                      " YAML 1.2; YAML 1.1 would read it as 1400)"),
    ("!!int 1_400", "networks[0].mtu: '1_400' is not a YAML 1.2 integer"),
])
def test_yaml11_numbers_are_refused_where_they_stand(text: str, message: str) -> None:
    assert _error(MTU.format(text)) == f"lab.yaml:5:10: {message}"


def test_a_leading_zero_is_refused_anywhere() -> None:
    assert _error("name: t\nhosts: 010\n") == ("lab.yaml:2:8: hosts: 010 has a leading zero (YAML 1.1 would read"
                                               " it as octal 8); write 10, or '010' for a string")
    labels = "name: t\nhosts: 1\nnetworks: [{name: blue, labels: {zip: 01234}}]\n"
    assert _error(labels).startswith("lab.yaml:3:39: networks[0].labels.zip: 01234 has a leading zero")
    assert parse(labels.replace("01234", "'01234'")).networks[0].labels == {"zip": "01234"}


def test_what_yaml11_reads_as_numbers_dates_or_booleans_are_strings() -> None:
    t = parse("name: t\nhosts: 1\nnetworks:\n  - name: blue\n    labels: {a: 22:30, b: 1_000, c: 0b1,"
              " d: 2024-01-01, e: off, f: yes, g: 1:30.5}\n")
    assert t.networks[0].labels == {"a": "22:30", "b": "1_000", "c": "0b1", "d": "2024-01-01", "e": "off",
                                    "f": "yes", "g": "1:30.5"}
    assert _error(MTU.format("1400").replace("mtu: 1400", "internal: !!bool yes")) == \
        "lab.yaml:5:15: networks[0].internal: 'yes' is not true or false"


def test_no_merge_keys() -> None:
    """`<<` is an ordinary key in YAML 1.2; 1.1 would have merged it silently."""
    text = "name: t\nhosts: 1\nnetworks:\n  - &n {name: blue, mtu: 1400}\n  - {<<: *n, name: red}\n"
    assert _error(text) == "lab.yaml:5:6: networks[1].<<: unknown key"


def test_aliases_are_walked_once() -> None:
    """Nine levels of nine aliases are 9^9 paths; the positions walk each node once."""
    lines = ["name: t", "hosts: 1", "x0: &x0 [a, b, c, d, e, f, g, h, i]"]
    lines += [f"x{i}: &x{i} [{', '.join([f'*x{i - 1}'] * 9)}]" for i in range(1, 9)]
    assert _error("\n".join(lines) + "\n") == "lab.yaml:3:1: x0: unknown key"


# --- positions -------------------------------------------------------------------------

LAB = """\
name: t
hosts: 2
networks:
  - name: blue
    subnet: 10.10.0.0/24
    colour: red
"""


@pytest.mark.parametrize("text, message", [
    (LAB, "lab.yaml:6:5: networks[0].colour: unknown key"),  # an unknown key: the key
    (LAB.replace("    colour: red\n", "    mtu: 100\n"),  # a bad value: the value
     "lab.yaml:6:10: networks[0].mtu: 100 is out of range 576..9216 (0 = automatic)"),
    (LAB.replace("  - name: blue\n", "  - vni: 7\n").replace("    colour: red\n", ""),  # absent: its mapping
     "lab.yaml:4:5: networks[0].name: required"),
    (LAB.replace("    colour: red\n", "    subnet: 10.20.0.0/24\n"), "lab.yaml:6:5: networks[0].subnet: duplicate key"),
    (LAB.replace("    colour: red\n", "  - {name: blue}\n"), "lab.yaml:6:5: networks[1]: duplicate network 'blue'"),
    (LAB.replace("    colour: red\n", "    labels:\n      tier: 1\n"),
     "lab.yaml:7:13: networks[0].labels.tier: expected a string, got int"),
    (LAB.replace("    colour: red\n", "policies:\n  - {name: p, network: blue, action: deny, from: 10.0.0.1/8}\n"),
     "lab.yaml:7:50: policies[0].from.cidr: '10.0.0.1/8' is not an IPv4 CIDR with host bits zero (e.g. 10.10.0.0/24)"),
    (LAB.replace("    colour: red\n", "containers:\n  - {name: web, host: h9}\n"),
     "lab.yaml:7:23: containers[0].host: unknown host 'h9'"),
    ("name: t\nhosts: 5\nunderlay: {subnet: 172.30.0.0/28}\n",
     "lab.yaml:3:20: underlay.subnet: 172.30.0.0/28 is too small for 5 hosts (automatic addresses start at 172.30.0.11)"),
    ("hosts: 1\n", "lab.yaml:1:1: name: required"),
    ("- a\n", "lab.yaml:1:1: expected a mapping at the top level, got list"),
    ("name: t\n  hosts: 2\n", "lab.yaml:2:8: mapping values are not allowed here"),
    ("name: \x07\n", "lab.yaml:1:7: character '\\x07' is not allowed in YAML"),
    ("", "lab.yaml: empty document"),
])
def test_errors_name_file_line_column_and_path(text: str, message: str) -> None:
    assert _error(text) == message


def test_load_names_the_file_it_was_given(tmp_path: Path) -> None:
    path = tmp_path / "lab.yaml"
    path.write_text(MTU.format("01400"))
    with pytest.raises(TopologyError) as info:
        load(path)
    assert str(info.value).startswith(f"{path}:5:10: networks[0].mtu: 01400 has a leading zero")
    assert (info.value.path, info.value.at.line, info.value.at.column) == ("networks[0].mtu", 5, 10)


def test_from_mapping_has_no_position() -> None:
    with pytest.raises(TopologyError) as info:
        from_mapping({"name": "t", "hosts": 2, "networks": [{"name": "blue", "mtu": 100}]})
    assert info.value.at is None
    assert str(info.value) == "networks[0].mtu: 100 is out of range 576..9216 (0 = automatic)"


# --- scenarios -------------------------------------------------------------------------

GOOD_LAB = ("name: t\nhosts: 2\nnetworks: [{name: blue}]\ncontainers:\n  - {name: c1, host: h1, networks: [blue]}\n"
            "  - {name: c2, host: h2, networks: [blue]}\n")


def _scenario(tmp_path: Path, text: str) -> scenario.Scenario:
    (tmp_path / "lab.yaml").write_text(GOOD_LAB)
    (tmp_path / "s.yaml").write_text(text)
    return scenario.load(tmp_path / "s.yaml")


def _scenario_error(tmp_path: Path, text: str) -> str:
    with pytest.raises(scenario.ScenarioError) as info:
        _scenario(tmp_path, text)
    assert "\n" not in str(info.value)
    return str(info.value).replace(str(tmp_path), "D")


EVENT = "lab: lab.yaml\nprobes: [all]\ntimeline:\n  - {{at: {at}, fault: {{kind: loss, host: h1, percent: {pct}}}}}\n"


def test_scenario_numbers(tmp_path: Path) -> None:
    sc = _scenario(tmp_path, EVENT.format(at=1.5, pct=30) + "duration: 10s\n")
    assert (sc.timeline[0].at, sc.timeline[0].params["percent"], sc.duration) == (1.5, 30.0, 10.0)
    assert _scenario(tmp_path, EVENT.format(at="1e1", pct=30)).timeline[0].at == 10.0  # a YAML 1.2 float
    # base 60 is never a number: YAML 1.1 read `at: 1:30` as 90 seconds
    assert _scenario_error(tmp_path, EVENT.format(at="1:30", pct=30)) == \
        "D/s.yaml:4:10: timeline[0].at: not a duration (use e.g. 10s, 500ms, 2m): '1:30'"
    assert _scenario_error(tmp_path, EVENT.format(at=5, pct="030")) == \
        ("D/s.yaml:4:52: timeline[0].fault.percent: 030 has a leading zero (YAML 1.1 would read it as octal 24);"
         " write 30, or '030' for a string")


@pytest.mark.parametrize("text, message", [
    ("lab: lab.yaml\nprobes: [all]\nlabb: 1\n", "D/s.yaml:3:1: labb: unknown key"),
    ("lab: lab.yaml\nprobes:\n  - {src: c1, dst: c9}\n", "D/s.yaml:3:20: probes[0].dst: unknown container 'c9'"),
    (EVENT.format(at=5, pct=30).replace("host: h1", "host: h9"),
     "D/s.yaml:4:39: timeline[0].fault.host: unknown host 'h9' (hosts: h1, h2)"),
    (EVENT.format(at=5, pct=30).replace(", percent: 30", ""), "D/s.yaml:4:20: timeline[0].fault.percent: loss needs it"),
    # an inline topology: positions in the scenario file, paths under `lab.`
    ("lab:\n  name: t\n  hosts: 2\n  networks:\n    - {name: blue, mtu: 01400}\nprobes: [all]\n",
     "D/s.yaml:5:25: lab.networks[0].mtu: 01400 has a leading zero (YAML 1.1 would read it as octal 768);"
     " write 1400, or '01400' for a string"),
    ("lab:\n  name: t\n  hosts: 2\n  colour: red\nprobes: [all]\n", "D/s.yaml:4:3: lab.colour: unknown key"),
    # a topology file: its own file and position
    ("lab: bad.yaml\nprobes: [all]\n", "D/bad.yaml:5:10: networks[0].mtu: 100 is out of range 576..9216 (0 = automatic)"),
    ("lab: nope.yaml\nprobes: [all]\n", "D/s.yaml:1:6: lab: D/nope.yaml: no such file"),
    ("lab: lab.yaml\nprobes: [all\n", "D/s.yaml:3:1: expected ',' or ']', but got '<stream end>'"),
    ("", "D/s.yaml: empty document"),
])
def test_scenario_errors_name_file_line_column_and_path(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "bad.yaml").write_text(MTU.format(100))
    assert _scenario_error(tmp_path, text) == message


# --- through the CLI, and TOML config files -----------------------------------------------

def test_cli_up_and_experiment_print_the_position(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vxlab.lab import experiment
    from vxlab.lab.procs import LabError

    def no_lab(*_: object, **__: object) -> None:  # where YAML 1.1 read 768, a lab would start: not in unit tests
        raise LabError("a lab would start here")

    monkeypatch.setattr("vxlab.lab.lab.Lab", no_lab)
    monkeypatch.setattr(experiment, "run", no_lab)
    (tmp_path / "lab.yaml").write_text(MTU.format("01400"))
    result = CliRunner().invoke(main.app, ["up", str(tmp_path / "lab.yaml")])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [f"error: {tmp_path}/lab.yaml:5:10: networks[0].mtu: 01400 has a leading"
                                          " zero (YAML 1.1 would read it as octal 768); write 1400, or '01400' for a"
                                          " string"]
    (tmp_path / "s.yaml").write_text("lab: lab.yaml\nprobes: [all]\n")
    result = CliRunner().invoke(main.app, ["experiment", "run", str(tmp_path / "s.yaml"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {tmp_path}/lab.yaml:5:10: networks[0].mtu: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["[agent]\nresync = 010\n", "[controller]\nlease-ttl = 05\n"])
def test_toml_refuses_a_leading_zero_naming_the_file(tmp_path: Path, text: str) -> None:
    path = tmp_path / "vx.toml"
    path.write_text(text)
    with pytest.raises(InvalidArgument) as info:
        config.load(path, "agent" if "agent" in text else "controller")
    assert str(info.value).startswith(f"{path}: not valid TOML: ") and "(at line 2, column " in str(info.value)
    result = CliRunner().invoke(main.app, ["controller", "serve", "--config", str(path)])
    assert result.exit_code == 1 and result.stderr.startswith(f"error: {path}: not valid TOML: ")
    assert len(result.stderr.splitlines()) == 1
