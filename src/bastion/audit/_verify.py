"""``verify_log``: one streaming pass over the entries, against the signed checkpoints.

Memory is bounded whatever the log's length: the Merkle accumulator (O(log n)), the
ends of the runs the chain breaks into (at most ``MAX_RUNS``), the checkpoints given,
and at most ``MAX_PROBLEMS`` problems. No entry is kept once it has been checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion.audit._anchors import CheckpointAnchors
from bastion.audit._checkpoint import SignedCheckpoint
from bastion.audit._entry import AuditEntry
from bastion.audit._merkle import MerkleAccumulator
from bastion.audit._report import AuditProblem, AuditReport
from bastion.audit._runs import MAX_RUNS, RunTracker
from bastion.errors import UsageError

__all__ = ["MAX_PROBLEMS", "verify_log"]

MAX_PROBLEMS = 1000


def verify_log(
    entries: Iterable[AuditEntry],
    checkpoints: Sequence[SignedCheckpoint],
    public_key: ed25519.Ed25519PublicKey,
    *,
    witnessed: SignedCheckpoint | None = None,
) -> AuditReport:
    """Check every entry's hash, the chain, the seqs and the checkpoints; report problems.

    ``entries`` are read once, in stored order. ``checkpoints`` are the log's stored
    signed checkpoints, oldest first. ``witnessed`` is a checkpoint kept from an
    earlier look at the log (by an auditor, a client, a previous run): a log that no
    longer extends it was rolled back. Returns a report; nothing is raised for a
    tampered log (see :meth:`AuditReport.raise_for_problems`).
    """
    anchors = CheckpointAnchors(checkpoints, public_key, witnessed)
    tree = MerkleAccumulator()
    tracker = RunTracker()
    modified: list[AuditProblem] = []
    omitted = 0
    count = max_seq = 0
    for entry in entries:
        if not isinstance(entry, AuditEntry):
            raise UsageError(f"verify_log reads AuditEntry objects, not {type(entry).__name__}")
        count += 1
        trusted = entry.hash_matches()
        seq = tracker.add(entry.seq, entry.prev_hash, entry.hash, count, trusted=trusted)
        max_seq = max(max_seq, seq)
        if not trusted and len(modified) >= MAX_PROBLEMS:
            omitted += 1
        elif not trusted:
            stored = "" if seq == entry.seq else f", stored seq {entry.seq}"
            modified.append(
                AuditProblem(
                    "modified",
                    seq,
                    f"entry {seq} (position {count}{stored}) does not match its stored hash: "
                    "its content was changed after it was written",
                    count,
                )
            )
        tree.append(bytes.fromhex(entry.hash))
        anchors.observe(tree, entry.hash)
    found = tracker.finish()
    if tracker.overflow_position is not None:
        found.append(
            AuditProblem(
                "modified",
                None,
                f"the chain breaks more than {MAX_RUNS} times; from position "
                f"{tracker.overflow_position} on, breaks are not told apart",
                tracker.overflow_position,
            )
        )
    # A root mismatch at or after a break in the chain is explained by it. A break may
    # lie at its position in the stream or where its seq says (where a moved run came
    # from; which copy of a repeated seq is the forged one); the anchors rule out places
    # that a matching checkpoint shows intact.
    breaks = [tuple(at for at in (p.position, p.seq) if at is not None) for p in found]
    gaps = any(p.kind == "deleted" for p in found)
    anchors.judge(entries=count, max_seq=max_seq, breaks=breaks, gaps=gaps)
    inserted_at = {p.position for p in found if p.kind == "inserted"}
    modified = [p for p in modified if p.position not in inserted_at]
    problems = sorted(
        anchors.problems + found + modified,
        key=lambda p: (-1 if p.seq is None else p.seq, p.position or 0),
    )
    verified = anchors.verified
    return AuditReport(
        entries=count,
        checkpoints=len(checkpoints),
        checkpoints_verified=len(verified),
        checkpointed=max((cp.size for cp in verified), default=0),
        problems=tuple(problems[:MAX_PROBLEMS]),
        problems_omitted=omitted + max(0, len(problems) - MAX_PROBLEMS),
    )
