"""Signed checkpoints: the hub's signed statement of the log's size and Merkle root.

The signature is Ed25519 over ``CHECKPOINT_DOMAIN || canonical_json(checkpoint)``;
the domain prefix keeps a checkpoint signature from ever being valid as anything
else the key might sign. A signed checkpoint is exported as one JSON line: the
checkpoint's fields plus ``signature`` (standard base64).
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.audit._encoding import (
    MAX_SAFE_INTEGER,
    canonical_json,
    check_fields,
    check_hex_digest,
    check_int,
    check_text,
    check_utc,
    format_time,
    load_json_object,
    parse_time,
)
from bastion.audit._key import audit_key_id
from bastion.audit._merkle import MerkleAccumulator
from bastion.errors import InputError, IntegrityError, UsageError

__all__ = ["CHECKPOINT_DOMAIN", "Checkpoint", "CheckpointSigner", "SignedCheckpoint"]

CHECKPOINT_FORMAT = 1
CHECKPOINT_DOMAIN = b"bastion-audit-checkpoint/v1\n"
MAX_CHECKPOINT_BYTES = 4096
_MAX_SIZE = MAX_SAFE_INTEGER
_LOG_ID = re.compile(r"[A-Za-z0-9._:/-]{1,128}")
_KEY_ID = re.compile(r"sha256:[0-9a-f]{64}")
_FIELDS = frozenset({"v", "log_id", "size", "root", "last_hash", "time", "key_id"})
_SIGNED_FIELDS = _FIELDS | {"signature"}


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The log ``log_id`` held ``size`` entries with this Merkle ``root`` at ``time``."""

    log_id: str
    size: int
    root: str
    last_hash: str
    time: datetime
    key_id: str

    def __post_init__(self) -> None:
        check_text(self.log_id, "the checkpoint's log_id", limit=128, empty=False)
        if not _LOG_ID.fullmatch(self.log_id):
            raise InputError("a checkpoint's log_id is 1 to 128 letters, digits or ._:/-")
        check_int(self.size, "the checkpoint's size", low=0, high=_MAX_SIZE)
        check_hex_digest(self.root, "the checkpoint's root")
        check_hex_digest(self.last_hash, "the checkpoint's last_hash")
        check_utc(self.time, "the checkpoint's time")
        if not isinstance(self.key_id, str) or not _KEY_ID.fullmatch(self.key_id):
            raise InputError("a checkpoint's key_id must be sha256: and 64 lower-case hex digits")

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": CHECKPOINT_FORMAT,
            "log_id": self.log_id,
            "size": self.size,
            "root": self.root,
            "last_hash": self.last_hash,
            "time": format_time(self.time),
            "key_id": self.key_id,
        }

    def signed_bytes(self) -> bytes:
        """Exactly what the signature covers."""
        return CHECKPOINT_DOMAIN + canonical_json(self.to_dict())


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A checkpoint and the hub's Ed25519 signature over it."""

    checkpoint: Checkpoint
    signature: bytes

    def verify(self, public_key: ed25519.Ed25519PublicKey) -> Checkpoint:
        """The checkpoint, if ``public_key`` signed it; :class:`IntegrityError` if not."""
        expected = audit_key_id(public_key)
        if self.checkpoint.key_id != expected:
            raise IntegrityError(
                f"checkpoint of size {self.checkpoint.size} names key {self.checkpoint.key_id}, "
                f"not the audit key {expected}: it was signed by another key"
            )
        try:
            public_key.verify(self.signature, self.checkpoint.signed_bytes())
        except InvalidSignature:
            raise IntegrityError(
                f"the signature of the checkpoint of size {self.checkpoint.size} does not verify: "
                "the checkpoint was forged or altered"
            ) from None
        return self.checkpoint

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.checkpoint.to_dict(),
            "signature": base64.b64encode(self.signature).decode("ascii"),
        }

    def to_json(self) -> str:
        """One line of canonical JSON, no newline: the export format."""
        return canonical_json(self.to_dict()).decode("utf-8")

    @classmethod
    def from_json(cls, line: str | bytes) -> SignedCheckpoint:
        """Read one exported line strictly; the signature is read, not checked (see verify)."""
        doc = load_json_object(line, "audit checkpoint", limit=MAX_CHECKPOINT_BYTES)
        check_fields(doc, frozenset(_SIGNED_FIELDS), "audit checkpoint")
        version = check_int(doc["v"], "the checkpoint's format version", low=0, high=2**31)
        if version != CHECKPOINT_FORMAT:
            raise InputError(
                f"audit checkpoint format version {version} is not supported; "
                f"this Bastion reads version {CHECKPOINT_FORMAT}"
            )
        checkpoint = Checkpoint(
            log_id=doc["log_id"],
            size=doc["size"],
            root=doc["root"],
            last_hash=doc["last_hash"],
            time=parse_time(doc["time"], "the checkpoint's time"),
            key_id=doc["key_id"],
        )
        return cls(checkpoint, _signature(doc["signature"]))


def _signature(value: object) -> bytes:
    if not isinstance(value, str) or len(value) != 88:
        raise InputError("a checkpoint's signature must be 64 bytes in standard base64")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError("a checkpoint's signature is not valid base64") from exc
    if len(raw) != 64 or base64.b64encode(raw).decode("ascii") != value:
        raise InputError("a checkpoint's signature must be 64 bytes in canonical base64")
    return raw


class CheckpointSigner:
    """Signs checkpoints with the hub's audit key."""

    __slots__ = ("_key", "key_id")

    def __init__(self, private_key: ed25519.Ed25519PrivateKey) -> None:
        if not isinstance(private_key, ed25519.Ed25519PrivateKey):
            raise UsageError("audit checkpoints are signed with an Ed25519 private key")
        self._key = private_key
        self.key_id = audit_key_id(private_key)

    @property
    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._key.public_key()

    def sign(self, checkpoint: Checkpoint) -> SignedCheckpoint:
        if checkpoint.key_id != self.key_id:
            raise UsageError(
                f"the checkpoint names key {checkpoint.key_id}, but this signer holds {self.key_id}"
            )
        return SignedCheckpoint(checkpoint, self._key.sign(checkpoint.signed_bytes()))

    def checkpoint(
        self, *, log_id: str, tree: MerkleAccumulator, last_hash: str, now: datetime
    ) -> SignedCheckpoint:
        """Sign the state of a log whose entries' hashes ``tree`` has accumulated."""
        if not isinstance(now, datetime) or now.tzinfo is None:
            raise UsageError("a checkpoint's time must be an aware datetime (UTC)")
        return self.sign(
            Checkpoint(
                log_id=log_id,
                size=tree.size,
                root=tree.root().hex(),
                last_hash=last_hash,
                time=now.astimezone(UTC),
                key_id=self.key_id,
            )
        )
