"""What every part of the hub works with: the database, the blob store, the keyring, limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from bastion.crypto import KeyManager
from bastion.db import Database
from bastion.registry._blobs import BlobStore
from bastion.scanning import Severity

__all__ = ["Hub", "HubLimits"]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class HubLimits:
    """Operator-configurable bounds on what one push may hold, and the admission threshold."""

    max_version_bytes: int = 64 << 30
    max_files: int = 10_000
    segment_size: int = 1 << 20
    upload_ttl: timedelta = timedelta(hours=24)
    #: A scan finding at or above this severity quarantines the version.
    scan_threshold: Severity = Severity.LOW


@dataclass(frozen=True, slots=True)
class Hub:
    db: Database
    blobs: BlobStore
    keys: KeyManager
    limits: HubLimits = field(default_factory=HubLimits)
    now: Callable[[], datetime] = _utcnow
