"""Key-encryption keys (KEKs): the :class:`KeyManager` protocol and the local keyring file.

Every artifact is encrypted with its own 32-byte data key; the data key is stored
only *wrapped* (encrypted) by a KEK, as a :class:`WrappedKey` that names the KEK.
Rotating the KEK makes new wraps use a new key, keeps the old ones for unwrapping,
and lets :func:`rewrap` move stored data keys to the current KEK without touching
the (large) encrypted artifacts.

:class:`LocalKeyring` keeps KEKs in a JSON file (see ``_keyring_file``) of mode
0600. A wrap is AES-256-GCM under the KEK with a random 96-bit nonce; its
associated data binds the KEK id and the caller's ``context`` (the hub passes the
artifact id), so a wrapped key copied to another artifact's row fails to unwrap.
The blob is ``nonce (12) || ciphertext (32) || tag (16)``.

An external KMS implements the same protocol, and the KEK never leaves it:

- **HashiCorp Vault Transit**: ``current_key_id`` is ``<key name>@<latest version>``;
  ``wrap`` calls ``POST transit/encrypt/<name>`` with the base64 data key as
  ``plaintext`` and the base64 ``context`` as ``associated_data`` (AES-GCM keys;
  for ``derived`` keys pass it as ``context``) and stores the returned
  ``vault:vN:...`` ciphertext as the blob; ``unwrap`` calls ``transit/decrypt``;
  ``rotate`` calls ``transit/keys/<name>/rotate``; ``key_ids`` lists the versions
  at or above ``min_decryption_version``. Vault errors map to
  :class:`~bastion.errors.HubUnavailableError`, a refused decrypt to
  :class:`~bastion.errors.IntegrityError`.
- **AWS KMS**: ``wrap`` is ``Encrypt`` (or ``GenerateDataKey``) with the
  ``context`` as an ``EncryptionContext`` entry, the blob is the returned
  ``CiphertextBlob``; ``unwrap`` is ``Decrypt`` with the same context; ``rotate``
  enables or triggers key rotation (``RotateKeyOnDemand``), since KMS keeps old
  key material for decryption by itself.

In both, the id stored in a :class:`WrappedKey` must match :data:`KEK_ID`.
Nothing here logs or shows key bytes: reprs name ids and counts only.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.crypto._keyring_file import KEK_ID, KEK_SIZE, MAX_KEYS, Kek, KeyringContents
from bastion.crypto._private_files import read_private_file, write_file_atomically
from bastion.errors import IntegrityError, KeyringError, UsageError

__all__ = ["KEK_ID", "KeyManager", "LocalKeyring", "WrappedKey", "rewrap"]

_log = logging.getLogger(__name__)

DATA_KEY_SIZE: Final = 32
MAX_BLOB: Final = 4096
MAX_KEYRING_FILE: Final = 1 << 20
_TEXT_VERSION: Final = "wk1"
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]+")
_NONCE_SIZE: Final = 12
_LOCAL_BLOB_SIZE: Final = _NONCE_SIZE + DATA_KEY_SIZE + 16
_AAD_LABEL: Final = b"bastion wrapped data key v1\x00"


@dataclass(frozen=True, slots=True)
class WrappedKey:
    """A data key encrypted under the key-encryption key ``kek_id``."""

    kek_id: str
    blob: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.kek_id, str) or not KEK_ID.fullmatch(self.kek_id):
            raise UsageError("a key-encryption key id must match " + KEK_ID.pattern)
        if not isinstance(self.blob, bytes) or not 1 <= len(self.blob) <= MAX_BLOB:
            raise UsageError(f"a wrapped key's blob must be 1 to {MAX_BLOB} bytes")

    def __repr__(self) -> str:
        return f"WrappedKey(kek_id={self.kek_id!r}, blob=<{len(self.blob)} bytes>)"

    def to_text(self) -> str:
        """``wk1:<kek id>:<blob as unpadded base64url>``, for a database text column."""
        blob = base64.urlsafe_b64encode(self.blob).rstrip(b"=").decode("ascii")
        return f"{_TEXT_VERSION}:{self.kek_id}:{blob}"

    @classmethod
    def from_text(cls, text: str) -> WrappedKey:
        """Parse :meth:`to_text`'s output strictly; anything else is an IntegrityError."""
        if not isinstance(text, str) or len(text) > 2 * MAX_BLOB or not text.isascii():
            raise IntegrityError(_malformed("it is not a short ASCII string"))
        parts = text.split(":")
        if len(parts) != 3:
            raise IntegrityError(_malformed("it does not have three ':'-separated parts"))
        version, kek_id, encoded = parts
        if version != _TEXT_VERSION:
            raise IntegrityError(_malformed(f"it does not start with {_TEXT_VERSION!r}"))
        if not KEK_ID.fullmatch(kek_id):
            raise IntegrityError(_malformed("its key-encryption key id is not valid"))
        if not _B64URL.fullmatch(encoded) or len(encoded) % 4 == 1:
            raise IntegrityError(_malformed("its blob is not unpadded base64url"))
        blob = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
        if len(blob) > MAX_BLOB or base64.urlsafe_b64encode(blob).rstrip(b"=") != encoded.encode():
            raise IntegrityError(_malformed("its blob is not canonical base64url"))
        return cls(kek_id=kek_id, blob=blob)


def _malformed(reason: str) -> str:
    return f"a stored wrapped key is malformed ({reason}); the record was damaged or tampered with"


class KeyManager(Protocol):
    """What the hub needs from a key-encryption key service (local keyring or external KMS)."""

    @property
    def current_key_id(self) -> str:
        """The id of the KEK that :meth:`wrap` uses now."""
        ...

    def key_ids(self) -> tuple[str, ...]:
        """Every KEK id that :meth:`unwrap` can use, oldest first."""
        ...

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey:
        """Encrypt ``data_key`` under the current KEK, bound to ``context``."""
        ...

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        """The data key; IntegrityError if it does not authenticate with ``context``."""
        ...

    def rotate(self) -> str:
        """Make a new current KEK, keep the old ones for unwrapping; returns the new id."""
        ...


def rewrap(manager: KeyManager, wrapped: WrappedKey, *, context: bytes) -> WrappedKey:
    """``wrapped`` re-encrypted under the current KEK (returned as is when it already is)."""
    if wrapped.kek_id == manager.current_key_id:
        return wrapped
    return manager.wrap(manager.unwrap(wrapped, context=context), context=context)


def _aad(kek_id: str, context: bytes) -> bytes:
    if not isinstance(context, bytes):
        raise UsageError("a wrap context must be bytes (the hub passes the artifact id)")
    encoded = kek_id.encode("ascii")
    return _AAD_LABEL + len(encoded).to_bytes(1, "big") + encoded + context


def _check_data_key(data_key: bytes) -> None:
    if not isinstance(data_key, bytes) or len(data_key) != DATA_KEY_SIZE:
        raise UsageError(f"a data key must be {DATA_KEY_SIZE} bytes")


def _new_kek(existing: KeyringContents | None, now: datetime) -> Kek:
    taken = set() if existing is None else {kek.id for kek in existing.keys}
    while (kek_id := f"kek-{now.astimezone(UTC):%Y%m%d}-{secrets.token_hex(4)}") in taken:
        pass  # 32 random bits per try: a second try is already rare
    return Kek(id=kek_id, created=now, material=os.urandom(KEK_SIZE))


class LocalKeyring:
    """KEKs in a local JSON keyring file of mode 0600; implements :class:`KeyManager`.

    Open an existing file with ``LocalKeyring(path)``; make a new one with
    :meth:`create`. Safe to share between threads. Rotate from one process at a
    time: :meth:`rotate` re-reads the file before rewriting it, and :meth:`unwrap`
    re-reads it once when it meets a KEK id it does not know.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()
        self._contents = self._load()

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, now: datetime | None = None) -> LocalKeyring:
        """Create a keyring file with one fresh KEK; an existing file is never replaced."""
        target = Path(path)
        kek = _new_kek(None, now or datetime.now(UTC))
        contents = KeyringContents(current=kek.id, keys=(kek,))
        write_file_atomically(
            target,
            contents.to_json(),
            mode=0o600,
            replace=False,
            what="keyring",
            error=KeyringError,
        )
        _log.info("created keyring %s with key-encryption key %s", target, kek.id)
        return cls(target)

    def __repr__(self) -> str:
        contents = self._contents
        return (
            f"LocalKeyring({str(self._path)!r}, current_key_id={contents.current!r}, "
            f"keys={len(contents.keys)})"
        )

    @property
    def path(self) -> Path:
        return self._path

    @property
    def current_key_id(self) -> str:
        return self._contents.current

    def key_ids(self) -> tuple[str, ...]:
        return tuple(kek.id for kek in self._contents.keys)

    def _load(self) -> KeyringContents:
        shown = repr(str(self._path))
        data = read_private_file(self._path, "keyring", limit=MAX_KEYRING_FILE, error=KeyringError)
        return KeyringContents.from_json(data, shown)

    def reload(self) -> None:
        """Re-read the keyring file (after another process rotated it)."""
        contents = self._load()
        with self._lock:
            self._contents = contents

    def wrap(self, data_key: bytes, *, context: bytes) -> WrappedKey:
        _check_data_key(data_key)
        kek = self._contents.current_kek
        nonce = os.urandom(_NONCE_SIZE)
        sealed = AESGCM(kek.material).encrypt(nonce, data_key, _aad(kek.id, context))
        return WrappedKey(kek_id=kek.id, blob=nonce + sealed)

    def unwrap(self, wrapped: WrappedKey, *, context: bytes) -> bytes:
        kek = self._contents.get(wrapped.kek_id)
        if kek is None:
            self.reload()
            kek = self._contents.get(wrapped.kek_id)
        if kek is None:
            raise KeyringError(
                f"keyring {str(self._path)!r} has no key-encryption key {wrapped.kek_id!r}; "
                "restore the keyring (from a backup) that holds it"
            )
        blob = wrapped.blob
        if len(blob) != _LOCAL_BLOB_SIZE:
            raise IntegrityError("a wrapped data key has the wrong length: it was tampered with")
        try:
            data_key = AESGCM(kek.material).decrypt(
                blob[:_NONCE_SIZE], blob[_NONCE_SIZE:], _aad(kek.id, context)
            )
        except InvalidTag:
            raise IntegrityError(
                "a wrapped data key did not authenticate: it belongs to another artifact "
                "(wrong context) or was tampered with"
            ) from None
        return data_key

    def rotate(self, *, now: datetime | None = None) -> str:
        """Add a fresh KEK and make it current; older KEKs stay for unwrapping."""
        with self._lock:
            contents = self._load()
            if len(contents.keys) >= MAX_KEYS:
                raise KeyringError(
                    f"keyring {str(self._path)!r} holds {MAX_KEYS} keys already; rewrap stored "
                    "data keys and retire old key-encryption keys first"
                )
            kek = _new_kek(contents, now or datetime.now(UTC))
            rotated = KeyringContents(current=kek.id, keys=(*contents.keys, kek))
            self._write(rotated)
        _log.info("rotated keyring %s: current key-encryption key is now %s", self._path, kek.id)
        return kek.id

    def retire(self, kek_id: str) -> None:
        """Remove an old KEK once nothing is wrapped under it any more; never the current one.

        Data keys still wrapped under it become unrecoverable: :func:`rewrap` them first.
        """
        with self._lock:
            contents = self._load()
            if kek_id == contents.current:
                raise UsageError("the current key-encryption key cannot be retired; rotate first")
            if contents.get(kek_id) is None:
                raise KeyringError(f"keyring {str(self._path)!r} has no key {kek_id!r}")
            kept = tuple(kek for kek in contents.keys if kek.id != kek_id)
            self._write(KeyringContents(current=contents.current, keys=kept))
        _log.warning("retired key-encryption key %s from keyring %s", kek_id, self._path)

    def _write(self, contents: KeyringContents) -> None:
        write_file_atomically(
            self._path,
            contents.to_json(),
            mode=0o600,
            replace=True,
            what="keyring",
            error=KeyringError,
        )
        self._contents = contents
