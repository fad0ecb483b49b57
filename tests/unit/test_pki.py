"""The PKI, the TLS settings and the authorization policy, without any server.

Certificates are made in a tmp dir and read back with `cryptography`; the policy is a
pure function of (identity, method, request).
"""

from __future__ import annotations

import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
from cryptography import x509
from typer.testing import CliRunner

from vxlab import pki
from vxlab.cli import main
from vxlab.client import _connect_error
from vxlab.controller.authz import authorize, guard
from vxlab.errors import InvalidArgument, PermissionDenied, Unauthenticated
from vxlab.model import Endpoint
from vxlab.tls import Identity, Pki, TlsConfig, identity_of_uris

ADMIN, H1, OTHER = Identity("admin"), Identity("host", "h1"), Identity("unknown")


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return pki.init(tmp_path_factory.mktemp("pki") / "p", hosts=["h1"], san=["ctl.example", "10.0.0.5"])


def test_init_writes_every_certificate_with_private_keys(made: Pki) -> None:
    names = ["controller", "admin", "host:h1", "etcd-server", "etcd-client"]
    for cert, key in [(made.ca, made.ca_key), (made.etcd_ca, made.etcd_ca_key), *map(made.pair, names)]:
        assert cert.read_bytes().startswith(b"-----BEGIN CERTIFICATE")
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644, cert


def test_identities_come_from_the_uri_san(made: Pki) -> None:
    assert pki.identity(made.pair("admin")[0].read_bytes()) == ADMIN
    assert pki.identity(made.pair("host:h1")[0].read_bytes()) == H1
    assert pki.identity(made.pair("controller")[0].read_bytes()) == Identity("controller")
    host = x509.load_pem_x509_certificate(made.pair("host:h1")[0].read_bytes())
    assert host.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "host:h1"
    assert identity_of_uris(["spiffe://x", "vxlab://host/"]) == OTHER


def test_server_certificate_names(made: Pki) -> None:
    cert = x509.load_pem_x509_certificate(made.pair("controller")[0].read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "ctl.example"}
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"127.0.0.1", "::1", "10.0.0.5"}


def test_init_refuses_to_overwrite_and_issue_host_checks(made: Pki, tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=r"^dir: .* holds a PKI already, use --force$"):
        pki.init(made.dir)
    with pytest.raises(InvalidArgument, match="^host: a certificate for 'h1' exists"):
        pki.issue_host(made.dir, "h1")
    with pytest.raises(InvalidArgument, match="^host: "):
        pki.issue_host(made.dir, "Bad_Name")
    with pytest.raises(InvalidArgument, match=r"^dir: no CA in .*run 'vxlab pki init"):
        pki.issue_host(tmp_path / "nothing", "h2")
    assert pki.identity(pki.issue_host(made.dir, "h2").read_bytes()) == Identity("host", "h2")


def test_tls_config_names_the_missing_or_bad_file(tmp_path: Path) -> None:
    assert TlsConfig.of(ca=None, cert=None, key=None) is None
    with pytest.raises(InvalidArgument, match="^tls-key: needed with tls-ca, tls-cert$"):
        TlsConfig.of(ca="a", cert="b", key=None)
    (tmp_path / "junk").write_text("hello")
    with pytest.raises(InvalidArgument, match="^tls-ca: cannot read .*/nope"):
        TlsConfig(tmp_path / "nope", tmp_path / "junk", tmp_path / "junk").read()
    with pytest.raises(InvalidArgument, match="^tls-ca: .*junk is not a PEM file$"):
        TlsConfig(tmp_path / "junk", tmp_path / "junk", tmp_path / "junk").read()


# -- authorization --------------------------------------------------------------------

def _req(**kw: object) -> SimpleNamespace:
    return SimpleNamespace(**kw)


@pytest.mark.parametrize("method", ["CreateNetwork", "DeleteNetwork", "CreateEndpoint", "DeleteEndpoint",
                                    "RegisterHost", "DeregisterHost", "ListHosts", "Watch"])
def test_admin_may_call_everything(method: str) -> None:
    authorize(ADMIN, f"/vxlab.v1.X/{method}", _req(name="h7", host=_req(name="h7")))


def test_a_host_acts_only_as_itself() -> None:
    authorize(H1, "/vxlab.v1.HostService/RegisterHost", _req(host=_req(name="h1")))
    authorize(H1, "KeepAlive", _req(name="h1"))
    authorize(H1, "DeregisterHost", _req(name="h1"))
    for method, request in [("RegisterHost", _req(host=_req(name="h2"))), ("KeepAlive", _req(name="h2")),
                            ("DeregisterHost", _req(name="h2"))]:
        with pytest.raises(PermissionDenied) as info:
            authorize(H1, method, request)
        assert (info.value.field, info.value.message) == ("host", "host: certificate is for 'h1', not 'h2'")


@pytest.mark.parametrize("method", ["GetHost", "ListHosts", "GetNetwork", "ListNetworks", "GetEndpoint",
                                    "ListEndpoints", "Watch"])
def test_a_host_may_read(method: str) -> None:
    authorize(H1, method, _req())


@pytest.mark.parametrize(("method", "field"), [("CreateNetwork", "network"), ("DeleteNetwork", "network"),
                                               ("CreatePolicy", "policy"), ("SomethingNew", "method")])
def test_a_host_may_not_write(method: str, field: str) -> None:
    with pytest.raises(PermissionDenied, match=f"^{field}: host 'h1' may not .*admin only"):
        authorize(H1, method, _req())


def _ep(name: str = "c1", *, host: str = "h1", runtime: str = "docker") -> SimpleNamespace:
    return _req(endpoint=_req(name=name, network="blue", host=host, runtime=runtime))


def test_a_host_creates_runtime_endpoints_on_itself_only() -> None:
    authorize(H1, "CreateEndpoint", _ep())
    authorize(H1, "CreateEndpoint", _ep(runtime="cni"))
    for req, tail in [(_ep(host="h2"), "not a docker endpoint on host 'h2'"),
                      (_ep(runtime=""), "not a vxlab endpoint (admin only) on host 'h1'")]:
        with pytest.raises(PermissionDenied) as info:
            authorize(H1, "CreateEndpoint", req)
        assert info.value.field == "endpoint"
        assert info.value.message == ("endpoint: host 'h1' may create only endpoints of a runtime (docker, cni) "
                                      f"on itself, {tail}")
    assert guard() is None


@pytest.mark.parametrize("method", ["UpdateEndpoint", "DeleteEndpoint"])
def test_a_host_changes_its_runtime_endpoints_by_a_guard_on_the_stored_record(method: str) -> None:
    authorize(H1, method, _req(network="blue", name="c1"))
    check = guard()
    assert check is not None
    check(Endpoint("c1", "blue", "h1", runtime="cni"))
    for stored in (Endpoint("c1", "blue", "h2", runtime="cni"), Endpoint("c1", "blue", "h1")):
        with pytest.raises(PermissionDenied, match="^endpoint: host 'h1' may change only endpoints of a runtime"):
            check(stored)
    authorize(ADMIN, method, _req(network="blue", name="c1"))
    assert guard() is None  # each call sets its own


def test_other_certificates_may_do_nothing() -> None:
    for who in (OTHER, Identity("controller")):
        with pytest.raises(PermissionDenied, match="^identity: "):
            authorize(who, "ListHosts", _req())


# -- handshake failures as the client reports them -------------------------------------

def test_handshake_failures_become_unauthenticated() -> None:
    closed = "failed to connect to all addresses; last error: UNAVAILABLE: unix:/s: Socket closed"
    reset = "failed to connect to all addresses; last error: UNAVAILABLE: unix:/s: recvmsg:Connection reset by peer"
    version = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:1.2.3.4:5: Tls handshake failed "
               "(TSI_PROTOCOL_FAILURE): SSL_ERROR_SSL: error:100000f7:SSL routines:OPENSSL_internal:"
               "WRONG_VERSION_NUMBER: Invalid certificate verification context")
    assert "requires TLS" in str(_connect_error(closed, address="a", tls=False))
    assert "refused our TLS handshake" in str(_connect_error(reset, address="a", tls=True))
    assert "does not speak TLS" in str(_connect_error(version, address="a", tls=True))
    assert isinstance(_connect_error(closed, address="a", tls=True), Unauthenticated)
    refused = "failed to connect to all addresses; last error: UNKNOWN: unix:/s: No such file or directory"
    assert _connect_error(refused, address="a", tls=True) is None  # not running: stays Unavailable


# -- CLI ----------------------------------------------------------------------------------

runner = CliRunner()


def test_cli_pki_init_and_issue_host(tmp_path: Path) -> None:
    d = tmp_path / "p"
    r = runner.invoke(main.app, ["pki", "init", str(d), "--host", "h1"])
    assert r.exit_code == 0, r.output
    assert (d / "hosts" / "h1.crt").is_file() and (d / "etcd" / "client.key").is_file()
    again = runner.invoke(main.app, ["pki", "init", str(d)])
    assert again.exit_code == 1 and again.stderr == f"error: dir: {d} holds a PKI already, use --force\n"
    assert runner.invoke(main.app, ["pki", "init", str(d), "--force"]).exit_code == 0
    assert runner.invoke(main.app, ["pki", "issue-host", str(d), "h2"]).exit_code == 0
    assert pki.identity((d / "hosts" / "h2.crt").read_bytes()) == Identity("host", "h2")
    bad = runner.invoke(main.app, ["pki", "issue-host", str(tmp_path / "none"), "h2"])
    assert bad.exit_code == 1 and bad.stderr.startswith("error: dir: no CA in ")


def test_cli_tls_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    class Fake:
        async def list_hosts(self) -> list[object]:
            return []

        async def list_endpoints(self) -> list[object]:
            return []

        async def close(self) -> None:
            pass

    def factory(address: str, *, tls: object = None) -> Fake:
        seen.update(address=address, tls=tls)
        return Fake()
    monkeypatch.setattr(main, "client_factory", factory)
    for var in ("VXLAB_PKI", "VXLAB_TLS_CA", "VXLAB_TLS_CERT", "VXLAB_TLS_KEY", "VXLAB_INSECURE", "VXLAB_LAB"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VXLAB_RUN", str(tmp_path / "run"))
    r = runner.invoke(main.app, ["--pki", str(tmp_path / "p"), "host", "ls"])
    assert r.exit_code == 0 and seen["tls"] == Pki(tmp_path / "p").admin()
    r = runner.invoke(main.app, ["--insecure", "host", "ls"])
    assert r.exit_code == 0 and seen["tls"] is None and r.stderr.startswith("warning: --insecure")
    r = runner.invoke(main.app, ["--tls-ca", "ca.crt", "host", "ls"])
    assert r.exit_code == 1 and r.stderr == "error: tls-cert: needed with tls-ca\n"
    r = runner.invoke(main.app, ["--insecure", "--pki", "x", "host", "ls"])
    assert r.exit_code == 1 and r.stderr == "error: insecure: contradicts --pki/--tls-*\n"


def test_lab_state_hands_out_the_admin_and_etcd_certificates(tmp_path: Path) -> None:
    from vxlab.lab.state import LabState

    st = LabState("x", pki_dir=str(tmp_path / "pki"))
    assert st.client_tls() == Pki(tmp_path / "pki").admin()
    assert st.etcd_tls() == Pki(tmp_path / "pki").etcd_client()
    assert LabState("x").client_tls() is None  # no PKI yet (or a lab from before TLS)
    assert LabState("x", pki_dir=str(tmp_path), insecure=True).client_tls() is None
