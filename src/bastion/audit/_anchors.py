"""Signed checkpoints as anchors: check them, match them against the stream, judge.

Before the entries are read, every checkpoint's signature and key are checked, and
the valid ones must agree on the log, grow in size and time, and never disagree at
one size. While the entries stream past, the Merkle root and last hash at each
checkpoint's size are compared. Afterwards, a mismatch that no break in the chain
explains means the chain was recomputed: the entries since the last matching
checkpoint were **rewritten**; a checkpoint larger than the log means entries were
**deleted** from its end, or, for the witnessed checkpoint, that the log was
**rolled back**.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.audit._checkpoint import Checkpoint, SignedCheckpoint
from bastion.audit._encoding import format_time
from bastion.audit._entry import GENESIS_HASH
from bastion.audit._merkle import EMPTY_ROOT, MerkleAccumulator
from bastion.audit._report import AuditProblem, ProblemKind
from bastion.errors import IntegrityError, UsageError

__all__ = ["CheckpointAnchors"]


@dataclass(slots=True)
class _Anchor:
    checkpoint: Checkpoint
    label: str
    witnessed: bool
    reached: bool = False
    matched: bool = False


@dataclass(frozen=True, slots=True)
class _Shortfall:
    """How a log that is shorter than a checkpoint ends."""

    entries: int
    max_seq: int
    gaps: bool

    @property
    def end(self) -> str:
        if self.max_seq == self.entries:
            return f"the log ends at entry {self.max_seq}"
        return f"the log holds {self.entries} entries (the highest seq {self.max_seq})"

    @property
    def next_seq(self) -> int:
        return self.max_seq + 1

    def missing(self, size: int) -> str | None:
        """Which entries up to ``size`` are missing from the end; None if none are."""
        if self.max_seq < size:
            first = self.max_seq + 1
            return f"entry {first} was" if first == size else f"entries {first}..{size} were"
        if self.gaps:
            return None  # the log reaches that seq; what it lacks are gaps, reported as deleted
        return f"{size - self.entries} entries were"


def _describe(cp: Checkpoint) -> str:
    return f"size {cp.size}, signed {format_time(cp.time)}"


class CheckpointAnchors:
    """The checkpoints one verification run holds the stream against."""

    def __init__(
        self,
        checkpoints: Sequence[SignedCheckpoint],
        public_key: ed25519.Ed25519PublicKey,
        witnessed: SignedCheckpoint | None,
    ) -> None:
        if not isinstance(public_key, ed25519.Ed25519PublicKey):
            raise UsageError("verify the audit log with the hub's Ed25519 audit public key")
        self._public_key = public_key
        self.problems: list[AuditProblem] = []
        self.stored: list[_Anchor] = []
        self.witness: _Anchor | None = None
        if witnessed is not None:
            cp = self._check_signature(witnessed, "the witnessed checkpoint")
            self.witness = None if cp is None else _Anchor(cp, "the witnessed checkpoint", True)
        log_id: str | None = None  # the log the first valid stored checkpoint names
        newest: _Anchor | None = None
        by_size: dict[int, _Anchor] = {}
        for number, signed in enumerate(checkpoints, 1):
            label = f"checkpoint #{number}"
            cp = self._check_signature(signed, label)
            if cp is None:
                continue
            log_id = log_id or cp.log_id
            if cp.log_id != log_id:
                self._add(
                    "bad_checkpoint", cp.size, f"{label} is for log {cp.log_id!r}, not {log_id!r}"
                )
                continue
            anchor = _Anchor(cp, label, False)
            twin = by_size.setdefault(cp.size, anchor)
            if (twin.checkpoint.root, twin.checkpoint.last_hash) != (cp.root, cp.last_hash):
                self._add(
                    "bad_checkpoint",
                    cp.size,
                    f"{twin.label} and {label} are both signed for size {cp.size} but name "
                    "different roots: the log was forked (rolled back and rewritten)",
                )
            if newest is not None and cp.size < newest.checkpoint.size:
                self._add(
                    "bad_checkpoint",
                    cp.size,
                    f"{label} ({_describe(cp)}) is smaller than {newest.label} before it "
                    f"({_describe(newest.checkpoint)}): the log shrank (was rolled back) or the "
                    "checkpoints were reordered",
                )
            elif newest is not None and cp.time < newest.checkpoint.time:
                self._add(
                    "bad_checkpoint",
                    cp.size,
                    f"{label} ({_describe(cp)}) is dated before {newest.label} "
                    f"({_describe(newest.checkpoint)}), which covers fewer entries: the "
                    "checkpoints were reordered or the hub's clock went back",
                )
            if newest is None or cp.size >= newest.checkpoint.size:
                newest = anchor
            self.stored.append(anchor)
        if self.witness and log_id and self.witness.checkpoint.log_id != log_id:
            self._add(
                "bad_checkpoint",
                self.witness.checkpoint.size,
                f"the witnessed checkpoint is for log {self.witness.checkpoint.log_id!r}, but "
                f"this log's checkpoints are for {log_id!r}: compare it with its own log",
            )
            self.witness = None
        targets = self.stored + ([self.witness] if self.witness else [])
        self._targets = sorted(targets, key=lambda a: a.checkpoint.size)
        self._next = 0
        self.observe(MerkleAccumulator(), GENESIS_HASH)

    def _check_signature(self, signed: object, label: str) -> Checkpoint | None:
        if not isinstance(signed, SignedCheckpoint):
            raise UsageError(f"{label} is a {type(signed).__name__}, not a SignedCheckpoint")
        try:
            return signed.verify(self._public_key)
        except IntegrityError as exc:
            self._add("bad_signature", signed.checkpoint.size, f"{label}: {exc.message}")
            return None

    def _add(self, kind: ProblemKind, seq: int | None, message: str) -> None:
        self.problems.append(AuditProblem(kind, seq, message))

    def observe(self, tree: MerkleAccumulator, last_hash: str) -> None:
        """The stream has reached ``tree.size`` entries, the last one hashed ``last_hash``."""
        targets = self._targets
        while self._next < len(targets) and targets[self._next].checkpoint.size <= tree.size:
            anchor = targets[self._next]
            self._next += 1
            if anchor.checkpoint.size < tree.size:
                continue  # only possible for size 0 before the first observation
            anchor.reached = True
            anchor.matched = (
                anchor.checkpoint.root == tree.root().hex()
                and anchor.checkpoint.last_hash == last_hash
            )
            if tree.size == 0 and not anchor.matched:
                self._add(
                    "bad_checkpoint",
                    0,
                    f"{anchor.label} is signed for size 0 but does not name the empty tree "
                    f"({EMPTY_ROOT.hex()}) and 64 zeros",
                )
                anchor.matched = True  # reported as such; no entries are at stake

    def judge(
        self, *, entries: int, max_seq: int, breaks: Sequence[Sequence[int]], gaps: bool
    ) -> None:
        """Turn what the stream showed into problems, once all entries were read.

        ``max_seq`` is the highest seq read, ``breaks`` the places (stream positions or
        seqs) of each break found in the chain (a root mismatch from a break on is already
        explained), and ``gaps`` whether seqs inside the log were found deleted.
        """
        explained_from = self._explained_from(breaks)
        settled = 0  # the size up to which the log matched a checkpoint
        rewrite: tuple[int, int, _Anchor] | None = None
        for anchor in sorted(self.stored, key=lambda a: a.checkpoint.size):
            size = anchor.checkpoint.size
            if not anchor.reached:
                continue
            if anchor.matched:
                settled = max(settled, size)
            elif explained_from is not None and explained_from <= size:
                continue
            elif rewrite is None:
                rewrite = (settled + 1, size, anchor)
            elif anchor.checkpoint.size > rewrite[1]:
                rewrite = (rewrite[0], size, rewrite[2])
        if rewrite is not None:
            first, last, anchor = rewrite
            self._add(
                "modified",
                first,
                f"entries {first}..{last} were rewritten: their hash chain is intact, but its "
                f"Merkle root differs from {anchor.label} ({_describe(anchor.checkpoint)}), "
                "so the chain was recomputed after a change",
            )
        short = _Shortfall(entries, max_seq, gaps)
        self._judge_tail(short)
        self._judge_witness(short, explained_from)

    def _explained_from(self, breaks: Sequence[Sequence[int]]) -> int | None:
        """The first position from which a break in the chain explains a root mismatch.

        Each break counts from the first of its places that no matching checkpoint
        covers: the log is intact up to the largest checkpoint it matched, so a break
        cannot lie there. Otherwise an entry appended at the end claiming a small seq
        would excuse the rewrite of entries checkpointed long before it.
        """
        intact = max((a.checkpoint.size for a in self._targets if a.matched), default=0)
        firsts = [min(x for x in at if x > intact) for at in breaks if any(x > intact for x in at)]
        return min(firsts, default=None)

    def _judge_tail(self, short: _Shortfall) -> None:
        beyond = [a for a in self.stored if a.checkpoint.size > short.entries]
        if not beyond:
            return
        anchor = max(beyond, key=lambda a: a.checkpoint.size)
        missing = short.missing(anchor.checkpoint.size)
        if missing is not None:
            self.problems.append(
                AuditProblem(
                    "deleted",
                    short.next_seq,
                    f"{short.end} but {anchor.label} ({_describe(anchor.checkpoint)}) covers "
                    f"{anchor.checkpoint.size}: {missing} deleted from its end",
                    short.entries + 1,
                )
            )

    def _judge_witness(self, short: _Shortfall, explained_from: int | None) -> None:
        witness = self.witness
        if witness is None:
            return
        cp = witness.checkpoint
        for anchor in self.stored:
            if (anchor.checkpoint.size, anchor.checkpoint.root) == (cp.size, cp.root):
                return  # the same state is stored too, and was judged with the others
        stored_max = max((a.checkpoint.size for a in self.stored), default=0)
        when = format_time(cp.time)
        if not witness.reached:
            if short.missing(cp.size) is not None:
                self.problems.append(
                    AuditProblem(
                        "rolled_back",
                        short.next_seq,
                        f"{short.end} and its checkpoints at size {stored_max}, but a "
                        f"checkpoint witnessed earlier (signed {when}) covers {cp.size} "
                        "entries: the log was rolled back to an older state",
                        short.entries + 1,
                    )
                )
        elif not witness.matched and not (explained_from is not None and explained_from <= cp.size):
            self._add(
                "rolled_back",
                cp.size,
                f"entries 1..{cp.size} differ from the checkpoint witnessed earlier (signed "
                f"{when}): the log was rolled back and rewritten since",
            )
        elif witness.matched and stored_max < cp.size:
            self._add(
                "bad_checkpoint",
                cp.size,
                f"the stored checkpoints end at size {stored_max}, but one of size {cp.size} "
                f"was witnessed (signed {when}): newer checkpoints were deleted",
            )

    @property
    def verified(self) -> list[Checkpoint]:
        """Stored checkpoints whose signature verified and whose root the log matched."""
        return [a.checkpoint for a in self.stored if a.matched]
