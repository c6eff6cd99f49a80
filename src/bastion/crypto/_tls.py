"""TLS material for local use: make it once, then reuse it, renewing the server certificate.

:func:`ensure_tls_material` keeps four files in one directory (mode 0700):
``ca.crt`` and ``server.crt`` (mode 0644), ``ca.key`` and ``server.key`` (PEM
PKCS#8, unencrypted so the server can start unattended, mode 0600). The first
call creates a CA and a server certificate (see ``_tls_issue``). Later calls
reuse them and issue a new server key and certificate only when the old one is
missing, unreadable, not signed by the CA, expires within 30 days, is not yet
valid, or lacks a requested host name. The CA is made anew only when both its
files are missing or it expires within 30 days; its fingerprint, which clients
pin, then changes and a warning is logged. A CA that is damaged (one file
missing, unreadable, or a key that does not match) is an error, never silently
replaced; a private key readable by group or others is an error too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from bastion._files import read_input
from bastion.crypto._private_files import read_private_file, write_file_atomically
from bastion.crypto._tls_issue import issue_ca, issue_server, parse_hostnames
from bastion.errors import CertificateFormatError, InputError, KeyFormatError, UsageError

__all__ = ["DEFAULT_HOSTNAMES", "TlsMaterial", "ensure_tls_material"]

_log = logging.getLogger(__name__)

DEFAULT_HOSTNAMES: Final = ("localhost", "127.0.0.1", "::1")
RENEW_BEFORE: Final = timedelta(days=30)
_MAX_FILE: Final = 64 * 1024
_Pair = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


@dataclass(frozen=True, slots=True)
class TlsMaterial:
    """Where the TLS files are, and the CA's fingerprint to show to users."""

    directory: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    fingerprint: str
    """SHA-256 of the CA certificate's DER, ``AB:CD:...`` as ``openssl x509 -fingerprint``."""
    server_not_after: datetime
    created: bool
    """Whether this call wrote anything new (a CA, a server certificate, or both)."""


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of ``cert``'s DER as colon-separated upper-case hex."""
    return ":".join(f"{byte:02X}" for byte in cert.fingerprint(hashes.SHA256()))


def ensure_tls_material(
    directory: Path,
    *,
    hostnames: Sequence[str] = DEFAULT_HOSTNAMES,
    now: datetime | None = None,
) -> TlsMaterial:
    """Create or reuse the CA and server certificate in ``directory``."""
    now = datetime.now(UTC) if now is None else now
    if now.tzinfo is None:
        raise UsageError("now must be a timezone-aware datetime")
    names = parse_hostnames(hostnames)
    directory = Path(directory)
    _prepare(directory)
    paths = {name: directory / name for name in ("ca.crt", "ca.key", "server.crt", "server.key")}
    created = False
    ca = _load_ca(paths["ca.crt"], paths["ca.key"], now)
    if ca is None:
        ca = issue_ca(now)
        _write(paths["ca.key"], paths["ca.crt"], ca)
        _log.info("created a TLS certificate authority, fingerprint %s", fingerprint(ca[0]))
        created = True
    server = None if created else _load_server(paths["server.crt"], paths["server.key"], ca[0])
    if server is None or _needs_new_server(server, names, now):
        server = issue_server(*ca, names, now)
        _write(paths["server.key"], paths["server.crt"], server)
        _log.info("issued a TLS server certificate for %s", ", ".join(map(str, hostnames)))
        created = True
    return TlsMaterial(
        directory=directory,
        ca_cert=paths["ca.crt"],
        ca_key=paths["ca.key"],
        server_cert=paths["server.crt"],
        server_key=paths["server.key"],
        fingerprint=fingerprint(ca[0]),
        server_not_after=server[0].not_valid_after_utc,
        created=created,
    )


def _prepare(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not directory.is_dir():
            raise InputError(f"TLS directory {str(directory)!r} is not a directory")
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise InputError(f"cannot use TLS directory {str(directory)!r}: {exc.strerror}") from exc


def _write(key_path: Path, cert_path: Path, pair: _Pair) -> None:
    cert, key = pair
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    write_file_atomically(
        key_path, key_pem, mode=0o600, replace=True, what="TLS key", error=InputError
    )
    write_file_atomically(
        cert_path, cert_pem, mode=0o644, replace=True, what="TLS certificate", error=InputError
    )


def _read_cert(path: Path) -> x509.Certificate:
    data = read_input(path, "TLS certificate", limit=_MAX_FILE)
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise CertificateFormatError(f"TLS certificate {str(path)!r} is not valid PEM") from exc


def _read_key(path: Path) -> bytes:
    """The key file's bytes; a file readable by group or others is refused here."""
    return read_private_file(path, "TLS private key", limit=_MAX_FILE, error=KeyFormatError)


def _parse_key(data: bytes, path: Path) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # Not chained: a key parser's message may quote the file.
        raise KeyFormatError(
            f"TLS private key {str(path)!r} is not an unencrypted PEM key"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise KeyFormatError(f"TLS private key {str(path)!r} is not an ECDSA P-256 key")
    return key


def _matches(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> bool:
    return cert.public_key() == key.public_key()


def _load_ca(cert_path: Path, key_path: Path, now: datetime) -> _Pair | None:
    """The CA, or None when there is none yet or it is due for renewal."""
    present = [os.path.lexists(cert_path), os.path.lexists(key_path)]
    if not any(present):
        return None
    advice = f"remove ca.crt and ca.key from {str(cert_path.parent)!r} to make a new CA"
    if not all(present):
        missing = cert_path if not present[0] else key_path
        raise CertificateFormatError(f"TLS CA file {str(missing)!r} is missing; {advice}")
    key_pem = _read_key(key_path)
    try:
        cert, key = _read_cert(cert_path), _parse_key(key_pem, key_path)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (InputError, ValueError, x509.ExtensionNotFound, x509.DuplicateExtension) as exc:
        raise CertificateFormatError(f"the TLS CA is unreadable ({exc}); {advice}") from exc
    if not constraints.ca or not _matches(cert, key):
        raise CertificateFormatError(f"the TLS CA key does not match its certificate; {advice}")
    if cert.not_valid_after_utc - now < RENEW_BEFORE or now < cert.not_valid_before_utc:
        _log.warning("the TLS CA expires on %s: making a new one", cert.not_valid_after_utc)
        return None
    return cert, key


def _load_server(cert_path: Path, key_path: Path, ca_cert: x509.Certificate) -> _Pair | None:
    """The server certificate and key, or None when they are missing or do not fit the CA."""
    if not (os.path.lexists(cert_path) and os.path.lexists(key_path)):
        return None
    key_pem = _read_key(key_path)  # a too widely readable key is an error, not a renewal
    try:
        key = _parse_key(key_pem, key_path)
        cert = _read_cert(cert_path)
        cert.verify_directly_issued_by(ca_cert)
    except (InputError, ValueError, TypeError, InvalidSignature) as exc:
        _log.warning(
            "TLS server certificate %s is not usable (%s): issuing a new one", cert_path, exc
        )
        return None
    return (cert, key) if _matches(cert, key) else None


def _needs_new_server(pair: _Pair, names: tuple[x509.GeneralName, ...], now: datetime) -> bool:
    cert = pair[0]
    if cert.not_valid_after_utc - now < RENEW_BEFORE or now < cert.not_valid_before_utc:
        return True
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound, x509.DuplicateExtension):
        return True
    return not set(names) <= set(san)
