"""TLS settings shared by every hop: which CA to trust, which certificate to present.

`TlsConfig` names three PEM files (the CA that signs the peer, our certificate, our
key); the client, the controller's server and the etcd store turn it into gRPC
credentials, the etcd launcher into command-line flags. `Pki` is the layout of a
directory made by `vxlab pki init` (see vxlab.pki), so every component finds its files
there from one `--pki DIR`. Nothing here imports gRPC or cryptography.

Two CAs on purpose: the API CA signs the controller, the admin and one certificate per
host; the etcd CA signs only etcd's server certificate and the controller's etcd client
certificate. etcd's `--client-cert-auth` trusts any certificate of its CA, so an agent
(whose certificate the API CA signed) can never talk to etcd directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from vxlab.errors import InvalidArgument

ADMIN_URI = "vxlab://admin"
CONTROLLER_URI = "vxlab://controller"
HOST_URI_PREFIX = "vxlab://host/"

Kind = Literal["admin", "host", "controller", "unknown"]


@dataclass(frozen=True)
class Identity:
    """Who a certificate speaks for: the admin, a host (with its name), or nobody we know."""

    kind: Kind
    name: str = ""

    def __str__(self) -> str:
        return f"host {self.name!r}" if self.kind == "host" else self.kind


def identity_of_uris(uris: list[str]) -> Identity:
    """The identity named by a certificate's URI SANs (the first `vxlab://` one that fits)."""
    for uri in uris:
        if uri == ADMIN_URI:
            return Identity("admin")
        if uri == CONTROLLER_URI:
            return Identity("controller")
        if uri.startswith(HOST_URI_PREFIX) and len(uri) > len(HOST_URI_PREFIX):
            return Identity("host", uri[len(HOST_URI_PREFIX):])
    return Identity("unknown")


@dataclass(frozen=True)
class TlsConfig:
    """Three PEM files; `server_name` overrides the name checked in the peer's certificate."""

    ca: Path
    cert: Path
    key: Path
    server_name: str = ""

    @classmethod
    def of(cls, *, ca: str | Path | None, cert: str | Path | None, key: str | Path | None,
           field: str = "tls") -> TlsConfig | None:
        """All three given -> a config; none -> None; some -> bad input naming the missing one."""
        given = {"ca": ca, "cert": cert, "key": key}
        if not any(given.values()):
            return None
        missing = [k for k, v in given.items() if not v]
        if missing:
            raise InvalidArgument(f"{field}-{missing[0]}", f"needed with {field}-"
                                  + f", {field}-".join(k for k in given if k not in missing))
        return cls(Path(str(ca)), Path(str(cert)), Path(str(key)))

    def read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) as bytes; an unreadable file is bad input naming it."""
        out = []
        for name, path in (("ca", self.ca), ("cert", self.cert), ("key", self.key)):
            try:
                data = path.read_bytes()
            except OSError as e:
                raise InvalidArgument(f"tls-{name}", f"cannot read {path}: {e.strerror or e}") from None
            if b"-----BEGIN" not in data:
                raise InvalidArgument(f"tls-{name}", f"{path} is not a PEM file")
            out.append(data)
        return out[0], out[1], out[2]


@dataclass(frozen=True)
class Pki:
    """Where `vxlab pki init DIR` puts each file."""

    dir: Path

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def etcd_dir(self) -> Path:
        return self.dir / "etcd"

    @property
    def etcd_ca(self) -> Path:
        return self.etcd_dir / "ca.crt"

    @property
    def etcd_ca_key(self) -> Path:
        return self.etcd_dir / "ca.key"

    def pair(self, name: str) -> tuple[Path, Path]:
        """(cert, key) of `controller`, `admin`, `host:NAME`, `etcd-server` or `etcd-client`."""
        if name.startswith("host:"):
            base = self.dir / "hosts" / name[len("host:"):]
        elif name.startswith("etcd-"):
            base = self.etcd_dir / name[len("etcd-"):]
        else:
            base = self.dir / name
        return base.with_name(base.name + ".crt"), base.with_name(base.name + ".key")

    def _config(self, ca: Path, name: str) -> TlsConfig:
        cert, key = self.pair(name)
        return TlsConfig(ca, cert, key)

    def admin(self) -> TlsConfig:
        return self._config(self.ca, "admin")

    def host(self, name: str) -> TlsConfig:
        return self._config(self.ca, f"host:{name}")

    def controller(self) -> TlsConfig:
        return self._config(self.ca, "controller")

    def etcd_server(self) -> TlsConfig:
        return self._config(self.etcd_ca, "etcd-server")

    def etcd_client(self) -> TlsConfig:
        return self._config(self.etcd_ca, "etcd-client")

    def has_etcd(self) -> bool:
        return self.etcd_ca.is_file()
