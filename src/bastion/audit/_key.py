"""The hub's Ed25519 audit key: created once, kept in a PEM file only its owner can read.

The file is PKCS#8 PEM, unencrypted unless a passphrase is given, mode 0600. It is
created atomically (written to a private temporary file, then linked into place,
which fails rather than replace an existing key) and refused on load when the group
or others may read it. The key id is ``sha256:`` and the hex SHA-256 of the public
key's DER SubjectPublicKeyInfo, the RFC 6962 way of naming a log's key.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.crypto._private_files import read_private_file
from bastion.errors import ConflictError, InputError, KeyFormatError, PassphraseError

__all__ = [
    "audit_key_id",
    "create_audit_key",
    "load_audit_key",
    "load_audit_public_key",
    "load_or_create_audit_key",
    "public_key_pem",
]

MAX_KEY_FILE = 64 * 1024
_Key = ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey


def _public(key: _Key) -> ed25519.Ed25519PublicKey:
    return key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key


def public_key_pem(key: _Key) -> bytes:
    """The public half as PEM SubjectPublicKeyInfo: what verifiers of the log are given."""
    return _public(key).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def audit_key_id(key: _Key) -> str:
    """``sha256:<hex>`` of the public key's DER SubjectPublicKeyInfo."""
    der = _public(key).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


def load_audit_public_key(
    data: bytes, *, source: str = "audit public key"
) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key from PEM (what :func:`public_key_pem` writes)."""
    if len(data) > MAX_KEY_FILE:
        raise KeyFormatError(f"{source} is too large to be a key file")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise KeyFormatError(f"{source} is not a readable PEM public key") from exc
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFormatError(f"{source} is not an Ed25519 key; audit checkpoints use Ed25519")
    return key


def _parse_private(data: bytes, passphrase: bytes | None, source: str) -> ed25519.Ed25519PrivateKey:
    encrypted = b"ENCRYPTED" in data[:200]
    if encrypted and not passphrase:
        raise PassphraseError(f"{source} is encrypted; give its passphrase")
    try:
        key = serialization.load_pem_private_key(data, passphrase if encrypted else None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        if encrypted:
            raise PassphraseError(f"cannot decrypt {source}: wrong passphrase, or damaged") from exc
        raise KeyFormatError(f"{source} is not a readable PEM private key") from exc
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFormatError(f"{source} is not an Ed25519 key; audit checkpoints use Ed25519")
    return key


def load_audit_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None
) -> ed25519.Ed25519PrivateKey:
    """Read the audit key, refusing a file the group or others could read."""
    source = f"audit key {os.fspath(path)!r}"
    data = read_private_file(Path(path), "audit key", limit=MAX_KEY_FILE, error=KeyFormatError)
    return _parse_private(data, passphrase, source)


def create_audit_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None
) -> ed25519.Ed25519PrivateKey:
    """Generate a key and write it to ``path`` (mode 0600); never replaces an existing file."""
    target = Path(path)
    key = ed25519.Ed25519PrivateKey.generate()
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase)
        if passphrase
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    )
    temp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")
    try:
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.link(temp, target)
    except FileExistsError:
        raise ConflictError(
            f"audit key {os.fspath(path)!r} exists already; load it instead of replacing it"
        ) from None
    except OSError as exc:
        raise InputError(f"cannot create audit key {os.fspath(path)!r}: {exc.strerror}") from exc
    finally:
        _remove(temp)
    _sync_directory(target.parent)
    return key


def _remove(path: Path) -> None:
    # A stray temporary file that cannot be removed holds nothing the key file does not.
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def _sync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return  # best effort: not every platform can open a directory
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_or_create_audit_key(
    path: str | os.PathLike[str], *, passphrase: bytes | None = None
) -> ed25519.Ed25519PrivateKey:
    """The key at ``path``, created first if there is none (safe when two processes race)."""
    if not os.path.lexists(path):
        try:
            return create_audit_key(path, passphrase=passphrase)
        except ConflictError:
            pass  # another process created it meanwhile: use theirs
    return load_audit_key(path, passphrase=passphrase)
