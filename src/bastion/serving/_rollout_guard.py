"""Automatic rollback of a canary: the candidate's error rate and p99 latency over a window.

The gateway :meth:`~RolloutGuard.record`\\ s every answered request of a deployment with a
candidate (shadow answers count for the candidate too) and asks :meth:`~RolloutGuard.verdict`
whether the candidate must be rolled back. Memory is bounded whatever the request rate: the
window is a ring of at most :data:`MAX_SLOTS` time slots (one second each for windows up to
that many seconds), each holding counts and a log-spaced latency histogram whose buckets are
4 % apart, so a p99 is within about 2 % of the exact one. A slot leaves the window once it is
older than the window, so the window covers between ``window_seconds`` less one slot and
``window_seconds``.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from bastion.errors import InputError, UsageError

__all__ = ["MAX_SLOTS", "ArmStats", "RolloutGuard", "RolloutThresholds"]

#: Most time slots a window is divided into.
MAX_SLOTS = 300
FORMAT = 1
MAX_WINDOW_SECONDS = 86_400.0
_MAX_MIN_REQUESTS = 1_000_000_000
_KEYS = frozenset(
    {
        "format",
        "window_seconds",
        "min_requests",
        "max_error_rate",
        "max_p99_seconds",
        "max_p99_ratio",
    }
)
_LOWEST = 1e-5  # seconds: latencies below fall in the first bucket
_GROWTH = 1.04  # each histogram bucket is 4 % wider than the one before
_LAST_BUCKET = math.ceil(math.log(1e5 / _LOWEST) / math.log(_GROWTH))  # ~28 h and above
#: Upper edge of each histogram bucket but the last (which holds everything above).
_BUCKET_EDGES = tuple(_LOWEST * _GROWTH ** (bucket + 1) for bucket in range(_LAST_BUCKET))

Arm = Literal["stable", "candidate"]


def _number(value: object) -> float | None:
    """``value`` as a finite float, or None when it is not a finite number (bools are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _shown_seconds(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


@dataclass(frozen=True)
class RolloutThresholds:
    """When a canary is rolled back automatically.

    Over the last ``window_seconds`` (0 to :data:`MAX_WINDOW_SECONDS`), once the candidate
    has answered at least ``min_requests``: its share of server-side failures above
    ``max_error_rate`` (0 to 1), its p99 latency above ``max_p99_seconds`` (None: not
    checked), or its p99 above ``max_p99_ratio`` (1 or more; None: not checked) times the
    stable version's p99, provided the stable version also answered ``min_requests``.
    """

    window_seconds: float = 60.0
    min_requests: int = 20
    max_error_rate: float = 0.05
    max_p99_seconds: float | None = None
    max_p99_ratio: float | None = 2.0

    def __post_init__(self) -> None:
        window = _number(self.window_seconds)
        if window is None or not 0 < window <= MAX_WINDOW_SECONDS:
            raise InputError(
                f"rollout window must be a number of seconds above 0 and at most "
                f"{MAX_WINDOW_SECONDS:g}, e.g. 60"
            )
        count = self.min_requests
        if type(count) is not int or not 1 <= count <= _MAX_MIN_REQUESTS:
            raise InputError("rollout min_requests must be a whole number of at least 1, e.g. 20")
        rate = _number(self.max_error_rate)
        if rate is None or not 0 <= rate <= 1:
            raise InputError("rollout max_error_rate must be a fraction from 0 to 1, e.g. 0.05")
        object.__setattr__(self, "window_seconds", window)
        object.__setattr__(self, "max_error_rate", rate)
        for name, lowest in (("max_p99_seconds", 0.0), ("max_p99_ratio", 1.0)):
            value = getattr(self, name)
            if value is None:
                continue
            number = _number(value)
            if number is None or number < lowest or (lowest == 0 and number == 0):
                raise InputError(
                    f"rollout {name} must be a number "
                    + ("above 0, e.g. 0.5" if lowest == 0 else "of at least 1, e.g. 2")
                    + ", or null to not check it"
                )
            object.__setattr__(self, name, number)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready description that :meth:`from_dict` reads back to equal thresholds."""
        return {
            "format": FORMAT,
            "window_seconds": self.window_seconds,
            "min_requests": self.min_requests,
            "max_error_rate": self.max_error_rate,
            "max_p99_seconds": self.max_p99_seconds,
            "max_p99_ratio": self.max_p99_ratio,
        }

    @classmethod
    def from_dict(cls, data: object) -> RolloutThresholds:
        """Thresholds from :meth:`to_dict`'s form (missing fields take their defaults)."""
        if not isinstance(data, Mapping):
            raise InputError("rollout thresholds must be a JSON object")
        unknown = sorted(str(key)[:40] for key in data.keys() - _KEYS)
        if unknown:
            raise InputError(f"rollout thresholds have unknown fields {unknown}")
        version = data.get("format")
        if type(version) is not int or version != FORMAT:
            raise InputError(
                f"rollout thresholds need 'format': {FORMAT} (the one this Bastion reads)"
            )
        fields: dict[str, Any] = {key: data[key] for key in _KEYS - {"format"} if key in data}
        return cls(**fields)


@dataclass(frozen=True)
class ArmStats:
    """One arm over the window: requests answered, failures among them, and their p99."""

    requests: int
    failures: int
    p99_seconds: float | None


class _ArmWindow:
    """One arm's ring of time slots, with running totals over the slots it holds."""

    def __init__(self, slots: int) -> None:
        self.clear(slots)

    def clear(self, slots: int) -> None:
        self.ids: list[int | None] = [None] * slots
        self.requests = [0] * slots
        self.failures = [0] * slots
        self.histograms: list[dict[int, int]] = [{} for _ in range(slots)]
        self.total_requests = 0
        self.total_failures = 0
        self.total_histogram = [0] * (_LAST_BUCKET + 1)

    def add(self, slot: int, bucket: int, failed: bool) -> None:
        index = slot % len(self.ids)
        if self.ids[index] != slot:
            self._drop(index)
            self.ids[index] = slot
        self.requests[index] += 1
        self.total_requests += 1
        if failed:
            self.failures[index] += 1
            self.total_failures += 1
        histogram = self.histograms[index]
        histogram[bucket] = histogram.get(bucket, 0) + 1
        self.total_histogram[bucket] += 1

    def expire(self, current: int) -> None:
        """Drop every slot that has left the window ending in slot ``current``."""
        oldest = current - len(self.ids)
        for index, slot in enumerate(self.ids):
            if slot is not None and slot <= oldest:
                self._drop(index)

    def _drop(self, index: int) -> None:
        self.ids[index] = None
        self.total_requests -= self.requests[index]
        self.total_failures -= self.failures[index]
        self.requests[index] = self.failures[index] = 0
        for bucket, count in self.histograms[index].items():
            self.total_histogram[bucket] -= count
        self.histograms[index] = {}

    def stats(self) -> ArmStats:
        p99 = None
        if self.total_requests:
            rank = (99 * self.total_requests + 99) // 100  # nearest rank: ceil(0.99 n)
            seen = 0
            for bucket, count in enumerate(self.total_histogram):
                seen += count
                if seen >= rank:
                    p99 = _LOWEST * _GROWTH ** (bucket + 0.5)  # the bucket's geometric middle
                    break
        return ArmStats(self.total_requests, self.total_failures, p99)


class RolloutGuard:
    """Watches a canary's stable and candidate arms and says when to roll the candidate back.

    ``clock`` gives the time in seconds (monotonic); pass a fake one in tests. Safe to use
    from several threads.
    """

    def __init__(
        self, thresholds: RolloutThresholds, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.thresholds = thresholds
        self._clock = clock
        slots = min(math.ceil(thresholds.window_seconds), MAX_SLOTS)
        self._slots = slots
        self._slot_seconds = thresholds.window_seconds / slots
        self._lock = threading.Lock()
        self._arms = {"stable": _ArmWindow(slots), "candidate": _ArmWindow(slots)}

    def record(self, arm: Arm, *, failed: bool, seconds: float) -> None:
        """Count one answered request of ``arm``: whether it failed server-side, and its latency."""
        window = self._arms.get(arm)
        if window is None:
            raise UsageError(f"rollout arm {str(arm)[:20]!r} is unknown: use stable or candidate")
        if not seconds >= 0:  # also refuses NaN
            raise UsageError(f"a request's latency must be 0 seconds or more, not {seconds!r}")
        bucket = bisect.bisect_right(_BUCKET_EDGES, seconds)
        slot = int(self._clock() // self._slot_seconds)
        with self._lock:
            window.add(slot, bucket, failed)

    def stats(self, arm: Arm) -> ArmStats:
        """``arm``'s requests, failures and p99 latency over the window ending now."""
        if arm not in self._arms:
            raise UsageError(f"rollout arm {str(arm)[:20]!r} is unknown: use stable or candidate")
        return self._stats_now()[arm]

    def _stats_now(self) -> dict[str, ArmStats]:
        current = int(self._clock() // self._slot_seconds)
        with self._lock:
            for window in self._arms.values():
                window.expire(current)
            return {arm: window.stats() for arm, window in self._arms.items()}

    def verdict(self) -> str | None:
        """None while the candidate is fine (or has too few requests); else why to roll back."""
        limits = self.thresholds
        now = self._stats_now()
        candidate = now["candidate"]
        if candidate.requests < limits.min_requests or candidate.p99_seconds is None:
            return None
        over = f"over {limits.window_seconds:g} s ({candidate.requests} requests)"
        rate = candidate.failures / candidate.requests
        if rate > limits.max_error_rate:
            return f"candidate error rate {rate:.1%} {over} exceeds {limits.max_error_rate:.1%}"
        p99 = candidate.p99_seconds
        if limits.max_p99_seconds is not None and p99 > limits.max_p99_seconds:
            return (
                f"candidate p99 latency {_shown_seconds(p99)} {over} exceeds "
                f"{_shown_seconds(limits.max_p99_seconds)}"
            )
        if limits.max_p99_ratio is None:
            return None
        stable = now["stable"]
        if stable.requests < limits.min_requests or stable.p99_seconds is None:
            return None
        if p99 > limits.max_p99_ratio * stable.p99_seconds:
            return (
                f"candidate p99 latency {_shown_seconds(p99)} {over} is "
                f"{p99 / stable.p99_seconds:.1f}x the stable version's "
                f"{_shown_seconds(stable.p99_seconds)}, above {limits.max_p99_ratio:g}x"
            )
        return None

    def reset(self) -> None:
        """Forget every request recorded (after a promotion, rollback or new candidate)."""
        with self._lock:
            for window in self._arms.values():
                window.clear(self._slots)
