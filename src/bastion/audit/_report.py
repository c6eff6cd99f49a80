"""What :func:`~bastion.audit.verify_log` found: an ordered list of problems and counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from bastion.errors import IntegrityError

__all__ = ["PROBLEM_KINDS", "AuditProblem", "AuditReport", "ProblemKind"]

ProblemKind = Literal[
    "modified",
    "deleted",
    "inserted",
    "reordered",
    "rolled_back",
    "bad_checkpoint",
    "bad_signature",
]
PROBLEM_KINDS: tuple[ProblemKind, ...] = get_args(ProblemKind)


@dataclass(frozen=True, slots=True)
class AuditProblem:
    """One finding: its kind, the seq it concerns, where in the stream it was found, and what.

    ``seq`` is the entry's sequence number (for a checkpoint, its size; ``None`` when
    no entry is concerned). ``position`` is the 1-based position in the stream of
    entries (the line of an export), when the finding is tied to one.
    """

    kind: ProblemKind
    seq: int | None
    message: str
    position: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "seq": self.seq,
            "position": self.position,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class AuditReport:
    """The verdict on a log. ``ok`` only when no problem was found.

    ``checkpointed`` is the size of the largest checkpoint that verified and matched;
    entries after it (``entries - checkpointed``) are protected by the hash chain
    alone, which someone able to write the log can recompute.
    """

    entries: int
    checkpoints: int
    checkpoints_verified: int
    checkpointed: int
    problems: tuple[AuditProblem, ...]
    problems_omitted: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.problems_omitted

    def counts(self) -> dict[str, int]:
        """How many problems of each kind (only the kinds found)."""
        out: dict[str, int] = {}
        for problem in self.problems:
            out[problem.kind] = out.get(problem.kind, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "checkpoints": self.checkpoints,
            "checkpoints_verified": self.checkpoints_verified,
            "checkpointed": self.checkpointed,
            "counts": self.counts(),
            "problems": [p.to_dict() for p in self.problems],
            "problems_omitted": self.problems_omitted,
        }

    def raise_for_problems(self) -> None:
        """Raise :class:`IntegrityError` naming the first problem, unless the log is ok."""
        if self.ok:
            return
        total = len(self.problems) + self.problems_omitted
        first = self.problems[0]
        where = f" at seq {first.seq}" if first.seq is not None else ""
        raise IntegrityError(
            f"the audit log failed verification with {total} problem(s); first, {first.kind}"
            f"{where}: {first.message}. Keep this copy of the log and investigate"
        )
