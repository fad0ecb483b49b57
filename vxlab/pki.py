"""A small PKI for one vxlab installation: CAs, certificates, and who a certificate is.

`init(dir)` writes (layout in vxlab.tls.Pki):

- `ca.crt`/`ca.key`: the API CA; it signs `controller` (server: localhost, 127.0.0.1,
  ::1 and any extra names), `admin` (client, `vxlab://admin`) and `hosts/NAME` (client,
  CN=host:NAME and `vxlab://host/NAME`), one per agent;
- `etcd/ca.crt`/`etcd/ca.key`: a separate CA for etcd's `server` and the controller's
  etcd `client` certificate (why separate: see vxlab.tls).

Keys are ECDSA P-256, written 0600. `identity(pem)` reads the vxlab identity (the
`vxlab://…` URI SAN) out of a peer certificate; the controller authorizes by it.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vxlab import validate
from vxlab.errors import InvalidArgument
from vxlab.tls import ADMIN_URI, CONTROLLER_URI, HOST_URI_PREFIX, Identity, Pki, identity_of_uris

CA_DAYS = 3650
CERT_DAYS = 825
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")


def identity(pem: bytes) -> Identity:
    """The vxlab identity of a PEM certificate (its `vxlab://` URI SAN)."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    return identity_of_uris(uris)


# --- writing ----------------------------------------------------------------------------

def _write(path: Path, data: bytes, *, secret: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if secret else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o600 if secret else 0o644)  # whatever the umask
    tmp.replace(path)


def _save(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, paths: tuple[Path, Path]) -> None:
    _write(paths[1], key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), secret=True)
    _write(paths[0], cert.public_bytes(serialization.Encoding.PEM), secret=False)


def _load(paths: tuple[Path, Path]) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(paths[0].read_bytes())
    key = serialization.load_pem_private_key(paths[1].read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vxlab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, days: int
             ) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days)))


def _make_ca(cn: str, paths: tuple[Path, Path]) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (_builder(_name(cn), _name(cn), key, CA_DAYS)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _save(cert, key, paths)


def _alt_name(name: str) -> x509.GeneralName:
    if name.startswith("vxlab://"):
        return x509.UniformResourceIdentifier(name)
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _issue(ca: tuple[Path, Path], out: tuple[Path, Path], *, cn: str, names: list[str],
           server: bool, client: bool) -> None:
    ca_cert, ca_key = _load(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + ([ExtendedKeyUsageOID.CLIENT_AUTH] if client else [])
    cert = (_builder(_name(cn), ca_cert.subject, key, CERT_DAYS)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectAlternativeName([_alt_name(n) for n in names]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    _save(cert, key, out)


def init(directory: str | Path, *, hosts: Sequence[str] = (), san: Sequence[str] = (), force: bool = False) -> Pki:
    """Create both CAs, the controller, admin and etcd certificates, and one per host."""
    pki = Pki(Path(directory))
    for name in hosts:
        validate.name(name, field="host", max_len=validate.HOST_NAME_MAX)
    if not force and (pki.ca.exists() or pki.ca_key.exists()):
        raise InvalidArgument("dir", f"{pki.dir} holds a PKI already, use --force")
    api, etcd = (pki.ca, pki.ca_key), (pki.etcd_ca, pki.etcd_ca_key)
    _make_ca("vxlab API CA", api)
    _issue(api, pki.pair("controller"), cn="vxlab controller", names=[*LOCAL_NAMES, *san, CONTROLLER_URI],
           server=True, client=False)
    _issue(api, pki.pair("admin"), cn="admin", names=[ADMIN_URI], server=False, client=True)
    _make_ca("vxlab etcd CA", etcd)
    # etcd's own gRPC gateway dials etcd with the server certificate: it needs client use too.
    _issue(etcd, pki.pair("etcd-server"), cn="vxlab etcd", names=[*LOCAL_NAMES, *san], server=True, client=True)
    _issue(etcd, pki.pair("etcd-client"), cn="vxlab controller", names=[CONTROLLER_URI], server=False, client=True)
    for name in hosts:
        issue_host(pki.dir, name, force=True)
    return pki


def issue_host(directory: str | Path, name: str, *, force: bool = False) -> Path:
    """Issue (or, with `force`, reissue) the client certificate of host `name`; returns its path."""
    pki = Pki(Path(directory))
    validate.name(name, field="host", max_len=validate.HOST_NAME_MAX)
    if not (pki.ca.is_file() and pki.ca_key.is_file()):
        raise InvalidArgument("dir", f"no CA in {pki.dir} (run 'vxlab pki init {pki.dir}' first)")
    out = pki.pair(f"host:{name}")
    if out[0].exists() and not force:
        raise InvalidArgument("host", f"a certificate for {name!r} exists in {pki.dir}, use --force")
    _issue((pki.ca, pki.ca_key), out, cn=f"host:{name}", names=[f"{HOST_URI_PREFIX}{name}"],
           server=False, client=True)
    return out[0]
