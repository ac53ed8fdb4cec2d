"""DICOM TLS on the listener, driven by DCMTK's +tls options: mutual TLS, refusals, stalled handshakes."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import time
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.conftest import dcmtk, make_node, pacsdeck, storescu


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _certificate(key, cn: str, issuer_key, issuer_cn: str, ca: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(issuer_cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, stem: str, key, cert) -> None:
    key_path = folder / f"{stem}.key"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    (folder / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A test CA, the node's certificate, a client signed by the CA, and a stranger signed by another CA."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(ca_key, "pacsdeck test CA", ca_key, "pacsdeck test CA", ca=True)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for stem in ("node", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(folder, stem, key, _certificate(key, stem, ca_key, "pacsdeck test CA"))
    other_ca = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    _write(folder, "stranger", key, _certificate(key, "stranger", other_ca, "another CA"))
    return folder


def tls_settings(pki: Path, mutual: bool = True) -> dict:
    return {
        "certificate": str(pki / "node.pem"),
        "private_key": str(pki / "node.key"),
        "ca_certificates": str(pki / "ca.pem"),
        "require_client_certificate": mutual,
    }


@pytest.fixture(scope="module")
def node(tmp_path_factory, pki):
    handle = make_node(
        tmp_path_factory.mktemp("tls") / "node", workers=1, tls=tls_settings(pki), limits={"request_timeout": 3}
    )
    handle.start()
    yield handle
    handle.stop()


def echo(node, *tls_args: str) -> tuple[bool, float]:
    started = time.monotonic()
    result = dcmtk(
        "echoscu",
        "-aet",
        "ECHOSCU",
        "-aec",
        node.ae_title,
        "-to",
        "5",
        *tls_args,
        "127.0.0.1",
        str(node.port),
        timeout=30,
    )
    return result.returncode == 0, time.monotonic() - started


def client(pki: Path, stem: str = "client") -> tuple[str, ...]:
    return ("+tls", str(pki / f"{stem}.key"), str(pki / f"{stem}.pem"), "+cf", str(pki / "ca.pem"))


def test_echo_and_store_over_mutual_tls(node, pki):
    assert echo(node, *client(pki))[0]
    ct = Path(get_testdata_file("CT_small.dcm"))
    outcome, proc = storescu(node, [ct], "-xe", *client(pki))  # CT_small is explicit VR LE: sent as it is
    assert proc.returncode == 0 and set(outcome.values()) == {"Success"}, proc.stdout + proc.stderr
    row = node.rows("SELECT pool, path FROM instances")[0]
    stored, sent = dcmread(node.file(row)), dcmread(ct)
    assert (stored.SOPInstanceUID, stored.PixelData) == (sent.SOPInstanceUID, sent.PixelData)


@pytest.mark.parametrize("how", ["plain TCP", "TLS without a client certificate", "a certificate from another CA"])
def test_peers_without_the_right_certificate_are_refused(node, pki, how):
    args = {
        "plain TCP": (),
        "TLS without a client certificate": ("+tla", "+cf", str(pki / "ca.pem")),
        "a certificate from another CA": client(pki, "stranger"),
    }[how]
    ok, took = echo(node, *args)
    assert not ok
    assert took < 5  # refused at the handshake, not left to time out
    assert "refused tls-handshake" in node.log_text()
    if how == "plain TCP":  # one line per reason every 5 s: this one may be folded into a count
        log = node.log_text()
        assert "does not speak TLS" in log or "more refused for tls-handshake" in log


def test_a_stalled_handshake_delays_no_other_client(node, pki):
    stalled = [socket.create_connection(("127.0.0.1", node.port)) for _ in range(3)]
    for sock in stalled:
        sock.sendall(b"\x16\x03\x01\x02\x00\x01")  # the start of a ClientHello, then silence
    try:
        ok, took = echo(node, *client(pki))
        assert ok and took < 2.0
    finally:
        for sock in stalled:
            sock.close()


def test_a_private_key_others_can_read_is_refused_at_init(tmp_path, pki):
    key = tmp_path / "loose.key"
    key.write_bytes((pki / "node.key").read_bytes())
    key.chmod(0o644)
    root = tmp_path / "node"
    root.mkdir()
    settings = {
        "ae_title": "PACSDECK",
        "port": 11112,
        "bind": "127.0.0.1",
        "pools": [{"name": "primary", "path": "pools/primary", "tier": "primary"}],
        "tls": {**tls_settings(pki), "private_key": str(key)},
    }
    (root / "node.yaml").write_text(yaml.safe_dump(settings))
    result = pacsdeck("node", "init", "--dir", str(root))
    assert result.returncode == 2
    assert "tls.private_key" in result.stderr and "chmod 600" in result.stderr


def test_a_key_that_does_not_match_its_certificate_is_refused_at_init(tmp_path, pki):
    root = tmp_path / "node"
    root.mkdir()
    settings = {
        "ae_title": "PACSDECK",
        "port": 11112,
        "bind": "127.0.0.1",
        "pools": [{"name": "primary", "path": "pools/primary", "tier": "primary"}],
        "tls": {**tls_settings(pki), "private_key": str(pki / "client.key")},
    }
    (root / "node.yaml").write_text(yaml.safe_dump(settings))
    result = pacsdeck("node", "init", "--dir", str(root))
    assert result.returncode == 2
    assert "tls:" in result.stderr
    assert os.path.exists(pki / "node.key")


def test_c_move_and_echo_to_an_ae_registered_with_tls(node_factory, pki, tmp_path):
    """The node opens TLS associations to an AE registered with `tls: true`, presenting its own
    certificate (the destination requires one) and checking the destination's against its CA."""
    destination = node_factory(
        "destination",
        ae_title="DEST",
        workers=1,
        tls=tls_settings(pki),
        aets=[{"ae_title": "ARCHIVE", "host": "127.0.0.1"}],
    ).start()
    archive = node_factory(
        "archive",
        ae_title="ARCHIVE",
        workers=1,
        tls={
            "certificate": str(pki / "client.pem"),
            "private_key": str(pki / "client.key"),
            "ca_certificates": str(pki / "ca.pem"),
            "listen": False,
        },
        aets=[
            {"ae_title": "STORESCU", "host": "127.0.0.1"},
            {"ae_title": "MOVESCU", "host": "127.0.0.1", "operations": ["find", "move"]},
            {"ae_title": "DEST", "host": "127.0.0.1", "port": destination.port, "move_destination": True, "tls": True},
            {"ae_title": "DESTPLAIN", "host": "127.0.0.1", "port": destination.port, "move_destination": True},
        ],
    ).start()
    ct = Path(get_testdata_file("CT_small.dcm"))
    outcome, proc = storescu(archive, [ct], "-xe")  # the archive listens in plain TCP
    assert set(outcome.values()) == {"Success"}, proc.stdout + proc.stderr
    study = str(dcmread(ct, stop_before_pixels=True).StudyInstanceUID)

    def move(dest: str):
        return dcmtk(
            "movescu",
            "-S",
            "-aet",
            "MOVESCU",
            "-aec",
            "ARCHIVE",
            "-aem",
            dest,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study}",
            "127.0.0.1",
            str(archive.port),
        )

    assert move("DEST").returncode == 0
    assert [r["sop_uid"] for r in destination.rows("SELECT sop_uid FROM instances")] == [
        str(dcmread(ct, stop_before_pixels=True).SOPInstanceUID)
    ]
    plain = move("DESTPLAIN")  # the same destination without TLS: refused at its handshake
    assert "0xa801" in (plain.stdout + plain.stderr).lower() or plain.returncode != 0

    def echo_from_archive(title: str) -> dict:
        result = pacsdeck(
            "agent", "call", "aets.echo", "--params", f'{{"ae_title": "{title}"}}', "--config", str(archive.config)
        )
        return __import__("json").loads(result.stdout)

    assert echo_from_archive("DEST")["ok"] is True
    assert echo_from_archive("DESTPLAIN")["ok"] is False
