"""Local TLS material: what is generated, a real handshake with it, reuse and renewal."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import socket
import ssl
import stat
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from bastion.crypto import TlsMaterial, ensure_tls_material
from bastion.errors import CertificateFormatError, KeyFormatError, UsageError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def tls_dir(tmp_path: Path) -> Path:
    return tmp_path / "tls"


@pytest.fixture
def material(tls_dir: Path) -> TlsMaterial:
    return ensure_tls_material(tls_dir, now=NOW)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(material: TlsMaterial) -> dict[str, bytes]:
    paths = [material.ca_cert, material.ca_key, material.server_cert, material.server_key]
    return {path.name: path.read_bytes() for path in paths}


def test_first_call_writes_a_ca_and_a_server_certificate(
    material: TlsMaterial, tls_dir: Path
) -> None:
    assert material.created
    assert mode(tls_dir) == 0o700
    assert sorted(p.name for p in tls_dir.iterdir()) == [
        "ca.crt",
        "ca.key",
        "server.crt",
        "server.key",
    ]
    assert (mode(material.ca_key), mode(material.server_key)) == (0o600, 0o600)
    assert (mode(material.ca_cert), mode(material.server_cert)) == (0o644, 0o644)


def test_the_ca_certificate(material: TlsMaterial) -> None:
    ca = load(material.ca_cert)
    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign
    public = ca.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    lifetime = ca.not_valid_after_utc - NOW
    assert timedelta(days=3600) < lifetime <= timedelta(days=3660)
    assert ca.issuer == ca.subject
    ca.verify_directly_issued_by(ca)


def test_the_server_certificate(material: TlsMaterial) -> None:
    ca, server = load(material.ca_cert), load(material.server_cert)
    server.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = server.not_valid_after_utc - NOW
    assert timedelta(days=360) < lifetime <= timedelta(days=366)
    assert material.server_not_after == server.not_valid_after_utc
    key = serialization.load_pem_private_key(material.server_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key() == server.public_key()


def test_the_fingerprint_is_sha256_of_the_ca_der(material: TlsMaterial) -> None:
    der = load(material.ca_cert).public_bytes(serialization.Encoding.DER)
    digest = hashlib.sha256(der).hexdigest().upper()
    assert material.fingerprint.replace(":", "") == digest
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", material.fingerprint)


def client_context(ca_cert: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_cert))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_flags |= ssl.VERIFY_X509_STRICT
    return context


def exchange(material: TlsMaterial, client: ssl.SSLContext, server_hostname: str) -> bytes:
    """Run a one-connection TLS server on loopback with the generated server certificate,
    connect to it with ``client``, and return what the server sent."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.minimum_version = ssl.TLSVersion.TLSv1_2
    server.load_cert_chain(material.server_cert, material.server_key)

    def serve(listener: socket.socket) -> None:
        conn, _ = listener.accept()
        try:
            with server.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"hello over tls")
        except (OSError, ssl.SSLError):
            conn.close()  # the client refused the handshake: what some tests want

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        thread = threading.Thread(target=serve, args=(listener,))
        thread.start()
        try:
            port = listener.getsockname()[1]
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                client.wrap_socket(raw, server_hostname=server_hostname) as tls,
            ):
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
                return tls.recv(100)
        finally:
            thread.join(timeout=10)


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_a_real_handshake_trusting_only_the_ca(material: TlsMaterial, server_hostname: str) -> None:
    received = exchange(material, client_context(material.ca_cert), server_hostname)
    assert received == b"hello over tls"


def test_a_client_trusting_another_ca_refuses_the_server(
    material: TlsMaterial, tmp_path: Path
) -> None:
    other = ensure_tls_material(tmp_path / "other", now=NOW)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        exchange(material, client_context(other.ca_cert), "localhost")


def test_a_name_not_in_the_certificate_is_refused(material: TlsMaterial) -> None:
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        exchange(material, client_context(material.ca_cert), "hub.example")


def test_a_second_call_reuses_everything(material: TlsMaterial, tls_dir: Path) -> None:
    again = ensure_tls_material(tls_dir, now=NOW + timedelta(days=100))
    assert not again.created
    assert snapshot(again) == snapshot(material)
    assert again.fingerprint == material.fingerprint


def test_a_server_certificate_near_expiry_is_reissued(material: TlsMaterial, tls_dir: Path) -> None:
    before = snapshot(material)
    later = NOW + timedelta(days=340)  # 25 days left
    again = ensure_tls_material(tls_dir, now=later)
    after = snapshot(again)
    assert again.created
    assert again.fingerprint == material.fingerprint
    assert (after["ca.crt"], after["ca.key"]) == (before["ca.crt"], before["ca.key"])
    assert after["server.crt"] != before["server.crt"]
    assert after["server.key"] != before["server.key"]
    assert again.server_not_after > later + timedelta(days=360)
    load(again.server_cert).verify_directly_issued_by(load(again.ca_cert))


def test_a_missing_hostname_reissues_the_server_certificate(
    material: TlsMaterial, tls_dir: Path
) -> None:
    wanted = ("localhost", "hub.example.org", "10.0.0.5")
    again = ensure_tls_material(tls_dir, hostnames=wanted, now=NOW)
    assert again.created
    assert again.fingerprint == material.fingerprint
    san = load(again.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "hub.example.org"]
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    # A subset of what the certificate names needs nothing new.
    subset = ensure_tls_material(tls_dir, hostnames=["LOCALHOST", "10.0.0.5"], now=NOW)
    assert not subset.created


def test_a_ca_near_expiry_is_replaced(material: TlsMaterial, tls_dir: Path) -> None:
    again = ensure_tls_material(tls_dir, now=NOW + timedelta(days=3640))
    assert again.created
    assert again.fingerprint != material.fingerprint
    load(again.server_cert).verify_directly_issued_by(load(again.ca_cert))


def test_a_server_certificate_from_another_ca_is_reissued(
    material: TlsMaterial, tmp_path: Path
) -> None:
    other = ensure_tls_material(tmp_path / "other", now=NOW)
    material.server_cert.write_bytes(other.server_cert.read_bytes())
    material.server_key.write_bytes(other.server_key.read_bytes())
    again = ensure_tls_material(material.directory, now=NOW)
    assert again.created
    load(again.server_cert).verify_directly_issued_by(load(material.ca_cert))


def test_a_corrupt_server_certificate_is_reissued(material: TlsMaterial) -> None:
    material.server_cert.write_bytes(b"not a certificate")
    again = ensure_tls_material(material.directory, now=NOW)
    assert again.created
    load(again.server_cert).verify_directly_issued_by(load(material.ca_cert))


def test_a_widely_readable_key_is_an_error(material: TlsMaterial) -> None:
    os.chmod(material.server_key, 0o644)
    with pytest.raises(KeyFormatError, match="chmod 600"):
        ensure_tls_material(material.directory, now=NOW)
    os.chmod(material.server_key, 0o600)
    os.chmod(material.ca_key, 0o640)
    with pytest.raises(KeyFormatError, match="chmod 600"):
        ensure_tls_material(material.directory, now=NOW)


def test_a_damaged_ca_is_an_error_not_replaced(material: TlsMaterial) -> None:
    ca_cert = material.ca_cert.read_bytes()
    material.ca_key.unlink()
    with pytest.raises(CertificateFormatError, match="missing"):
        ensure_tls_material(material.directory, now=NOW)
    assert material.ca_cert.read_bytes() == ca_cert

    material.ca_key.write_bytes(material.server_key.read_bytes())
    os.chmod(material.ca_key, 0o600)
    with pytest.raises(CertificateFormatError, match="does not match"):
        ensure_tls_material(material.directory, now=NOW)

    material.ca_cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(CertificateFormatError, match="unreadable"):
        ensure_tls_material(material.directory, now=NOW)


def test_an_existing_directory_is_made_private(tmp_path: Path) -> None:
    folder = tmp_path / "tls"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # noqa: S103 - deliberately too open, to be tightened
    ensure_tls_material(folder, now=NOW)
    assert mode(folder) == 0o700


@pytest.mark.parametrize(
    "hostnames",
    [
        [],
        ["bad host"],
        ["-leading.example"],
        ["a" * 64 + ".example"],
        ["*.com"],
        ["h\u00f6st.example"],
        ["localhost", ""],
    ],
)
def test_invalid_hostnames_are_usage_errors(tls_dir: Path, hostnames: list[str]) -> None:
    with pytest.raises(UsageError):
        ensure_tls_material(tls_dir, hostnames=hostnames, now=NOW)
    assert not tls_dir.exists()


def test_hostnames_must_be_a_sequence_and_now_aware(tls_dir: Path) -> None:
    with pytest.raises(UsageError, match="not one string"):
        ensure_tls_material(tls_dir, hostnames="localhost", now=NOW)
    with pytest.raises(UsageError, match="timezone-aware"):
        ensure_tls_material(tls_dir, now=datetime(2026, 1, 1))


def test_wildcard_names_are_accepted(tls_dir: Path) -> None:
    material = ensure_tls_material(tls_dir, hostnames=["*.hub.example", "hub.example."], now=NOW)
    san = load(material.server_cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.DNSName) == ["*.hub.example", "hub.example"]
