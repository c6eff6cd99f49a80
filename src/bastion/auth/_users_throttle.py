"""Progressive delay and lock-out after failed sign-ins, per user name (known or not).

Rows of ``login_throttle`` are keyed by the SHA-256 of the normalised name, so a name
that does not exist is throttled exactly like one that does, and the table does not
list the names people tried. An attempt is counted *before* its password is checked
(and the count cleared when it succeeds), in the same transaction as the check, so
attempts made in parallel cannot slip past the delay.

With ``f`` failures counted and ``m = max_failures_before_delay``: once ``f >= m`` the
next attempt must wait ``min(2 ** (f - m) s, max_delay)`` after the last failure; once
``f >= lockout_after`` the name is locked until ``last failure + lockout``. Delays fade:
a name with fewer than ``lockout_after`` failures and none for ``lockout`` starts again
from zero. A locked name stays counted after the lock ends, so each further failure
locks it again at once, until a success or an administrator's unlock clears it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Result, delete
from sqlalchemy.exc import IntegrityError as RowConflict

from bastion.db import Database, LoginThrottle, aware
from bastion.errors import InputError, RateLimitedError

__all__ = ["ThrottleRules", "name_key", "rowcount"]


def name_key(name: str) -> str:
    """The ``login_throttle`` key of a (normalised) name: its SHA-256, hex."""
    return hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class ThrottleRules:
    """When failed sign-ins delay the next attempt, and when they lock a name out."""

    max_failures_before_delay: int = 3
    lockout_after: int = 10
    lockout: timedelta = timedelta(hours=1)
    max_delay: timedelta = timedelta(minutes=15)

    def __post_init__(self) -> None:
        if not 0 <= self.max_failures_before_delay <= self.lockout_after or not (
            1 <= self.lockout_after <= 1000
        ):
            raise InputError(
                "sign-in throttling needs 0 <= max_failures_before_delay <= lockout_after "
                "and 1 <= lockout_after <= 1000"
            )
        if self.lockout <= timedelta(0) or self.max_delay <= timedelta(0):
            raise InputError("the lock-out time and the longest delay must be positive")

    def wait_seconds(self, row: LoginThrottle | None, now: datetime) -> int:
        """Whole seconds before the next attempt is allowed (0: allowed now)."""
        if row is None:
            return 0
        until = self._refused_until(row)
        if until is None or until <= now:
            return 0
        return max(1, math.ceil((until - now).total_seconds()))

    def _refused_until(self, row: LoginThrottle) -> datetime | None:
        if row.locked_until is not None:
            return aware(row.locked_until)
        extra = row.failures - self.max_failures_before_delay
        if extra < 0:
            return None
        delay = self.max_delay if extra >= 32 else min(timedelta(seconds=2**extra), self.max_delay)
        return aware(row.last_failure_at) + delay

    def count_attempt(self, row: LoginThrottle, now: datetime) -> None:
        """Count one more failure (kept unless the attempt succeeds)."""
        faded = now - aware(row.last_failure_at) >= self.lockout
        if faded and row.failures < self.lockout_after:
            row.failures = 0
        row.failures += 1
        row.last_failure_at = now
        row.locked_until = now + self.lockout if row.failures >= self.lockout_after else None

    def reserve(self, db: Database, key: str, *, now: datetime) -> None:
        """Refuse the attempt if the name must wait; otherwise count it as a failure.

        RateLimitedError says how long to wait; nothing is counted for a refused attempt.
        """
        now = now.astimezone(UTC)
        for last_try in (False, True):
            try:
                with db.session() as s:
                    row = s.get(LoginThrottle, key, with_for_update=True)
                    wait = self.wait_seconds(row, now)
                    if wait:
                        raise RateLimitedError(
                            f"too many failed sign-ins for this name; try again in {wait} s",
                            retry_after=wait,
                        )
                    if row is None:
                        row = LoginThrottle(name_key=key, failures=0, last_failure_at=now)
                        s.add(row)
                    self.count_attempt(row, now)
                return
            except RowConflict:  # another attempt for a new name inserted the row first
                if last_try:
                    raise RateLimitedError(
                        "too many sign-ins at once for this name; try again in 1 s", retry_after=1
                    ) from None

    @staticmethod
    def locked_out(row: LoginThrottle | None, now: datetime) -> bool:
        """Whether the name is locked out (not merely delayed) at ``now``."""
        return row is not None and row.locked_until is not None and aware(row.locked_until) > now

    def is_locked_out(self, db: Database, key: str, *, now: datetime) -> bool:
        """:meth:`locked_out`, reading the name's row."""
        with db.session() as s:
            return self.locked_out(s.get(LoginThrottle, key), now.astimezone(UTC))

    @staticmethod
    def clear(db: Database, key: str) -> bool:
        """Forget the failures of a name (after a success, or an administrator's unlock)."""
        with db.session() as s:
            return (
                rowcount(s.execute(delete(LoginThrottle).where(LoginThrottle.name_key == key))) > 0
            )

    def purge(self, db: Database, *, now: datetime) -> int:
        """Delete rows that no longer delay or lock anything; returns how many."""
        cutoff = now.astimezone(UTC) - max(self.lockout, self.max_delay)
        with db.session() as s:
            result = s.execute(
                delete(LoginThrottle).where(
                    LoginThrottle.last_failure_at <= cutoff,
                    LoginThrottle.failures < self.lockout_after,
                )
            )
            return rowcount(result)


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched."""
    return int(getattr(result, "rowcount", 0) or 0)
