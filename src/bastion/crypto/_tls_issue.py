"""Issuing the hub's local TLS certificates: a self-signed CA and a server certificate.

Both keys are ECDSA P-256 and both certificates are signed with SHA-256. The CA
is ``CA:true, pathlen:0`` with key usage ``keyCertSign, cRLSign`` (critical),
valid about ten years. The server certificate is ``CA:false`` with key usage
``digitalSignature`` (critical), extended key usage ``serverAuth``, and its host
names as subject alternative names (DNS names or IP addresses), valid about a
year. Both carry subject and authority key identifiers, as strict X.509
verifiers (OpenSSL's ``X509_V_FLAG_X509_STRICT``) require. Validity starts five
minutes before ``now``, to tolerate clocks a little behind.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bastion.errors import UsageError

__all__ = ["CA_LIFETIME", "SERVER_LIFETIME", "issue_ca", "issue_server", "parse_hostnames"]

CA_LIFETIME: Final = timedelta(days=3650)
SERVER_LIFETIME: Final = timedelta(days=365)
_BACKDATE: Final = timedelta(minutes=5)
_LABEL: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)")
MAX_HOSTNAMES: Final = 100


def parse_hostnames(hostnames: Iterable[str]) -> tuple[x509.GeneralName, ...]:
    """Each host name as a SAN entry: an IP address, or a lower-cased DNS name (``*.`` allowed)."""
    if isinstance(hostnames, str | bytes):
        raise UsageError("hostnames must be a sequence of names, not one string")
    names: list[x509.GeneralName] = []
    for hostname in hostnames:
        name = _general_name(hostname)
        if name not in names:
            names.append(name)
        if len(names) > MAX_HOSTNAMES:
            raise UsageError(f"a certificate names at most {MAX_HOSTNAMES} hosts")
    if not names:
        raise UsageError("a server certificate needs at least one host name")
    return tuple(names)


def _general_name(hostname: str) -> x509.GeneralName:
    if not isinstance(hostname, str):
        raise UsageError("a host name must be a string")
    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        pass
    name = hostname.lower().removesuffix(".")
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 2:
        labels = labels[1:]
    if not name.isascii() or len(name) > 253 or not all(_LABEL.fullmatch(lbl) for lbl in labels):
        raise UsageError(
            f"{hostname!r} is neither an IP address nor a DNS name (ASCII letters, digits and "
            "hyphens; use the punycode form of an internationalised name)"
        )
    return x509.DNSName(name)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bastion"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def issue_ca(now: datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new self-signed CA valid from ``now`` (a little before) for :data:`CA_LIFETIME`."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    name = _name("Bastion local CA")
    ski = x509.SubjectKeyIdentifier.from_public_key(public)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_server(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    names: tuple[x509.GeneralName, ...],
    now: datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A new server key and certificate for ``names``, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    not_after = min(now + SERVER_LIFETIME, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Bastion hub"))
        .issuer_name(ca_cert.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _key_usage(*, key_cert_sign: bool = False, digital_signature: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=key_cert_sign,
        encipher_only=False,
        decipher_only=False,
    )
