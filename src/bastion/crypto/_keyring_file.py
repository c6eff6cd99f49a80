"""The local keyring file: a versioned JSON document holding key-encryption keys (KEKs).

::

    {
      "format": "bastion-keyring",
      "version": 1,
      "current": "kek-20260101-1a2b3c4d",
      "keys": [
        {"id": "kek-20260101-1a2b3c4d", "created": "2026-01-01T00:00:00Z", "key": "<base64>"}
      ]
    }

``key`` is 32 random bytes, standard base64. Parsing is strict: unknown or
missing fields, another format or version, duplicate ids, a ``current`` that
names no key and more than :data:`MAX_KEYS` keys are all refused. Error messages
name fields, never their values, so no key material can reach a log.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from bastion.errors import KeyringError

__all__ = ["FORMAT", "KEK_ID", "MAX_KEYS", "VERSION", "Kek", "KeyringContents"]

FORMAT: Final = "bastion-keyring"
VERSION: Final = 1
MAX_KEYS: Final = 1000
KEK_SIZE: Final = 32
#: What a key-encryption key id may look like, here and in any KMS behind the protocol.
KEK_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@/+-]{0,127}")
_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


@dataclass(frozen=True, slots=True)
class Kek:
    """One key-encryption key; its bytes never appear in a repr."""

    id: str
    created: datetime
    material: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyringContents:
    """What a keyring file holds: its keys in creation order and the current one."""

    current: str
    keys: tuple[Kek, ...]

    def __post_init__(self) -> None:
        if self.get(self.current) is None:
            raise KeyringError("a keyring's current key must be one of its keys")

    def get(self, kek_id: str) -> Kek | None:
        return next((kek for kek in self.keys if kek.id == kek_id), None)

    @property
    def current_kek(self) -> Kek:
        kek = self.get(self.current)
        if kek is None:  # __post_init__ rules this out
            raise KeyringError("a keyring's current key must be one of its keys")
        return kek

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT,
            "version": VERSION,
            "current": self.current,
            "keys": [
                {
                    "id": kek.id,
                    "created": kek.created.astimezone(UTC).strftime(_TIME_FORMAT),
                    "key": base64.b64encode(kek.material).decode("ascii"),
                }
                for kek in self.keys
            ],
        }
        return json.dumps(document, indent=2).encode("utf-8") + b"\n"

    @classmethod
    def from_json(cls, data: bytes, shown: str) -> KeyringContents:
        """Parse a keyring file's bytes; ``shown`` names the file in error messages."""
        try:
            document = json.loads(data)
        except (ValueError, RecursionError):
            # Not chained: a JSONDecodeError carries the whole document, keys included.
            raise KeyringError(
                f"keyring {shown} is not valid JSON; restore it from a backup"
            ) from None
        top = _fields(document, {"format", "version", "current", "keys"}, f"keyring {shown}")
        if top["format"] != FORMAT:
            raise KeyringError(f"{shown} is not a Bastion keyring (its format field is wrong)")
        version = top["version"]
        if type(version) is not int or version != VERSION:
            raise KeyringError(
                f"keyring {shown} has format version {_safe(version)}; this Bastion reads version "
                f"{VERSION}: upgrade Bastion or restore the keyring"
            )
        entries = top["keys"]
        if not isinstance(entries, list) or not 1 <= len(entries) <= MAX_KEYS:
            raise KeyringError(f"keyring {shown} must list between 1 and {MAX_KEYS} keys")
        keys = tuple(_kek(entry, index, shown) for index, entry in enumerate(entries))
        if len({kek.id for kek in keys}) != len(keys):
            raise KeyringError(f"keyring {shown} lists the same key id twice")
        current = top["current"]
        if not isinstance(current, str) or not any(kek.id == current for kek in keys):
            raise KeyringError(f"keyring {shown}: 'current' does not name one of its keys")
        return cls(current=current, keys=keys)


def _safe(value: object) -> str:
    """A short description of a non-secret field value, for messages."""
    return str(value) if type(value) is int and abs(value) < 1 << 32 else "(unreadable)"


def _fields(value: object, names: set[str], where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != names:
        raise KeyringError(
            f"{where} must be an object with exactly the fields {', '.join(sorted(names))}; "
            "restore the keyring from a backup"
        )
    return value


def _kek(entry: object, index: int, shown: str) -> Kek:
    where = f"keyring {shown}, key #{index + 1}"
    fields = _fields(entry, {"id", "created", "key"}, where)
    kek_id, created, encoded = fields["id"], fields["created"], fields["key"]
    if not isinstance(kek_id, str) or not KEK_ID.fullmatch(kek_id):
        raise KeyringError(f"{where}: the id is not a valid key id")
    try:
        when = datetime.strptime(created, _TIME_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        raise KeyringError(
            f"{where}: 'created' is not a UTC time like 2026-01-01T00:00:00Z"
        ) from None
    try:
        material = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
    except (binascii.Error, ValueError):
        # Deliberately not chained: the decoder's message could quote part of the key.
        raise KeyringError(f"{where}: the key is not valid base64") from None
    if len(material) != KEK_SIZE:
        raise KeyringError(f"{where}: the key must be {KEK_SIZE} bytes of base64")
    return Kek(id=kek_id, created=when, material=material)
