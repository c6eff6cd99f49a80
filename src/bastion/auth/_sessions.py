"""People's sessions: short-lived, bound to the MFA that opened them, revocable at once.

A session token reads ``bss_<id>_<secret>``: the id (16 base32 characters) finds the row
and the secret (256 random bits) is checked against its stored SHA-256 with
:func:`hmac.compare_digest`; an unknown id costs the same comparison. A session ends
``lifetime`` after it opened, or ``idle`` after it was last seen (``last_seen_at`` is
written at most once a minute, so idleness is measured to the minute), or when revoked.
A CSRF token, also shown once and stored as a hash, guards cookie-borne requests.

Every check reads the database, so a revocation takes effect at once in every process.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import delete, or_, update

from bastion._key_text import SESSION_TOKEN
from bastion.auth._principal import Principal
from bastion.auth._users import UserLogin
from bastion.auth._users_mfa import MfaMethod
from bastion.auth._users_roles import load_roles
from bastion.auth._users_throttle import rowcount
from bastion.db import Database, SessionRow, User, aware
from bastion.errors import AuthenticationError, InputError, NotFoundError

__all__ = ["SESSION_PREFIX", "SESSION_REFUSED", "IssuedSession", "SessionStore"]

SESSION_PREFIX: Final = "bss_"
SESSION_REFUSED: Final = "the session is unknown, expired or signed out; sign in again"
_SESSION_ID: Final = re.compile(r"[a-z2-7]{16}")
_DUMMY_HASH: Final = hashlib.sha256(b"bastion: no such session").digest()
_NO_MATCH: Final = bytes(32)
_B32: Final = "abcdefghijklmnopqrstuvwxyz234567"
#: last_seen_at is written at most this often per session, not on every request.
_LAST_SEEN_EVERY: Final = timedelta(seconds=60)
_MFA_METHODS: Final = ("totp", "recovery")
_MAX_SOURCE: Final = 64


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def _is_session_id(value: object) -> bool:
    return isinstance(value, str) and _SESSION_ID.fullmatch(value) is not None


def _parse(token: object) -> tuple[str, bytes]:
    """(session id, SHA-256 of the secret) of a well-formed token; else the one refusal."""
    match = SESSION_TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise AuthenticationError(SESSION_REFUSED)
    return match.group(1), _hash(match.group(2))


def _utc(now: datetime) -> datetime:
    return aware(now).astimezone(UTC)


_MAX_REMEMBERED: Final = 10_000


@dataclass(frozen=True, slots=True)
class _Remembered:
    secret_hash: bytes
    principal: Principal
    expires_at: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class IssuedSession:
    """A new session: ``token`` and ``csrf_token`` are shown once and never stored."""

    session_id: str
    token: str
    csrf_token: str
    expires_at: datetime
    mfa_at: datetime

    def __repr__(self) -> str:
        return (
            f"IssuedSession(session_id={self.session_id!r}, token=<hidden>, "
            f"csrf_token=<hidden>, expires_at={self.expires_at!r}, mfa_at={self.mfa_at!r})"
        )


class SessionStore:
    """Sessions of people, in the hub's database."""

    def __init__(
        self,
        db: Database,
        *,
        idle: timedelta = timedelta(minutes=30),
        lifetime: timedelta = timedelta(hours=8),
        cache_seconds: float = 5.0,
    ) -> None:
        if idle <= timedelta(0) or lifetime <= timedelta(0):
            raise InputError("a session's idle time-out and lifetime must be positive")
        self._db = db
        self.idle = idle
        self.lifetime = lifetime
        self._cache_for = timedelta(seconds=cache_seconds)
        self._cache: OrderedDict[str, _Remembered] = OrderedDict()
        self._lock = threading.Lock()

    def forget(self, session_id: str | None = None) -> None:
        """Drop one remembered session, or all (after changing users): the next request
        reads the database."""
        with self._lock:
            if session_id is None:
                self._cache.clear()
            else:
                self._cache.pop(session_id, None)

    def __repr__(self) -> str:
        return f"SessionStore(idle={self.idle!r}, lifetime={self.lifetime!r})"

    def open(self, login: UserLogin, *, now: datetime, source: str) -> IssuedSession:
        """A new session for a successful sign-in, bound to the MFA it passed (now)."""
        now = _utc(now)
        session_id = "".join(secrets.choice(_B32) for _ in range(16))
        secret = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        expires_at = now + self.lifetime
        with self._db.session() as s:
            s.add(
                SessionRow(
                    id=session_id,
                    user_id=login.user_id,
                    secret_hash=_hash(secret),
                    csrf_hash=_hash(csrf),
                    created_at=now,
                    expires_at=expires_at,
                    last_seen_at=now,
                    mfa_at=now,
                    mfa_method=login.mfa_method,
                    source=str(source)[:_MAX_SOURCE],
                )
            )
        token = f"{SESSION_PREFIX}{session_id}_{secret}"
        return IssuedSession(session_id, token, csrf, expires_at, now)

    def peek(self, token: str, *, now: datetime, via_cookie: bool = False) -> Principal | None:
        """The person if the session was checked lately (no database query), else None.

        Raises AuthenticationError for a malformed token, or a remembered session whose
        secret does not match or which has ended.
        """
        session_id, digest = _parse(token)
        now = _utc(now)
        with self._lock:
            known = self._cache.get(session_id)
        if known is None or known.until <= now:
            return None
        if not hmac.compare_digest(known.secret_hash, digest) or known.expires_at <= now:
            raise AuthenticationError(SESSION_REFUSED)
        return replace(known.principal, via_cookie=True) if via_cookie else known.principal

    def authenticate(self, token: str, *, now: datetime, via_cookie: bool = False) -> Principal:
        """The person a live session belongs to; one AuthenticationError for every failure."""
        known = self.peek(token, now=now, via_cookie=via_cookie)
        if known is not None:
            return known
        now = _utc(now)
        session_id, digest = _parse(token)
        with self._db.session() as s:
            row = s.get(SessionRow, session_id)
            stored = _DUMMY_HASH if row is None else row.secret_hash
            if not hmac.compare_digest(stored, digest) or row is None:
                raise AuthenticationError(SESSION_REFUSED)
            if not self._live(row, now):
                raise AuthenticationError(SESSION_REFUSED)
            user = s.get(User, row.user_id)
            if user is None or user.status != "active":
                raise AuthenticationError(SESSION_REFUSED)
            if now - aware(row.last_seen_at) > _LAST_SEEN_EVERY:
                row.last_seen_at = now
            principal = Principal(
                kind="User",
                id=user.name,
                name=user.name,
                auth_method="password",
                roles=load_roles(s, user.id),
                mfa_at=aware(row.mfa_at),
                session_id=row.id,
            )
            # Remembered no longer than the session may idle from now, nor past its end.
            until = min(now + self._cache_for, aware(row.expires_at))
            remembered = _Remembered(
                bytes(row.secret_hash), principal, aware(row.expires_at), until
            )
        with self._lock:
            self._cache[session_id] = remembered
            self._cache.move_to_end(session_id)
            while len(self._cache) > _MAX_REMEMBERED:
                self._cache.popitem(last=False)
        return replace(principal, via_cookie=True) if via_cookie else principal

    def _live(self, row: SessionRow, now: datetime) -> bool:
        return (
            row.revoked_at is None
            and now < aware(row.expires_at)
            and now < aware(row.last_seen_at) + self.idle
        )

    def check_csrf(self, session_id: str, csrf_token: str) -> bool:
        """Whether ``csrf_token`` is the one issued with this session (constant time)."""
        usable = isinstance(csrf_token, str) and csrf_token.isascii()
        given = _hash(csrf_token) if usable else _NO_MATCH
        row = None
        if _is_session_id(session_id):
            with self._db.session() as s:
                row = s.get(SessionRow, session_id)
        stored = _DUMMY_HASH if row is None else row.csrf_hash
        return hmac.compare_digest(stored, given) and row is not None and usable

    def step_up(self, session_id: str, *, method: MfaMethod, now: datetime) -> datetime:
        """Record a fresh MFA on a live session (after verifying it); returns the new mfa_at."""
        if method not in _MFA_METHODS:
            raise InputError(f"an MFA method is one of {', '.join(_MFA_METHODS)}")
        now = _utc(now)
        with self._db.session() as s:
            row = s.get(SessionRow, session_id) if _is_session_id(session_id) else None
            if row is None or not self._live(row, now):
                raise AuthenticationError(SESSION_REFUSED)
            row.mfa_at = now
            row.mfa_method = method
            row.last_seen_at = now
        self.forget(session_id)
        return now

    def revoke(self, session_id: str, *, now: datetime) -> None:
        """End a session (sign-out); revoking it twice is harmless."""
        with self._db.session() as s:
            row = s.get(SessionRow, session_id) if _is_session_id(session_id) else None
            if row is None:
                raise NotFoundError("no such session; it may have been purged already")
            if row.revoked_at is None:
                row.revoked_at = _utc(now)
        self.forget(session_id)

    def revoke_user(self, user_id: int, *, now: datetime) -> int:
        """End every session of a user; returns how many were still open."""
        with self._db.session() as s:
            result = s.execute(
                update(SessionRow)
                .where(SessionRow.user_id == user_id, SessionRow.revoked_at.is_(None))
                .values(revoked_at=_utc(now))
            )
            count = rowcount(result)
        self.forget()
        return count

    def purge_expired(self, now: datetime) -> int:
        """Delete sessions that ended (expired, idle or revoked); returns how many."""
        now = _utc(now)
        with self._db.session() as s:
            result = s.execute(
                delete(SessionRow).where(
                    or_(
                        SessionRow.revoked_at.is_not(None),
                        SessionRow.expires_at <= now,
                        SessionRow.last_seen_at <= now - self.idle,
                    )
                )
            )
            return rowcount(result)
