"""The hub's own witness: the last checkpoint it signed, kept outside the database.

The database holds the entries and the chain's head. Someone who can write to it could
rewrite entries, recompute every hash after them and the head, and delete the stored
checkpoints; the hub would then sign the rewritten head at its next checkpoint, and a
verifier without a witness of its own would find nothing wrong. So the hub keeps, beside
its audit key, the state it last signed: the log's size, its last hash, the Merkle
frontier and the signed checkpoint line. It signs only a head that it reaches by
replaying the stored entries from that state (:func:`replay`), each one read, re-hashed
and linked to the one before; a head it cannot reach is refused, and the checkpoint
kept here is served with the database's, so a verifier finds the rewrite.

The file is canonical JSON, mode 0600, replaced atomically. It is written after the
checkpoint's transaction commits, so it never holds a state the database lacks.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.audit._checkpoint import SignedCheckpoint
from bastion.audit._encoding import (
    canonical_json,
    check_fields,
    check_hex_digest,
    check_int,
    check_text,
    load_json_object,
)
from bastion.audit._entry import GENESIS_HASH, AuditEntry
from bastion.audit._merkle import MerkleAccumulator
from bastion.crypto._private_files import read_private_file, write_file_atomically
from bastion.errors import InputError, IntegrityError

__all__ = ["ChainState", "HubWitness", "replay"]

_FORMAT = 1
_FIELDS = frozenset({"v", "size", "last_hash", "accumulator", "checkpoint"})
_MAX_FILE = 64 * 1024


@dataclass(frozen=True, slots=True)
class ChainState:
    """The log up to entry ``size``: its last hash and the Merkle frontier of its hashes."""

    size: int
    last_hash: str
    tree: MerkleAccumulator

    @classmethod
    def genesis(cls) -> ChainState:
        return cls(0, GENESIS_HASH, MerkleAccumulator())

    def extended(self, entry_hash: str) -> ChainState:
        """The state after one more entry whose hash is ``entry_hash``."""
        tree = self.tree.copy()
        tree.append(bytes.fromhex(entry_hash))
        return ChainState(self.size + 1, entry_hash, tree)

    def matches(self, checkpoint: SignedCheckpoint) -> bool:
        cp = checkpoint.checkpoint
        return (
            cp.size == self.size
            and cp.last_hash == self.last_hash
            and cp.root == self.tree.root().hex()
        )


def replay(state: ChainState, rows: Iterable[tuple[int, str]]) -> ChainState:
    """``state`` extended by the stored ``(seq, line)`` rows that follow it, in seq order.

    Each row must be the next seq, read as an entry of that seq, hash to what it says, and
    link to the hash before it. Raises :class:`IntegrityError` naming the first row that
    does not.
    """
    for seq, line in rows:
        expected = state.size + 1
        if seq != expected:
            raise IntegrityError(
                f"the stored log has entry {seq} where entry {expected} should follow"
            )
        try:
            entry = AuditEntry.from_json(line)
        except InputError as exc:
            raise IntegrityError(f"stored entry {seq} cannot be read ({exc.message})") from exc
        if entry.seq != seq:
            raise IntegrityError(f"stored entry {seq} says it is entry {entry.seq}")
        if not entry.hash_matches():
            raise IntegrityError(f"stored entry {seq} does not hash to the hash it holds")
        if entry.prev_hash != state.last_hash:
            raise IntegrityError(f"stored entry {seq} does not link to entry {seq - 1}")
        state = state.extended(entry.hash)
    return state


class HubWitness:
    """The file holding the last checkpoint the hub signed, and the state it covers."""

    __slots__ = ("path",)

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> tuple[ChainState, SignedCheckpoint] | None:
        """The state and checkpoint kept, or None before the first checkpoint.

        Raises :class:`IntegrityError` for a file that cannot be read as a witness, or whose
        checkpoint does not describe its state.
        """
        if not self.path.exists():
            return None
        try:
            doc = load_json_object(
                read_private_file(self.path, "audit witness", limit=_MAX_FILE, error=InputError),
                "audit witness",
                limit=_MAX_FILE,
            )
            check_fields(doc, _FIELDS, "audit witness")
            if check_int(doc["v"], "the witness's format version", low=0, high=2**31) != _FORMAT:
                raise InputError(f"format version {doc['v']} is not supported")
            size = check_int(doc["size"], "the witness's size", low=1, high=2**53 - 1)
            last_hash = check_hex_digest(doc["last_hash"], "the witness's last_hash")
            tree = MerkleAccumulator.from_json(
                check_text(doc["accumulator"], "the witness's accumulator", limit=8192)
            )
            checkpoint = SignedCheckpoint.from_json(
                check_text(doc["checkpoint"], "the witness's checkpoint", limit=4096)
            )
        except InputError as exc:
            raise self._unusable(exc.message) from exc
        state = ChainState(size, last_hash, tree)
        if tree.size != size or not state.matches(checkpoint):
            raise self._unusable("its checkpoint does not describe the state it holds")
        return state, checkpoint

    def keep(self, state: ChainState, checkpoint: SignedCheckpoint) -> None:
        """Replace the file with ``checkpoint`` and ``state``, unless it holds a later one.

        Two hub processes sharing a database may sign in one order and write in the
        other; the file keeps the larger, and either is a state of the log's history.
        """
        try:
            kept = self.load()
        except IntegrityError:
            kept = None  # an unusable file is replaced by a good one
        if kept is not None and kept[0].size >= state.size:
            return
        document: dict[str, Any] = {
            "v": _FORMAT,
            "size": state.size,
            "last_hash": state.last_hash,
            "accumulator": state.tree.to_json(),
            "checkpoint": checkpoint.to_json(),
        }
        write_file_atomically(
            self.path,
            canonical_json(document) + b"\n",
            mode=0o600,
            replace=True,
            what="audit witness",
            error=IntegrityError,
        )

    def _unusable(self, why: str) -> IntegrityError:
        return IntegrityError(
            f"the hub's audit witness {str(self.path)!r} cannot be used: {why}. It records the "
            "last checkpoint this hub signed; keep a copy of it and of the database, and remove "
            "it only if the database's log is to be trusted as it stands"
        )
