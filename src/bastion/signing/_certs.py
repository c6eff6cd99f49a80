"""X.509 signing certificates: loading, and validating a chain at the signing time.

Unlike the reference tool, which validates the chain as of the leaf's own
``notBefore`` (so an expired leaf always passes), a chain is validated at the
signing time the bundle records: a leaf that was expired or not yet valid then
fails. The leaf must be allowed to sign: key usage ``digitalSignature`` or
extended key usage ``codeSigning``, and no key usage that forbids it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    ExtensionPolicy,
    PolicyBuilder,
    Store,
)
from cryptography.x509.verification import (
    VerificationError as X509VerificationError,
)

from bastion.errors import CertificateFormatError, KeyFormatError, VerificationError
from bastion.signing._bundle import format_timestamp
from bastion.signing._keys import PublicKey, _PublicPart

__all__ = [
    "MAX_CERT_FILE",
    "VerifiedCertificate",
    "leaf_public_key",
    "load_pem_certificates",
    "signing_refusal",
    "verify_chain",
]

_T = TypeVar("_T")

MAX_CERT_FILE = 4 << 20


def _parse(loader: Callable[[bytes], _T], data: bytes) -> _T:
    """Run a cryptography loader, refusing non-conforming certificates (serial
    numbers that are zero or negative) instead of warning about them."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", CryptographyDeprecationWarning)
        return loader(data)


def load_pem_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file; at least one."""
    if len(data) > MAX_CERT_FILE:
        raise CertificateFormatError(f"{source} is too large to be a certificate file")
    try:
        return _parse(x509.load_pem_x509_certificates, data)
    except (ValueError, x509.InvalidVersion, CryptographyDeprecationWarning) as exc:
        raise CertificateFormatError(f"{source} holds no readable PEM certificate") from exc


def load_der_certificate(data: bytes, *, source: str) -> x509.Certificate:
    """A certificate from a bundle: unreadable means the bundle does not verify."""
    try:
        return _parse(x509.load_der_x509_certificate, data)
    except (ValueError, x509.InvalidVersion, CryptographyDeprecationWarning) as exc:
        raise VerificationError(f"{source} holds an invalid certificate") from exc


def leaf_public_key(data: bytes, *, source: str) -> PublicKey:
    """The public key of a bundle's leaf certificate (DER)."""
    leaf = load_der_certificate(data, source=source)
    try:
        return PublicKey((_PublicPart.of(leaf.public_key()),))
    except (ValueError, UnsupportedAlgorithm, KeyFormatError) as exc:
        raise VerificationError(f"{source}: the certificate's key cannot sign models") from exc


def identities(cert: x509.Certificate) -> tuple[str, ...]:
    """The names a certificate vouches for: SAN e-mails, URIs, DNS names, then the CN."""
    names: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        pass
    else:
        for kind in (x509.RFC822Name, x509.UniformResourceIdentifier, x509.DNSName):
            names.extend(str(v) for v in san.get_values_for_type(kind))
    names.extend(
        str(attr.value) for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )
    return tuple(names)


def signing_refusal(cert: x509.Certificate) -> str | None:
    """Why ``cert`` may not sign, or None. Key usage, when present, must include
    digitalSignature; without it, extended key usage must include codeSigning."""
    try:
        usage: x509.KeyUsage | None = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None:
        return None if usage.digital_signature else "its key usage does not allow signing"
    try:
        extended = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        extended = None
    if extended is not None and (
        ExtendedKeyUsageOID.CODE_SIGNING in extended
        or ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE in extended
    ):
        return None
    return "it names neither digitalSignature nor codeSigning usage"


@dataclass(frozen=True, slots=True)
class VerifiedCertificate:
    """A leaf whose chain to a trusted root was valid at the signing time."""

    leaf: x509.Certificate
    public_key: PublicKey
    identities: tuple[str, ...]


def verify_chain(
    chain: Sequence[bytes], roots: Sequence[x509.Certificate], at: datetime
) -> VerifiedCertificate:
    """Validate ``chain`` (leaf first, DER) up to one of ``roots`` at time ``at``."""
    if not roots:
        raise VerificationError("no trusted root certificates were given")
    leaf = load_der_certificate(chain[0], source="the bundle")
    key = leaf_public_key(chain[0], source="the bundle")
    intermediates = [load_der_certificate(c, source="the bundle") for c in chain[1:]]
    try:
        verifier = (
            PolicyBuilder()
            .store(Store(list(roots)))
            .time(at)
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(),
                ee_policy=ExtensionPolicy.permit_all(),
            )
            .build_client_verifier()
        )
        verifier.verify(leaf, intermediates)
    except X509VerificationError as exc:
        detail = str(exc).split(" (encountered", 1)[0]
        raise VerificationError(
            f"the signing certificate does not chain to a trusted root at the signing time "
            f"{format_timestamp(at)}: {detail}"
        ) from exc
    refusal = signing_refusal(leaf)
    if refusal is not None:
        raise VerificationError(f"the signing certificate may not sign: {refusal}")
    return VerifiedCertificate(leaf, key, identities(leaf))
