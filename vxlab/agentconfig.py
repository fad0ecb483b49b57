"""An agent's options, one type in every shape they travel in.

`AgentConfig` is what `vxlab agent run` runs with (vxlab.agent.runner). It comes from:

- flags and a TOML file: `vxlab agent run` resolves both (vxlab.config, flags win) and
  calls `from_options`; `argv()` gives the command line that runs the same agent;
- a mapping keyed like the TOML `[agent]` table (`controller`, `host`, `underlay-ip`,
  `netns-prefix`, `resync`, `status-file`, `labels`, `metrics`, `tls-ca`/`tls-cert`/
  `tls-key`, `dns-forward`): `to_mapping`/`from_mapping`, every value checked by vxlab.config's rules.
  The lab's agent spawner gets it as JSON (vxlab.agent.spawner), `to_toml` writes it as
  a file `vxlab agent run --config` reads (a VM host's agent gets its options that way).

Only plain values: paths are strings, the certificate is its three file names.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vxlab import config
from vxlab.errors import InvalidArgument
from vxlab.tls import Pki, TlsConfig

TLS_KEYS = ("tls-ca", "tls-cert", "tls-key")


@dataclass
class AgentConfig:
    controller: list[str]
    host: str
    underlay_ip: str = ""   # "" : detected (the address towards the controller)
    underlay_dev: str = ""
    netns_prefix: str = config.default("agent", "netns-prefix")
    resync: float = config.default("agent", "resync")
    status_file: str = ""   # "" : none written
    labels: dict[str, str] = field(default_factory=dict)
    tls: TlsConfig | None = None  # this host's certificate (mutual TLS with the controller)
    metrics: str = ""       # "" : no Prometheus endpoint
    dns_forward: bool = config.default("agent", "dns-forward")  # names not ours: to the host's resolvers, or REFUSED
    ops_concurrency: int = 8  # ops run at once for the controllers (agent/opslink.py); 0: no ops channel

    @classmethod
    def from_options(cls, opts: Mapping[str, Any], *, tls: TlsConfig | None = None) -> AgentConfig:
        """From checked options by Python name (what vxlab.config.resolve("agent") gives;
        what is missing takes vxlab.config's default)."""
        o = {config.param(k): key.default for k, key in config.SECTIONS["agent"].items()} | dict(opts)
        return cls(controller=list(o["controller"]), host=o["host"], underlay_ip=o["underlay_ip"] or "",
                   underlay_dev=o["underlay_dev"] or "", netns_prefix=o["netns_prefix"], resync=float(o["resync"]),
                   status_file=o["status_file"] or "", labels=dict(o["labels"] or {}), tls=tls,
                   metrics=o["metrics"] or "", dns_forward=bool(o["dns_forward"]))

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], *, source: str = "agent") -> AgentConfig:
        """From the `[agent]`-shaped mapping; a bad or missing value is an InvalidArgument
        naming `source` and the key."""
        return cls._checked(config.check("agent", raw, source=source), source=source)

    @classmethod
    def from_toml(cls, path: str | Path) -> AgentConfig:
        """From the `[agent]` table of a file (`pki` there gives the host's certificate)."""
        return cls._checked(config.load(path, "agent"), source=str(path))

    @classmethod
    def _checked(cls, opts: dict[str, Any], *, source: str) -> AgentConfig:
        for needed in ("controller", "host"):
            if not opts.get(needed):
                raise InvalidArgument(f"{source}: agent.{needed}", "required")
        tls = TlsConfig.of(ca=opts.get("tls_ca"), cert=opts.get("tls_cert"), key=opts.get("tls_key"),
                           field=f"{source}: agent.tls")
        if tls is None and opts.get("pki"):
            tls = Pki(Path(opts["pki"])).host(opts["host"])
        return cls.from_options(opts, tls=tls)

    def to_mapping(self) -> dict[str, Any]:
        """The `[agent]` table of this config: only what differs from the defaults."""
        out: dict[str, Any] = {"controller": list(self.controller), "host": self.host}
        for key, value, default in (("underlay-ip", self.underlay_ip, ""), ("underlay-dev", self.underlay_dev, ""),
                                    ("netns-prefix", self.netns_prefix, config.default("agent", "netns-prefix")),
                                    ("resync", self.resync, config.default("agent", "resync")),
                                    ("status-file", self.status_file, ""),
                                    ("labels", dict(self.labels), {}), ("metrics", self.metrics, ""),
                                    ("dns-forward", self.dns_forward, config.default("agent", "dns-forward"))):
            if value != default:
                out[key] = value
        if self.tls is not None:
            out.update(zip(TLS_KEYS, (str(self.tls.ca), str(self.tls.cert), str(self.tls.key)), strict=True))
        return out

    def to_toml(self) -> str:
        """This config as a file for `vxlab agent run --config FILE`."""
        def value(v: Any) -> str:
            if isinstance(v, dict):
                return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(x)}" for k, x in v.items()) + " }"
            return json.dumps(v)  # strings, numbers, lists of strings: the same in TOML
        return "[agent]\n" + "".join(f"{k} = {value(v)}\n" for k, v in self.to_mapping().items())

    def argv(self) -> list[str]:
        """The `vxlab` arguments that run this agent: `--controller … agent run …`."""
        out = ["--controller", ",".join(self.controller)]
        if self.tls is not None:
            out += ["--tls-ca", str(self.tls.ca), "--tls-cert", str(self.tls.cert), "--tls-key", str(self.tls.key)]
        out += ["agent", "run", "--host", self.host]
        for flag, v in (("--underlay-ip", self.underlay_ip), ("--underlay-dev", self.underlay_dev),
                        ("--status-file", self.status_file), ("--metrics", self.metrics)):
            if v:
                out += [flag, v]
        out += ["--netns-prefix", self.netns_prefix, "--resync", repr(self.resync),
                "--dns-forward" if self.dns_forward else "--no-dns-forward"]
        for k, v in self.labels.items():
            out += ["--label", f"{k}={v}"]
        return out


@dataclass(frozen=True)
class Launch:
    """One request to the lab's agent spawner (vxlab.agent.spawner): the agent's options
    and where it runs (the network namespace it enters, its log, its nice level)."""

    config: AgentConfig
    netns: str
    log: str
    nice: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"agent": self.config.to_mapping(), "netns": self.netns, "log": self.log, "nice": self.nice}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Launch:
        return cls(AgentConfig.from_mapping(raw["agent"], source="spawner"), str(raw["netns"]), str(raw["log"]),
                   int(raw.get("nice") or 0))
