"""The audit log kept in the hub's database: entries appended under a lock, checkpoints signed.

Appending reads the chain's head (one row, locked with ``SELECT ... FOR
UPDATE`` on PostgreSQL; SQLite serialises writers), seals the new entry to
the previous hash, stores it, and advances the head and its Merkle
accumulator in the same transaction. Every ``checkpoint_every`` entries, and
whenever asked, the head is signed as a checkpoint with the hub's audit key.

The head in the database is not trusted for signing. The log keeps the state it knows
to be the log's history (what it appended itself, or reached by replaying the stored
entries from its witness, see ``_hub_witness.py``) and signs that; a head it cannot reach
that way (entries rewritten, or the database rolled back) is never signed.
"""

from __future__ import annotations

import logging
import threading
import unicodedata
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.audit._checkpoint import CheckpointSigner, SignedCheckpoint
from bastion.audit._entry import GENESIS_HASH, AuditEntry
from bastion.audit._hub_witness import ChainState, HubWitness, replay
from bastion.audit._key import load_or_create_audit_key, public_key_pem
from bastion.audit._merkle import MerkleAccumulator
from bastion.db import AuditCheckpointRow, AuditEntryRow, AuditHead, Database, aware
from bastion.errors import InputError, IntegrityError

__all__ = ["AuditLog", "printable"]

log = logging.getLogger(__name__)

#: Stored entries read per query while replaying them.
_REPLAY_PAGE = 1000

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
        witness: Path | None = None,
    ) -> None:
        """``witness``: the file keeping the last checkpoint signed (see ``_hub_witness.py``).

        Without one, the state signed is kept in memory only. With none yet (a first start,
        or a witness removed on purpose), the stored head is taken as it stands at the first
        append or checkpoint, as a trusted start. Raises :class:`IntegrityError` for a
        witness file that cannot be used, or that another key signed.
        """
        self._db = db
        self._signer = signer
        self._every = max(1, checkpoint_every)
        self._now = now
        self._lock = threading.Lock()
        self.log_id = "bastion-audit:" + signer.key_id.removeprefix("sha256:")[:16]
        self._witness = None if witness is None else HubWitness(witness)
        kept = None if self._witness is None else self._witness.load()
        if kept is not None:
            kept[1].verify(signer.public_key)
            if kept[1].checkpoint.log_id != self.log_id:
                raise IntegrityError(
                    f"the audit witness {str(witness)!r} is of log {kept[1].checkpoint.log_id}, "
                    f"not {self.log_id}; it belongs to another hub"
                )
        #: The log's history as this log knows it (None: not yet; the stored head is taken
        #: as it stands at the first use), and its last signed checkpoint's line.
        self._known: ChainState | None = None if kept is None else kept[0]
        self._witnessed = None if kept is None else kept[1].to_json()
        #: Why signing stopped: the stored log does not extend the history known.
        self._broken: str | None = None

    @classmethod
    def open(
        cls,
        db: Database,
        key_path: Path,
        *,
        checkpoint_every: int = 1000,
        now: Callable[[], datetime] = _utcnow,
        witness: Path | None = None,
    ) -> AuditLog:
        """The log signed with the key at ``key_path`` (created if missing); its witness is
        ``witness``, by default ``audit-witness.json`` beside the key."""
        key = load_or_create_audit_key(key_path)
        return cls(
            db,
            CheckpointSigner(key),
            checkpoint_every=checkpoint_every,
            now=now,
            witness=key_path.with_name("audit-witness.json") if witness is None else witness,
        )

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
        with self._lock:
            signed = None
            with self._db.session() as s:
                head = _head(s)
                base = self._base(s, head)
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
                state = base.extended(entry.hash)
                head.seq, head.hash, head.accumulator = entry.seq, entry.hash, state.tree.to_json()
                if entry.seq % self._every == 0 and self._broken is None:
                    signed = self._sign(s, state)
            self._advance(state, signed)
            return entry

    def checkpoint(self) -> str | None:
        """Sign the current head now (unless it is signed already); its JSON line.

        Raises :class:`IntegrityError` if the stored log does not extend the history this
        log signed, or if the head's stored checkpoint cannot be read or does not match.
        """
        with self._lock:
            with self._db.session() as s:
                head = _head(s)
                if head.seq == 0:
                    return None
                state = self._base(s, head)
                if self._broken is not None:
                    raise IntegrityError(self._broken)
                existing = s.get(AuditCheckpointRow, head.seq)
                if existing is None:
                    signed = self._sign(s, state)
                else:
                    signed = _readable(existing)
                    signed.verify(self._signer.public_key)
                    if not state.matches(signed):
                        raise IntegrityError(
                            f"the stored audit checkpoint for size {head.seq} does not match the "
                            "entries the hub signed: it was replaced in the database; keep a "
                            "copy of the database and investigate"
                        )
            self._advance(state, signed)
            return signed.to_json()

    def _base(self, s: Session, head: AuditHead) -> ChainState:
        """The state to append to: what this log knows, brought up to the stored head.

        Entries stored by another process sharing the database are replayed from the state
        known. A head that replaying cannot reach stops signing (``_broken``); appending
        then goes on from the stored head, so no entry is lost.
        """
        known = self._known
        if known is None:  # nothing signed yet to hold it against: trust it from here
            known = _stored_state(head)
            if known.tree.size != known.size:  # a head at odds with itself: read it all back
                known = ChainState.genesis()
            self._known = known
        if self._broken is None:
            if head.seq == known.size and head.hash == known.last_hash:
                return known
            try:
                if head.seq < known.size:
                    raise IntegrityError(
                        f"the stored log holds {head.seq} entries, but this hub knows of "
                        f"{known.size}: it was rolled back"
                    )
                state = replay(known, self._stored_after(s, known.size, head.seq))
                if state.size != head.seq or state.last_hash != head.hash:
                    raise IntegrityError(
                        f"replaying the stored entries reaches entry {state.size}, not the "
                        f"stored head (entry {head.seq})"
                    )
            except IntegrityError as exc:
                self._broken = (
                    f"the audit log in the database does not extend the history this hub "
                    f"signed up to entry {known.size}: {exc.message}. No checkpoint will be "
                    "signed; keep a copy of the database and investigate. If the database was "
                    "restored from a backup on purpose, remove the hub's audit witness "
                    "(audit-witness.json in its data folder) and restart it"
                )
                log.error("%s", self._broken)
            else:
                self._known = state
                return state
        return _stored_state(head)

    def _stored_after(self, s: Session, after: int, last: int) -> Iterator[tuple[int, str]]:
        """Stored ``(seq, line)`` rows from seq ``after + 1`` to ``last``, a page at a time."""
        while after < last:
            rows = s.execute(
                select(AuditEntryRow.seq, AuditEntryRow.line)
                .where(AuditEntryRow.seq > after, AuditEntryRow.seq <= last)
                .order_by(AuditEntryRow.seq)
                .limit(_REPLAY_PAGE)
            ).all()
            if not rows:
                return
            yield from ((seq, line) for seq, line in rows)
            after = rows[-1].seq

    def _advance(self, state: ChainState, signed: SignedCheckpoint | None) -> None:
        """After a commit: ``state`` is history; ``signed`` goes to the witness."""
        if self._broken is not None:
            return
        self._known = state
        line = None if signed is None else signed.to_json()
        if signed is None or line == self._witnessed:  # a quiet hub's head, signed already
            return
        self._witnessed = line
        if self._witness is not None:
            self._witness.keep(state, signed)

    def _sign(self, s: Session, state: ChainState) -> SignedCheckpoint:
        signed = self._signer.checkpoint(
            log_id=self.log_id, tree=state.tree, last_hash=state.last_hash, now=self._now()
        )
        s.add(AuditCheckpointRow(size=state.size, body=signed.to_json()))
        return signed

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
        """The stored checkpoints, and the last one this log signed if they lack it."""
        with self._db.session() as s:
            rows = s.execute(
                select(AuditCheckpointRow.size, AuditCheckpointRow.body).order_by(
                    AuditCheckpointRow.size
                )
            ).all()
        stored = [(size, body) for size, body in rows]
        own = self._witnessed
        if own is not None and own not in (body for _, body in stored):
            stored.append((SignedCheckpoint.from_json(own).checkpoint.size, own))
            stored.sort(key=lambda row: row[0])  # stable: a stored line of that size first
        return [body for _, body in stored]

    def public_key(self) -> dict[str, Any]:
        return {
            "log_id": self.log_id,
            "key_id": self._signer.key_id,
            "public_key": public_key_pem(self._signer.public_key).decode(),
        }

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        lines = self.checkpoints()
        return SignedCheckpoint.from_json(lines[-1]) if lines else None


def _readable(row: AuditCheckpointRow) -> SignedCheckpoint:
    """A stored checkpoint, if its line can still be read as one."""
    try:
        return SignedCheckpoint.from_json(row.body)
    except InputError as exc:
        raise IntegrityError(
            f"the stored audit checkpoint for size {row.size} cannot be read ({exc.message}): "
            "the audit log was altered or corrupted in the database; keep a copy of the "
            "database and investigate"
        ) from exc


def _stored_state(head: AuditHead) -> ChainState:
    """The chain's state as the database's head row has it."""
    return ChainState(head.seq, head.hash, MerkleAccumulator.from_json(head.accumulator))


def _head(s: Session) -> AuditHead:
    head = s.get(AuditHead, 1, with_for_update=True)
    if head is None:
        head = AuditHead(id=1, seq=0, hash=GENESIS_HASH, accumulator=MerkleAccumulator().to_json())
        s.add(head)
        s.flush()
    return head
