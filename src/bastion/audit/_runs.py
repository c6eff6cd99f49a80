"""Where a log's order breaks, and why: deleted, inserted, reordered or rewritten entries.

The entries are streamed into *runs*: maximal stretches in which each entry's seq is
one more than the previous entry's and its ``prev_hash`` is the previous entry's
hash. An untouched log is one run, starting at seq 1 from :data:`GENESIS_HASH`.
Only the ends of runs are kept (seq, hash, prev_hash, position), so memory grows
with the number of breaks, which is capped, never with the number of entries.

How breaks are classified (see ``docs/audit.md``):

1. A run ``B`` whose first entry has the same seq as the last entry of the run
   before it and chains to the same predecessor forks the chain. ``B`` carries on
   (its second entry chains to its first), so the other sibling was **inserted**.
2. Of the runs, the heaviest subsequence (by entries) in increasing seq order stays
   in place. Every other run was moved or forged: **reordered** if it chains into
   the log where its seq says it belongs (to the entry before it, or the entry after
   it chains to it), **inserted** if its seqs repeat others or it chains to nothing.
3. Two runs in place whose seqs overlap: the repeated entries were **inserted**.
4. Seqs that no run covers were **deleted**. Two runs with consecutive seqs that do
   not chain mean the earlier one's last entry was **modified** and its hash
   recomputed (or the later one's ``prev_hash`` was).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

from bastion.audit._entry import GENESIS_HASH
from bastion.audit._report import AuditProblem, ProblemKind

__all__ = ["MAX_RUNS", "RunTracker"]

MAX_RUNS = 4096


@dataclass(slots=True)
class _Run:
    first_seq: int
    first_prev: str
    last_seq: int
    last_hash: str
    last_prev: str | None  # the last entry's prev_hash; None once unknown
    position: int  # stream position (1-based) of the first entry
    last_position: int
    length: int
    after_seq: int | None  # seq of the entry read just before this run

    def follows(self, other: _Run) -> bool:
        return self.first_seq == other.last_seq + 1 and self.first_prev == other.last_hash

    def absorb(self, other: _Run) -> None:
        self.last_seq = other.last_seq
        self.last_hash = other.last_hash
        self.last_prev = other.last_prev
        self.last_position = other.last_position
        self.length += other.length
        if self.length == other.length:
            self.position = other.position

    def span(self) -> str:
        if self.first_seq == self.last_seq:
            return f"entry {self.first_seq} (position {self.position})"
        return (
            f"entries {self.first_seq}..{self.last_seq} "
            f"(positions {self.position}..{self.last_position})"
        )


def _genesis() -> _Run:
    return _Run(1, GENESIS_HASH, 0, GENESIS_HASH, None, 1, 0, 0, None)


class RunTracker:
    """Streams (seq, prev_hash, hash) triples; :meth:`finish` classifies every break."""

    def __init__(self) -> None:
        self._stack: list[_Run] = [_genesis()]
        self._current: _Run | None = None
        self._problems: list[AuditProblem] = []
        self.overflow_position: int | None = None

    def add(
        self, seq: int, prev_hash: str, entry_hash: str, position: int, *, trusted: bool
    ) -> int:
        """Track one entry; returns its seq as tracked. An untrusted entry (its content does
        not match its hash) has its seq taken from its place in the chain, not its content."""
        if self.overflow_position is not None:
            return seq
        cur = self._current
        tail = cur if cur is not None else self._stack[-1]
        if not trusted and cur is not None:
            seq, prev_hash = cur.last_seq + 1, cur.last_hash
        elif not trusted and cur is None:
            seq, prev_hash = tail.last_seq + 1, tail.last_hash
        if cur is not None and seq == cur.last_seq + 1 and prev_hash == cur.last_hash:
            cur.last_seq, cur.last_hash, cur.last_prev = seq, entry_hash, prev_hash
            cur.last_position = position
            cur.length += 1
            return seq
        after = cur.last_seq if cur is not None else None
        if cur is not None:
            self._push(cur)
        if len(self._stack) > MAX_RUNS:
            self.overflow_position = position
            self._current = None
            return seq
        self._current = _Run(
            seq, prev_hash, seq, entry_hash, prev_hash, position, position, 1, after
        )
        return seq

    def _push(self, run: _Run) -> None:
        top = self._stack[-1]
        if (
            run.length >= 2
            and top.length >= 1
            and run.first_seq == top.last_seq
            and top.last_prev is not None
            and run.first_prev == top.last_prev
        ):
            self._add(
                "inserted",
                top.last_seq,
                top.last_position,
                f"entry {top.last_seq} at position {top.last_position} was inserted: the entry "
                f"with the same seq at position {run.position} chains to the same predecessor, "
                "and the log carries on from that one",
            )
            top.last_seq, top.last_hash, top.last_prev = top.last_seq - 1, top.last_prev, None
            top.last_position -= 1
            top.length -= 1
            if top.length == 0 and len(self._stack) > 1:
                self._stack.pop()
                top = self._stack[-1]
        if run.follows(top):
            top.absorb(run)
        else:
            self._stack.append(run)

    def _add(self, kind: ProblemKind, seq: int | None, position: int | None, msg: str) -> None:
        self._problems.append(AuditProblem(kind, seq, msg, position))

    def finish(self) -> list[AuditProblem]:
        """Classify every break found; the problems, in no particular order."""
        if self._current is not None:
            self._push(self._current)
            self._current = None
        runs = [r for r in self._stack if r.length > 0]
        keep = _heaviest_increasing(runs)
        in_place = [r for i, r in enumerate(runs) if i in keep]
        displaced = [r for i, r in enumerate(runs) if i not in keep]
        placed = self._report_repeats(in_place)
        placed = self._place_displaced(placed, displaced)
        self._report_gaps(placed)
        return self._problems

    def _report_repeats(self, in_place: list[_Run]) -> list[_Run]:
        covered = 0
        for run in in_place:
            if run.first_seq <= covered:
                upto = min(covered, run.last_seq)
                what = (
                    f"entry {upto} appears"
                    if upto == run.first_seq
                    else f"entries {run.first_seq}..{upto} appear"
                )
                self._add(
                    "inserted",
                    run.first_seq,
                    run.position,
                    f"{what} twice (again from position {run.position}): entries were inserted",
                )
            covered = max(covered, run.last_seq)
        return list(in_place)

    def _place_displaced(self, placed: list[_Run], displaced: list[_Run]) -> list[_Run]:
        """Put back the displaced runs that chain into the log (reordered); the rest inserted."""
        coverage = _Coverage()
        ends = {(0, GENESIS_HASH)}
        starts: set[tuple[int, str]] = set()
        for run in placed:
            coverage.add(run.first_seq, run.last_seq)
            ends.add((run.last_seq, run.last_hash))
            starts.add((run.first_seq, run.first_prev))
        by_pred: dict[tuple[int, str], list[int]] = {}
        by_succ: dict[tuple[int, str], list[int]] = {}
        for i, run in enumerate(displaced):
            by_pred.setdefault((run.first_seq - 1, run.first_prev), []).append(i)
            by_succ.setdefault((run.last_seq + 1, run.last_hash), []).append(i)
        queue = deque(
            i
            for i, run in enumerate(displaced)
            if (run.first_seq - 1, run.first_prev) in ends
            or (run.last_seq + 1, run.last_hash) in starts
        )
        done: set[int] = set()
        while queue:
            i = queue.popleft()
            run = displaced[i]
            if i in done or coverage.overlaps(run.first_seq, run.last_seq):
                continue
            done.add(i)
            placed.append(run)
            coverage.add(run.first_seq, run.last_seq)
            queue.extend(by_pred.get((run.last_seq, run.last_hash), []))
            queue.extend(by_succ.get((run.first_seq, run.first_prev), []))
            after = "" if run.after_seq is None else f" after entry {run.after_seq}"
            self._add(
                "reordered",
                run.first_seq,
                run.position,
                f"{run.span()} found out of order{after}, though it chains into the log "
                f"where its seq says: the log was reordered",
            )
        for i, run in enumerate(displaced):
            if i in done:
                continue
            why = (
                "its seq repeats that of other entries"
                if coverage.overlaps(run.first_seq, run.last_seq)
                else "it chains to no entry around its seq"
            )
            self._add(
                "inserted",
                run.first_seq,
                run.position,
                f"{run.span()} does not belong in the log ({why}): it was inserted",
            )
        return placed

    def _report_gaps(self, placed: list[_Run]) -> None:
        prev = _genesis()
        covered = 0
        for run in sorted(placed, key=lambda r: (r.first_seq, r.position)):
            if run.first_seq > covered + 1:
                a, b = covered + 1, run.first_seq - 1
                what = f"entry {a} is" if a == b else f"entries {a}..{b} are"
                self._add(
                    "deleted",
                    a,
                    run.position,
                    f"{what} missing (the log goes on at position {run.position} with entry "
                    f"{run.first_seq}): deleted",
                )
            elif run.first_seq == covered + 1 and not run.follows(prev):
                if covered == 0:
                    self._add(
                        "modified",
                        1,
                        run.position,
                        "entry 1 does not start the chain (its prev_hash is not 64 zeros): "
                        "it was modified and its hash recomputed",
                    )
                else:
                    self._add(
                        "modified",
                        covered,
                        prev.last_position,
                        f"entry {run.first_seq} (position {run.position}) does not chain to the "
                        f"stored hash of entry {covered}: entry {covered} was modified and its "
                        f"hash recomputed (or entry {run.first_seq}'s prev_hash was)",
                    )
            if run.last_seq > covered:
                covered, prev = run.last_seq, run


class _Coverage:
    """The union of seq ranges, as sorted disjoint intervals."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def overlaps(self, first: int, last: int) -> bool:
        i = bisect.bisect_right(self._starts, last)  # intervals starting at or before last
        return i > 0 and self._ends[i - 1] >= first

    def add(self, first: int, last: int) -> None:
        lo = bisect.bisect_left(self._ends, first - 1)  # first interval that touches or follows
        hi = bisect.bisect_right(self._starts, last + 1)
        if lo < hi:
            first = min(first, self._starts[lo])
            last = max(last, self._ends[hi - 1])
        self._starts[lo:hi] = [first]
        self._ends[lo:hi] = [last]


def _heaviest_increasing(runs: list[_Run]) -> set[int]:
    """Indexes of the heaviest subsequence (by length) whose first seqs strictly increase."""
    keys = sorted({r.first_seq for r in runs})
    size = len(keys)
    tree: list[tuple[int, int]] = [(0, -1)] * (size + 1)  # Fenwick tree of (weight, index)
    best: list[tuple[int, int]] = []
    for i, run in enumerate(runs):
        rank = bisect.bisect_left(keys, run.first_seq)  # keys strictly below: ranks < rank
        found, j = (0, -1), rank
        while j > 0:
            found = max(found, tree[j])
            j -= j & -j
        best.append((found[0] + run.length, found[1]))
        j = rank + 1
        while j <= size:
            tree[j] = max(tree[j], (best[i][0], i))
            j += j & -j
    if not best:
        return set()
    index = max(range(len(best)), key=lambda i: best[i][0])
    chosen = set()
    while index >= 0:
        chosen.add(index)
        index = best[index][1]
    return chosen
