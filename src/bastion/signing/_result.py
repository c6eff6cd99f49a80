"""What signing and verification report back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bastion.signing._bundle import format_timestamp

__all__ = ["SignResult", "Signer", "VerificationResult"]


def _time(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


@dataclass(frozen=True, slots=True)
class SignResult:
    """A signature just written."""

    model: str
    signature: str
    root_digest: str
    algorithm: str
    key_fingerprint: str
    resources: int
    signed_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "signature": self.signature,
            "root_digest": self.root_digest,
            "algorithm": self.algorithm,
            "key_fingerprint": self.key_fingerprint,
            "resources": self.resources,
            "signed_at": _time(self.signed_at),
        }


@dataclass(frozen=True, slots=True)
class Signer:
    """A trusted signer whose signature over the model verified."""

    name: str
    kind: Literal["key", "certificate"]
    algorithm: str
    key_fingerprint: str
    signature: str
    identities: tuple[str, ...] = ()
    signed_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "algorithm": self.algorithm,
            "key_fingerprint": self.key_fingerprint,
            "signature": self.signature,
            "identities": list(self.identities),
            "signed_at": _time(self.signed_at),
        }


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """The outcome of verifying a model against its signature(s).

    ``modified``, ``added`` and ``removed`` name files relative to the model
    root. A successful :func:`bastion.verify` returns a result with all three
    empty; a failed one raises :class:`bastion.VerificationError` carrying it.
    """

    model: str
    root_digest: str | None = None
    serialization: dict[str, Any] | None = None
    files: int = 0
    signers: tuple[Signer, ...] = ()
    modified: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return bool(self.signers) and not (self.modified or self.added or self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "model": self.model,
            "root_digest": self.root_digest,
            "serialization": self.serialization,
            "files": self.files,
            "signers": [s.to_dict() for s in self.signers],
            "modified": list(self.modified),
            "added": list(self.added),
            "removed": list(self.removed),
            "notes": list(self.notes),
        }
