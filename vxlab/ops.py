"""The ops channel's language: what a caller asks a host's agent to do, and what comes back.

Plain dataclasses (vxlab.wire converts them to and from the v1 messages): an `OpRequest`
names the host and carries one op (`ProbeBatch`, `PingStream`, `Capture`, `KernelView`,
`Drift`, `Exec`, `IperfServer`, `IperfClient`; `Cancel` only travels from the controller
to an agent); an `OpEvent` carries the request's id and one event, the last one `Done`.

A ping stream outlives a lost stream to its controller (`held_cap`): its agent keeps it
running to its deadline, holding its events, and hands them over (`Resumed`, then the
held events) when the stream is back; every other op ends with its stream.

`check` validates a request (bad input is one InvalidArgument naming the field, with
the proto's field names) and fills the defaults; the controller checks before it
routes, the agent again before it runs. `timeout_of` is the op's deadline.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from vxlab import validate
from vxlab.errors import InvalidArgument, VxError

MAX_PROBES = 4096
MAX_PROBE_TIMEOUT = 30.0
MAX_CAPTURE = 10_000
MAX_CAPTURE_SECONDS = 600.0
MAX_IPERF_SECONDS = 300.0
MAX_TIMEOUT = 86_400.0
MAX_ARGV = 256
MAX_ARG = 4096
OUTPUT_CAP = 1 << 20       # exec's stdout and stderr, iperf's report: bytes each
LINE_CAP = 2000            # a capture line: characters
DEVICE_RE = re.compile(r"^[A-Za-z0-9_.:@][A-Za-z0-9_.:@-]{0,14}$")
# tcpdump filter words: no quotes, no spaces, never an option (tcpdump also gets a "--")
FILTER_RE = re.compile(r"^[A-Za-z0-9_.:/\[\]()&|!<>=+*][A-Za-z0-9_.:/\[\]()&|!<>=+*-]*$")
MAX_CONTAINERS = 256


class OpFailed(VxError):
    """An op ended with a Done carrying an error; the message names the host."""


# --- ops -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeSpec:
    container: str
    ip: str
    protocol: str = "icmp"   # "icmp" or "tcp"
    port: int = 0
    timeout: float = 1.0


@dataclass(frozen=True)
class ProbeBatch:
    probes: tuple[ProbeSpec, ...] = ()


@dataclass(frozen=True)
class PingStream:
    container: str
    ip: str
    interval: float = 1.0
    count: int = 0           # 0: until cancelled
    timeout: float = 1.0


@dataclass(frozen=True)
class Capture:
    device: str = ""         # "": the host's underlay device
    filter: tuple[str, ...] = ()
    count: int = 10
    seconds: float = 10.0


@dataclass(frozen=True)
class KernelView:
    network: str = ""
    containers: tuple[str, ...] = ()


@dataclass(frozen=True)
class Drift:
    pass


@dataclass(frozen=True)
class Exec:
    container: str
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class IperfServer:
    container: str
    port: int = 5201


@dataclass(frozen=True)
class IperfClient:
    container: str
    ip: str
    port: int = 5201
    seconds: float = 3.0
    interval: float = 0.5


@dataclass(frozen=True)
class Cancel:
    id: str


Op = ProbeBatch | PingStream | Capture | KernelView | Drift | Exec | IperfServer | IperfClient | Cancel


@dataclass(frozen=True)
class OpRequest:
    host: str
    op: Op | None
    id: str = ""
    timeout: float = 0.0     # 0: timeout_of() picks one by kind


# --- events ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProbeResult:
    index: int
    reached: bool
    rtt_ms: float = 0.0
    error: str = ""


@dataclass(frozen=True)
class ProbeResults:
    results: tuple[ProbeResult, ...] = ()


@dataclass(frozen=True)
class PingSample:
    seq: int
    sent: float              # wall clock (time.time())
    rtt_ms: float | None     # None: lost


@dataclass(frozen=True)
class Ready:
    detail: str = ""


@dataclass(frozen=True)
class Line:
    text: str


@dataclass(frozen=True)
class LinkView:
    name: str
    kind: str = ""
    alias: str = ""
    mac: str = ""
    mtu: int = 0
    up: bool = False
    master: str = ""
    vni: int = 0
    local: str = ""
    port: int = 0
    learning: bool = False
    proxy: bool = False


@dataclass(frozen=True)
class NamespaceView:
    name: str
    marker: str = ""
    links: tuple[LinkView, ...] = ()
    addrs: tuple[tuple[str, str], ...] = ()          # (dev, "ip/prefixlen")
    routes: tuple[tuple[str, str, str], ...] = ()    # (dst, gateway, dev)
    fdb: tuple[tuple[str, str, str], ...] = ()       # (dev, mac, dst)
    neigh: tuple[tuple[str, str, str], ...] = ()     # (dev, ip, mac)

    def link(self, name: str) -> LinkView | None:
        return next((k for k in self.links if k.name == name), None)


@dataclass(frozen=True)
class KernelState:
    namespaces: tuple[NamespaceView, ...] = ()
    underlay_ip: str = ""
    underlay_dev: str = ""
    underlay_mtu: int = 0

    def namespace(self, name: str) -> NamespaceView | None:
        return next((n for n in self.namespaces if n.name == name), None)


@dataclass(frozen=True)
class DriftEntry:
    namespace: str           # "": the agent's own namespace
    state: str               # missing, stale, differing
    kind: str
    target: str
    reason: str


@dataclass(frozen=True)
class DriftReport:
    entries: tuple[DriftEntry, ...] = ()
    revision: int = 0
    applied_revision: int = 0


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: bytes = b""
    stderr: bytes = b""
    truncated: bool = False


@dataclass(frozen=True)
class IperfReport:
    json: str


@dataclass(frozen=True)
class Done:
    error: str = ""


@dataclass(frozen=True)
class Resumed:
    """The agent's stream was lost during the op and came back: `held` kept events follow,
    `dropped` (the oldest) did not fit (see `held_cap`)."""
    held: int = 0
    dropped: int = 0


Event = (Ready | ProbeResults | PingSample | Line | KernelState | DriftReport | ExecResult | IperfReport | Done
         | Resumed)


@dataclass(frozen=True)
class OpEvent:
    id: str
    event: Event = field(default_factory=Done)


DRIFT_STATE = {"add": "missing", "delete": "stale", "replace": "differing", "update": "differing"}


# --- validation ------------------------------------------------------------------------------
def _seconds(value: float, *, field: str, default: float, low: float, high: float) -> float:
    if value != value or value < 0:  # NaN too
        raise InvalidArgument(field, f"{value!r} must be a number of seconds >= 0")
    if value == 0:
        return default
    if not low <= value <= high:
        raise InvalidArgument(field, f"{value:g} is outside {low:g}..{high:g} seconds")
    return value


def _port(value: int, *, field: str, default: int | None) -> int:
    if value == 0 and default is not None:
        return default
    if not 1 <= value <= 65535:
        raise InvalidArgument(field, f"{value} is not a port (1..65535)")
    return value


def _container(value: str, *, field: str) -> str:
    return validate.name(value, field=field, max_len=validate.CONTAINER_NAME_MAX)


def _ip(value: str, *, field: str) -> str:
    return str(validate.ipv4(value, field=field))


def _probe(p: ProbeSpec, at: str) -> ProbeSpec:
    protocol = p.protocol or "icmp"
    if protocol not in ("icmp", "tcp"):
        raise InvalidArgument(f"{at}.protocol", f"{protocol[:20]!r} is not icmp or tcp")
    port = _port(p.port, field=f"{at}.port", default=None) if protocol == "tcp" else 0
    if protocol == "icmp" and p.port:
        raise InvalidArgument(f"{at}.port", "only tcp probes have a port")
    return ProbeSpec(_container(p.container, field=f"{at}.container"), _ip(p.ip, field=f"{at}.ip"), protocol, port,
                     _seconds(p.timeout, field=f"{at}.timeout", default=1.0, low=0.01, high=MAX_PROBE_TIMEOUT))


def _check_op(op: Op) -> Op:
    if isinstance(op, ProbeBatch):
        if not op.probes:
            raise InvalidArgument("probe.probes", "no probes")
        if len(op.probes) > MAX_PROBES:
            raise InvalidArgument("probe.probes", f"{len(op.probes)} probes; at most {MAX_PROBES} per batch")
        return ProbeBatch(tuple(_probe(p, f"probe.probes[{i}]") for i, p in enumerate(op.probes)))
    if isinstance(op, PingStream):
        if op.count < 0:
            raise InvalidArgument("ping.count", f"{op.count} is negative")
        return PingStream(_container(op.container, field="ping.container"), _ip(op.ip, field="ping.ip"),
                          _seconds(op.interval, field="ping.interval", default=1.0, low=0.01, high=60.0), op.count,
                          _seconds(op.timeout, field="ping.timeout", default=1.0, low=0.01, high=MAX_PROBE_TIMEOUT))
    if isinstance(op, Capture):
        if op.device and not DEVICE_RE.match(op.device):
            raise InvalidArgument("capture.device", f"{op.device[:20]!r} is not a device name")
        for i, word in enumerate(op.filter):
            if not word or len(word) > 200 or not FILTER_RE.match(word):
                raise InvalidArgument(f"capture.filter[{i}]", f"{word[:20]!r} is not a tcpdump filter word")
        if not 0 <= op.count <= MAX_CAPTURE:
            raise InvalidArgument("capture.count", f"{op.count} is outside 1..{MAX_CAPTURE}")
        return Capture(op.device, tuple(op.filter), op.count or 10,
                       _seconds(op.seconds, field="capture.seconds", default=10.0, low=0.1, high=MAX_CAPTURE_SECONDS))
    if isinstance(op, KernelView):
        if len(op.containers) > MAX_CONTAINERS:
            raise InvalidArgument("kernel_view.containers", f"{len(op.containers)} containers; at most {MAX_CONTAINERS}")
        if op.network:
            validate.name(op.network, field="kernel_view.network", max_len=validate.NETWORK_NAME_MAX)
        for i, c in enumerate(op.containers):
            _container(c, field=f"kernel_view.containers[{i}]")
        return KernelView(op.network, tuple(op.containers))
    if isinstance(op, Drift):
        return op
    if isinstance(op, Exec):
        if not op.argv:
            raise InvalidArgument("exec.argv", "nothing to run")
        if len(op.argv) > MAX_ARGV:
            raise InvalidArgument("exec.argv", f"{len(op.argv)} arguments; at most {MAX_ARGV}")
        for i, arg in enumerate(op.argv):
            if len(arg) > MAX_ARG or "\0" in arg:
                raise InvalidArgument(f"exec.argv[{i}]", "longer than 4096 characters or holds a NUL")
        return Exec(_container(op.container, field="exec.container"), tuple(op.argv))
    if isinstance(op, IperfServer):
        return IperfServer(_container(op.container, field="iperf_server.container"),
                           _port(op.port, field="iperf_server.port", default=5201))
    if isinstance(op, IperfClient):
        return IperfClient(_container(op.container, field="iperf_client.container"),
                           _ip(op.ip, field="iperf_client.ip"), _port(op.port, field="iperf_client.port", default=5201),
                           _seconds(op.seconds, field="iperf_client.seconds", default=3.0, low=1.0,
                                    high=MAX_IPERF_SECONDS),
                           _seconds(op.interval, field="iperf_client.interval", default=0.5, low=0.1, high=60.0))
    raise InvalidArgument("op", "cancel is the controller's to send (a caller cancels by going away)")


def check(request: OpRequest) -> OpRequest:
    """The request with its defaults filled in; InvalidArgument naming the field otherwise."""
    validate.name(request.host, field="host", max_len=validate.HOST_NAME_MAX)
    if request.op is None:
        raise InvalidArgument("op", "required: one of probe, ping, capture, kernel_view, drift, exec, "
                                    "iperf_server, iperf_client")
    timeout = _seconds(request.timeout, field="timeout", default=0.0, low=0.1, high=MAX_TIMEOUT)
    return dataclasses.replace(request, op=_check_op(request.op), timeout=timeout)


def timeout_of(request: OpRequest) -> float:
    """The op's deadline in seconds: the request's, else a default for its kind."""
    if request.timeout:
        return request.timeout
    op = request.op
    if isinstance(op, ProbeBatch):
        return max(p.timeout for p in op.probes) + 10.0
    if isinstance(op, PingStream):
        return op.count * op.interval + op.timeout + 10.0 if op.count else MAX_TIMEOUT
    if isinstance(op, Capture):
        return op.seconds + 10.0
    if isinstance(op, IperfClient):
        return op.seconds + 30.0
    return 60.0


MAX_HELD = 10_000  # events an agent holds for one op while its controller is away


def held_cap(request: OpRequest) -> int:
    """How many events the agent holds for this (checked) op while its stream to the
    controller is lost: a ping stream's expected samples and its Done (at most
    MAX_HELD); 0 for every other kind (it is cancelled with its stream: an exec or an
    iperf3 run must not go on for no one, a probe batch or a view is quick to ask again)."""
    op = request.op
    if not isinstance(op, PingStream):
        return 0
    expected = op.count or int(timeout_of(request) / op.interval) + 1
    return min(expected + 1, MAX_HELD)
