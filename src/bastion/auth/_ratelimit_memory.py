"""The in-process rate-limit store: ``limits``' memory store without its timer thread.

``limits``' memory store expires counters lazily when they are read, and also starts a
``threading.Timer`` every 10 ms while requests arrive to sweep expired entries. A thread
started per burst costs more than the limit check itself; here the hub sweeps on the
request path instead, every ``sweep_seconds``, which bounds memory the same way.

With that store and the sliding window (the defaults), the limiter does not go through
``limits``' strategy at all: :func:`slide` reads and updates the store's counters itself, for
the rules a :class:`Plan` prepared once per kind of request. ``limits``' strategy reads the
clock about a dozen times and builds each key anew for every test, hit and statistic; that
cost more than everything else a refused request does. The property tests run random
requests through both ways and compare every decision and counter.
"""

from __future__ import annotations

import math
import time
from typing import Any

from limits import RateLimitItem
from limits.storage import MemoryStorage

__all__ = ["Outcome", "Plan", "QuietMemoryStorage", "Rule", "slide"]

#: A rule: (scope, limit, the subject it is counted for).
Rule = tuple[str, RateLimitItem, str]
#: A rule as the sliding window reads it: (amount, window seconds, storage key).
Window = tuple[int, int, str]


class QuietMemoryStorage(MemoryStorage):
    """A memory store swept by :meth:`sweep`, never by a background thread."""

    def __init__(self) -> None:
        super().__init__("memory://")
        self.timer.cancel()

    def _MemoryStorage__schedule_expiry(self) -> None:
        """No timer thread: :meth:`sweep` does the work."""

    def sweep(self, now: float | None = None) -> int:
        """Drop expired counters and emptied moving windows; how many keys went."""
        now = time.time() if now is None else now
        dropped = 0
        for key in [k for k, at in list(self.expirations.items()) if at <= now]:
            with self.locks[key]:
                if self.expirations.get(key, now + 1) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)
                    dropped += 1
            self.locks.pop(key, None)
        events = self.events
        for key in [k for k, e in list(events.items()) if not e or e[0].expiry <= now]:
            with self.locks[key]:
                entries = events.get(key)
                if entries is not None and (not entries or entries[0].expiry <= now):
                    del events[key]
                    dropped += 1
            self.locks.pop(key, None)
        return dropped


#: The rules refused, and per rule (remaining, seconds to reset, index).
Outcome = tuple[set[int], list[tuple[int, int, int]]]


class Plan:
    """The rules one kind of request binds, with their storage keys and policy lists."""

    __slots__ = ("_policies", "_tail", "fresh_until", "names", "rules", "windows")

    def __init__(self, rules: list[Rule]) -> None:
        self.rules = tuple(rules)
        self.windows: tuple[Window, ...] = tuple(
            (item.amount, item.get_expiry(), item.key_for(key)) for _, item, key in rules
        )
        #: Per rule, the sliding window's last (previous, current) numbers and their keys.
        self.names: list[tuple[tuple[int, int] | None, str, str]] = [(None, "", "")] * len(rules)
        #: Per rule, until when reading its counters cannot drop either (see _fresh_until).
        self.fresh_until: list[float] = [0.0] * len(rules)
        self._tail = sorted(
            {(amount, window) for amount, window, _ in self.windows}, key=_by_window
        )
        self._policies: dict[int, tuple[tuple[int, int], ...]] = {}

    def policies(self, chosen: int) -> tuple[tuple[int, int], ...]:
        """Every ``(limit, window)`` applied, the chosen rule's first."""
        policies = self._policies.get(chosen)
        if policies is None:
            amount, window, _ = self.windows[chosen]
            policies = self._policies[chosen] = tuple(
                dict.fromkeys([(amount, window), *self._tail])
            )
        return policies


def slide(store: MemoryStorage, plan: Plan, consume: bool, now: float) -> Outcome:
    """``limits``' sliding-window test, hit and statistics on its memory store, at ``now``.

    The keys, counts, expiries and float arithmetic of ``SlidingWindowCounterRateLimiter``
    over ``MemoryStorage`` (limits 5.x: ``test``, ``hit``, ``get_window_stats``), all read at
    the one instant ``now`` where ``limits`` reads the clock a dozen times. Its store drops a
    counter past its expiry whenever it is read; once dropped at ``now`` it stays dropped,
    so only the first reading of each key here drops. The caller holds the limiter's lock.
    """
    counts, expirations, locks = store.storage, store.expirations, store.locks
    slots = []
    refused = set()
    for i, (amount, window, key) in enumerate(plan.windows):
        numbers = (int((now - window) / window), int(now / window))
        named = plan.names[i]
        if named[0] != numbers:
            named = plan.names[i] = (numbers, f"{key}/{numbers[0]}", f"{key}/{numbers[1]}")
            plan.fresh_until[i] = 0.0  # new keys (or a clock set back): read them afresh
        _, previous, current = named
        if now >= plan.fresh_until[i]:
            _drop_expired(counts, expirations, locks, (previous, current), now)
            plan.fresh_until[i] = _fresh_until(expirations, (previous, current), numbers, window)
        ttl = (1 - (((now - window) / window) % 1)) * window  # the previous counter's
        if not counts.get(previous, 0) * ttl / window + counts.get(current, 0) < amount:
            refused.add(i)
        slots.append((amount, window, previous, current, ttl))
    if consume and not refused:
        for i, (amount, window, previous, current, ttl) in enumerate(slots):
            weighted = counts.get(previous, 0) * ttl / window
            if math.floor(weighted + counts.get(current, 0)) + 1 > amount:  # a rule bound twice
                refused.add(i)
                continue
            counts[current] += 1
            if counts[current] == 1:
                expirations[current] = now + 2 * window
            if math.floor(weighted + counts[current]) > amount:  # limits' guard, kept as is
                counts[current] = max(counts[current] - 1, 0)
                refused.add(i)
    views = []
    for i, (amount, window, previous, current, ttl) in enumerate(slots):
        before, latest = counts.get(previous, 0), counts.get(current, 0)
        remaining = max(0, amount - math.floor(before * ttl / window + latest))
        reset = 0
        if before or latest:
            previous_in = ttl % (window / before) if before else math.inf
            current_in = math.inf
            if latest:  # the current counter's ttl, modulo the window
                current_in = ((1 - ((now / window) % 1)) * window + window) % window
            reset = max(0, math.ceil(now + min(previous_in, current_in) - now))
        views.append((0 if i in refused else remaining, reset, i))
    return refused, views


def _drop_expired(
    counts: Any, expirations: Any, locks: Any, names: tuple[str, str], now: float
) -> None:
    """What ``limits``' store does on reading a counter: drop it once past its expiry."""
    for name in names:
        if expirations.get(name, 0) <= now:
            counts.pop(name, None)
            expirations.pop(name, None)
            locks.pop(name, None)


def _fresh_until(
    expirations: Any, names: tuple[str, str], numbers: tuple[int, int], window: float
) -> float:
    """Until when neither counter can expire, so reading them drops nothing.

    A counter that exists expires at its own expiry; one that does not yet can only be
    created by a hit in the current window, and then expires two windows later, after
    the current window ends. Past the current window the keys change anyway.
    """
    end = (numbers[1] + 1) * window
    for name in names:
        expiry = expirations.get(name)
        if expiry is not None:
            end = min(end, expiry)
    return end


def _by_window(policy: tuple[int, int]) -> tuple[int, int]:
    return policy[1], policy[0]
