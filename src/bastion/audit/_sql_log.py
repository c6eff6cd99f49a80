"""The audit log kept in the hub's database: entries appended under a lock, checkpoints signed.

Appending reads the chain's head (one row, locked with ``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite serialises writers), seals the new entry to
the previous hash, stores it, and advances the head and its Merkle
accumulator in the same transaction. Every ``checkpoint_every`` entries, and
whenever asked, the head is signed as a checkpoint with the hub's audit key.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit._checkpoint import CheckpointSigner, SignedCheckpoint
from bastion.audit._entry import GENESIS_HASH, AuditEntry
from bastion.audit._key import load_or_create_audit_key, public_key_pem
from bastion.audit._merkle import MerkleAccumulator
from bastion.db import AuditCheckpointRow, AuditEntryRow, AuditHead, Database, aware
from bastion.errors import InputError, IntegrityError

__all__ = ["AuditLog", "printable"]

#: Details keys that look like secrets are renamed, never recorded under that name.
_SECRET_LIKE = ("password", "passphrase", "passwd", "secret", "token", "authorization", "cookie")


def printable(text: str, limit: int) -> str:
    """``text`` with control and format characters (bidi overrides) escaped, cut to ``limit``.

    Resources and sources come from requests; the log stays one line per entry and
    shows them as sent, escaped.
    """
    out = []
    for c in text:
        if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return "".join(out)[:limit]


def _clean_details(details: dict[str, Any]) -> dict[str, Any]:
    clean: dict[str, Any] = {}
    for key, value in details.items():
        name = printable(str(key), 64)
        if any(word in name.lower() for word in _SECRET_LIKE):
            name = f"field_{len(clean)}"
            value = "(withheld)"
        clean[name] = printable(value, 1024) if isinstance(value, str) else value
    return clean


def _utcnow() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    def __init__(
        self,
        db: Database,
        signer: CheckpointSigner,
        *,
        checkpoint_every: int = 1000,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._db = db
        self._signer = signer
        self._every = max(1, checkpoint_every)
        self._now = now
        self._lock = threading.Lock()
        self.log_id = "bastion-audit:" + signer.key_id.removeprefix("sha256:")[:16]

    @classmethod
    def open(
        cls,
        db: Database,
        key_path: Path,
        *,
        checkpoint_every: int = 1000,
        now: Callable[[], datetime] = _utcnow,
    ) -> AuditLog:
        key = load_or_create_audit_key(key_path)
        return cls(db, CheckpointSigner(key), checkpoint_every=checkpoint_every, now=now)

    def record(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        outcome: str,
        source: str,
        request_id: str,
        details: dict[str, Any],
    ) -> AuditEntry:
        with self._lock, self._db.session() as s:
            head = _head(s)
            entry = AuditEntry.seal(
                prev_hash=head.hash,
                seq=head.seq + 1,
                time=self._now(),
                actor=printable(actor, 256) or "unknown",
                action=action,
                resource=printable(resource, 512),
                outcome=outcome,  # type: ignore[arg-type]
                source=printable(source, 256),
                request_id=printable(request_id, 128),
                details=_clean_details(details),
            )
            s.add(
                AuditEntryRow(
                    seq=entry.seq,
                    time=entry.time,
                    actor=entry.actor,
                    action=entry.action,
                    resource=entry.resource,
                    outcome=entry.outcome,
                    source=entry.source,
                    request_id=entry.request_id,
                    line=entry.to_json(),
                    prev_hash=entry.prev_hash,
                    hash=entry.hash,
                )
            )
            tree = MerkleAccumulator.from_json(head.accumulator)
            tree.append(bytes.fromhex(entry.hash))
            head.seq, head.hash, head.accumulator = entry.seq, entry.hash, tree.to_json()
            if entry.seq % self._every == 0:
                self._sign(s, tree, entry.hash)
            return entry

    def checkpoint(self) -> str | None:
        """Sign the current head now (unless it is signed already); its JSON line.

        Raises :class:`IntegrityError` if the head's stored checkpoint cannot be read.
        """
        with self._lock, self._db.session() as s:
            head = _head(s)
            if head.seq == 0:
                return None
            existing = s.get(AuditCheckpointRow, head.seq)
            if existing is not None:
                return _readable(existing)
            return self._sign(s, MerkleAccumulator.from_json(head.accumulator), head.hash)

    def _sign(self, s: Session, tree: MerkleAccumulator, last_hash: str) -> str:
        signed = self._signer.checkpoint(
            log_id=self.log_id, tree=tree, last_hash=last_hash, now=self._now()
        )
        body = signed.to_json()
        s.add(AuditCheckpointRow(size=tree.size, body=body))
        return body

    def entries(
        self, *, after: int = 0, limit: int = 1000, since: datetime | None = None
    ) -> list[str]:
        """Entries with seq > ``after`` (and not older than ``since``), oldest first."""
        return self.page(after=after, limit=limit, since=since)[0]

    def page(
        self, *, after: int = 0, limit: int = 1000, since: datetime | None = None
    ) -> tuple[list[str], int]:
        """:meth:`entries`, and the row seq to read the next page after.

        The next page starts after the last *row* returned (``after`` itself when none
        was), never after the seq written inside a line: a line altered in the
        database must not steer a reader back or forth through the log.
        """
        query = select(AuditEntryRow.seq, AuditEntryRow.line).where(AuditEntryRow.seq > after)
        if since is not None:
            # SQLite keeps the column's wall-clock time and drops any offset, and the
            # stored times are UTC: compare in UTC (PostgreSQL converts either way).
            query = query.where(AuditEntryRow.time >= aware(since).astimezone(UTC))
        with self._db.session() as s:
            rows = s.execute(query.order_by(AuditEntryRow.seq).limit(limit)).all()
        return [line for _, line in rows], (rows[-1].seq if rows else after)

    def checkpoints(self) -> list[str]:
        with self._db.session() as s:
            return list(
                s.scalars(select(AuditCheckpointRow.body).order_by(AuditCheckpointRow.size))
            )

    def public_key(self) -> dict[str, Any]:
        return {
            "log_id": self.log_id,
            "key_id": self._signer.key_id,
            "public_key": public_key_pem(self._signer.public_key).decode(),
        }

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        lines = self.checkpoints()
        return SignedCheckpoint.from_json(lines[-1]) if lines else None


def _readable(row: AuditCheckpointRow) -> str:
    """A stored checkpoint's line, if it can still be read as one."""
    try:
        SignedCheckpoint.from_json(row.body)
    except InputError as exc:
        raise IntegrityError(
            f"the stored audit checkpoint for size {row.size} cannot be read ({exc.message}): "
            "the audit log was altered or corrupted in the database; keep a copy of the "
            "database and investigate"
        ) from exc
    return row.body


def _head(s: Session) -> AuditHead:
    head = s.get(AuditHead, 1, with_for_update=True)
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS_HASH, accumulator=MerkleAccumulator().to_json())
        s.add(head)
        s.flush()
    return head
