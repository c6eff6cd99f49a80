"""Build throw-away X.509 PKIs for tests: a root CA, an intermediate CA, signing leaves.

Nothing here is committed as a blob: every certificate is made fresh with
``cryptography`` and written as PEM under a directory the test owns (usually
``tmp_path``). Each ``make_*`` function returns an :class:`Issued` holding the
certificate, its private key and the paths of both PEM files.

CA certificates carry what cryptography's WebPKI CA policy insists on:
BasicConstraints(ca=True, critical), KeyUsage keyCertSign + cRLSign (critical),
SubjectKeyIdentifier and AuthorityKeyIdentifier. Leaves are built to order:
key type, validity window, KeyUsage (with or without digitalSignature, or
absent), ExtendedKeyUsage codeSigning (or absent), SAN e-mail / URI and CN.

Typical use::

    pki = make_pki(tmp_path)                      # root -> intermediate -> leaf
    bastion.sign(model, pki.leaf.key_path, certificate=pki.leaf.cert_path,
                 chain=[pki.intermediate.cert_path])
    bastion.verify(model, ca=pki.root.cert_path)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, get_args

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "KEY_TYPES",
    "PKI",
    "CertKey",
    "Issued",
    "KeyType",
    "make_intermediate_ca",
    "make_key",
    "make_leaf",
    "make_pki",
    "make_root_ca",
    "write_key",
]

KeyType = Literal["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = get_args(KeyType)

CertKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

_CURVES: dict[str, ec.EllipticCurve] = {
    "ecdsa-p256": ec.SECP256R1(),
    "ecdsa-p384": ec.SECP384R1(),
    "ecdsa-p521": ec.SECP521R1(),
}
#: Default validity windows, relative to now: CAs comfortably outlive their leaves,
#: so a test that moves a leaf's window (or the signing time) tests the leaf alone.
_CA_WINDOW = (timedelta(days=-365), timedelta(days=3650))
_LEAF_WINDOW = (timedelta(days=-1), timedelta(days=365))

#: The identities a default leaf vouches for.
DEFAULT_EMAIL = "signer@example.com"
DEFAULT_COMMON_NAME = "Test Signer"


@dataclass(frozen=True, slots=True)
class Issued:
    """A certificate with its private key, both also written as PEM files."""

    cert: x509.Certificate
    key: CertKey
    cert_path: Path
    key_path: Path


@dataclass(frozen=True, slots=True)
class PKI:
    """A three-level PKI: ``root`` signs ``intermediate``, which signs ``leaf``."""

    root: Issued
    intermediate: Issued
    leaf: Issued


def make_key(key_type: KeyType = "ecdsa-p256") -> CertKey:
    """A fresh private key of ``key_type``."""
    if key_type == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(_CURVES[key_type])


def write_key(key: CertKey, path: Path) -> Path:
    """Write ``key`` as an unencrypted PKCS#8 PEM file; return ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _hash_for(issuer_key: CertKey) -> hashes.HashAlgorithm | None:
    """The signature hash for an issuer key (Ed25519 takes none)."""
    if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
        return None
    return {256: hashes.SHA256(), 384: hashes.SHA384(), 521: hashes.SHA512()}[
        issuer_key.curve.key_size
    ]


def _window(
    not_before: datetime | None,
    not_after: datetime | None,
    default: tuple[timedelta, timedelta],
) -> tuple[datetime, datetime]:
    """The validity window: the given bounds, a default window around now otherwise.

    With only ``not_after`` given, the window ends then and is as long as the default.
    """
    lifetime = default[1] - default[0]
    if not_before is None:
        not_before = datetime.now(UTC) + default[0] if not_after is None else not_after - lifetime
    return not_before, not_after if not_after is not None else not_before + lifetime


def _write(directory: Path, stem: str, cert: x509.Certificate, key: CertKey) -> Issued:
    directory.mkdir(parents=True, exist_ok=True)
    cert_path = directory / f"{stem}.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Issued(cert, key, cert_path, write_key(key, directory / f"{stem}.key"))


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bastion Tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _build_ca(
    directory: Path,
    stem: str,
    common_name: str,
    key: CertKey,
    issuer: Issued | None,
    path_length: int | None,
    not_before: datetime | None,
    not_after: datetime | None,
) -> Issued:
    start, end = _window(not_before, not_after, _CA_WINDOW)
    signing_key = key if issuer is None else issuer.key
    issuer_name = _name(common_name) if issuer is None else issuer.cert.subject
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    aki = (
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
        if issuer is None
        else x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(aki, critical=False)
        .sign(signing_key, _hash_for(signing_key))
    )
    return _write(directory, stem, cert, key)


def make_root_ca(
    directory: Path,
    *,
    common_name: str = "Bastion Test Root CA",
    key_type: KeyType = "ecdsa-p384",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    stem: str = "root",
) -> Issued:
    """A self-signed root CA, written to ``directory/<stem>.pem`` and ``.key``.

    The default window runs from a year ago for ten years, so that it covers any
    leaf's window in these tests; pass ``not_before`` / ``not_after`` for another.
    """
    return _build_ca(
        directory, stem, common_name, make_key(key_type), None, None, not_before, not_after
    )


def make_intermediate_ca(
    directory: Path,
    issuer: Issued,
    *,
    common_name: str = "Bastion Test Intermediate CA",
    key_type: KeyType = "ecdsa-p256",
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    stem: str = "intermediate",
) -> Issued:
    """An intermediate CA signed by ``issuer`` (path length 0: it signs only leaves)."""
    return _build_ca(
        directory, stem, common_name, make_key(key_type), issuer, 0, not_before, not_after
    )


def make_leaf(
    directory: Path,
    issuer: Issued,
    *,
    key_type: KeyType = "ecdsa-p256",
    key: CertKey | None = None,
    common_name: str | None = DEFAULT_COMMON_NAME,
    email: str | None = DEFAULT_EMAIL,
    uri: str | None = None,
    digital_signature: bool | None = True,
    code_signing: bool = True,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    stem: str = "leaf",
) -> Issued:
    """A signing (end-entity) certificate issued by ``issuer``.

    * ``not_before`` / ``not_after``: the validity window (default: from a day
      ago for a year).
    * ``key``: the leaf's key; a fresh ``key_type`` key when not given.
    * ``digital_signature``: True for KeyUsage digitalSignature (critical);
      False for a KeyUsage that names only contentCommitment (no
      digitalSignature); None for no KeyUsage extension at all.
    * ``code_signing``: add ExtendedKeyUsage codeSigning; False leaves EKU out.
    * ``email`` / ``uri``: SubjectAlternativeName entries (none when both are None).
    * ``common_name``: the subject CN (None leaves the subject with only O).
    """
    leaf_key = key if key is not None else make_key(key_type)
    start, end = _window(not_before, not_after, _LEAF_WINDOW)
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Bastion Tests")]
    if common_name is not None:
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(issuer.cert.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    )
    if digital_signature is not None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=digital_signature,
                content_commitment=not digital_signature,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    if code_signing:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False
        )
    names: list[x509.GeneralName] = []
    if email is not None:
        names.append(x509.RFC822Name(email))
    if uri is not None:
        names.append(x509.UniformResourceIdentifier(uri))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(issuer.key, _hash_for(issuer.key))
    return _write(directory, stem, cert, leaf_key)


def make_pki(
    directory: Path,
    *,
    leaf_key_type: KeyType = "ecdsa-p256",
    email: str | None = DEFAULT_EMAIL,
    uri: str | None = None,
) -> PKI:
    """A root, an intermediate and one default leaf, all under ``directory``."""
    root = make_root_ca(directory)
    intermediate = make_intermediate_ca(directory, root)
    leaf = make_leaf(directory, intermediate, key_type=leaf_key_type, email=email, uri=uri)
    return PKI(root, intermediate, leaf)
