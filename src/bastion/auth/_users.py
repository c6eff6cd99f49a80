"""People: enrolment with a one-time code, argon2id password and TOTP, then sign-in with both.

An administrator adds a user with roles and hands over the one-time enrolment code
(:class:`Enrolment`). With it the person sets a password and gets a TOTP secret
(:meth:`UserStore.begin_enrolment`), then proves the authenticator works with a first
code and receives ten recovery codes (:meth:`UserStore.finish_enrolment`); the user
becomes ``active``. Sign-in (:meth:`UserStore.login`) takes the name, the password and a
TOTP or recovery code, and fails with one message whatever was wrong; failures delay
and then lock the name (``_users_throttle``), known or not.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError as RowConflict
from sqlalchemy.orm import Session

from bastion._names import is_name
from bastion.auth._passwords import PasswordHasher
from bastion.auth._policy_schema import PolicyRole
from bastion.auth._users_enrolment import EnrolmentFlow, TotpEnrolment
from bastion.auth._users_mfa import Account, MfaMethod, SecondFactor
from bastion.auth._users_roles import UserRoles, check_roles, load_roles
from bastion.auth._users_secrets import enrolment_code_hash, new_enrolment_code
from bastion.auth._users_throttle import ThrottleRules, name_key
from bastion.crypto import KeyManager
from bastion.db import Database, LoginThrottle, RecoveryCode, SessionRow, User, UserRole, aware, iso
from bastion.errors import AuthenticationError, ConflictError, InputError, NotFoundError

__all__ = [
    "LOGIN_REFUSED",
    "Enrolment",
    "MfaMethod",
    "TotpEnrolment",
    "UserLogin",
    "UserStore",
    "check_user_name",
]

_log = logging.getLogger(__name__)

#: The one message of every failed sign-in or step-up, whatever was wrong.
LOGIN_REFUSED: Final = "the user name, password or code is wrong; check them and try again"


def check_user_name(value: str) -> str:
    """``value`` if it is a valid user name (the hub's strict name rule), else InputError."""
    if not is_name(value):
        raise InputError(
            f"user name {str(value)[:80]!r} is not valid: use 1-64 lower-case letters, digits, "
            "'.', '_' or '-', starting and ending with a letter or digit"
        )
    return value


def _sign_in_name(value: object) -> str:
    """A name as typed at sign-in, normalised (surrounding spaces, case); may be invalid."""
    return value.strip().lower() if isinstance(value, str) else ""


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A new (or reset) user's one-time enrolment ``code``: shown once, never stored."""

    name: str
    code: str
    expires_at: datetime

    def __repr__(self) -> str:
        return f"Enrolment(name={self.name!r}, code=<hidden>, expires_at={self.expires_at!r})"


@dataclass(frozen=True, slots=True)
class UserLogin:
    """A successful sign-in: who, with which roles, and which second factor they used."""

    user_id: int
    name: str
    roles: UserRoles
    mfa_method: MfaMethod


class UserStore:
    """People, their credentials and roles, in the hub's database."""

    def __init__(
        self,
        db: Database,
        *,
        hasher: PasswordHasher,
        keys: KeyManager,
        issuer_name: str = "Bastion",
        max_failures_before_delay: int = 3,
        lockout_after: int = 10,
        lockout: timedelta = timedelta(hours=1),
        max_delay: timedelta = timedelta(minutes=15),
        enrolment_ttl: timedelta = timedelta(days=3),
    ) -> None:
        if enrolment_ttl <= timedelta(0):
            raise InputError("the enrolment code's lifetime must be positive")
        self._db = db
        self._hasher = hasher
        self._throttle = ThrottleRules(max_failures_before_delay, lockout_after, lockout, max_delay)
        self._mfa = SecondFactor(db, keys)
        self._enrolment = EnrolmentFlow(db, hasher=hasher, keys=keys, issuer=issuer_name)
        self._enrolment_ttl = enrolment_ttl

    def __repr__(self) -> str:
        return f"UserStore({self._db.url.split('://')[0]}, throttle={self._throttle!r})"

    def add(
        self,
        name: str,
        roles: Sequence[tuple[str, PolicyRole]],
        *,
        created_by: str,
        now: datetime,
    ) -> Enrolment:
        """A new ``pending`` user with these roles; its enrolment code is shown once."""
        check_user_name(name)
        bindings = check_roles(roles)
        if not isinstance(created_by, str) or not 1 <= len(created_by) <= 256:
            raise InputError("created_by must name who adds the user (1-256 characters)")
        now = aware(now).astimezone(UTC)
        code = new_enrolment_code()
        try:
            with self._db.session() as s:
                if s.scalars(select(User.id).where(User.name == name)).first() is not None:
                    raise ConflictError(f"user {name!r} exists already; choose another name")
                user = User(
                    name=name,
                    status="pending",
                    enrolment_hash=enrolment_code_hash(code),
                    enrolment_expires_at=now + self._enrolment_ttl,
                    created_at=now,
                    created_by=created_by,
                )
                s.add(user)
                s.flush()
                s.add_all(UserRole(user_id=user.id, namespace=ns, role=r) for ns, r in bindings)
        except RowConflict:
            raise ConflictError(f"user {name!r} exists already; choose another name") from None
        return Enrolment(name, code, now + self._enrolment_ttl)

    def begin_enrolment(self, code: str, password: str, *, now: datetime) -> TotpEnrolment:
        """Set the password and a new TOTP secret of the user holding ``code``."""
        return self._enrolment.begin(code, password, now=aware(now).astimezone(UTC))

    def finish_enrolment(self, code: str, totp_code: str, *, now: datetime) -> list[str]:
        """Activate the user once a first TOTP code checks out; returns 10 recovery codes."""
        return self._enrolment.finish(code, totp_code, now=aware(now).astimezone(UTC))

    def login(self, name: str, password: str, otp: str, *, now: datetime) -> UserLogin:
        """Sign in with a name, a password and a TOTP or recovery code.

        Any failure raises the same AuthenticationError (:data:`LOGIN_REFUSED`) and counts
        against the name; a name that must wait gets RateLimitedError before any check.
        """
        now = aware(now).astimezone(UTC)
        wanted = _sign_in_name(name)
        key = name_key(wanted)
        self._throttle.reserve(self._db, key, now=now)
        account = self._active_account(wanted)
        stored = None if account is None else account.password_hash
        if not self._hasher.verify(stored, password) or account is None:
            raise AuthenticationError(LOGIN_REFUSED)
        method = self._mfa.check(account, otp, now=now)
        if method is None:
            raise AuthenticationError(LOGIN_REFUSED)
        with self._db.session() as s:
            user = s.get(User, account.id)
            if user is None or user.status != "active":  # removed or reset meanwhile
                raise AuthenticationError(LOGIN_REFUSED)
            user.last_login_at = now
            if stored is not None and self._hasher.needs_rehash(stored):
                user.password_hash = self._hasher.hash(password)
            login = UserLogin(account.id, account.name, load_roles(s, account.id), method)
        self._throttle.clear(self._db, key)
        return login

    def verify_mfa(self, name: str, otp: str, *, now: datetime) -> MfaMethod:
        """Check a fresh second factor for step-up; same throttle and error as sign-in."""
        now = aware(now).astimezone(UTC)
        wanted = _sign_in_name(name)
        key = name_key(wanted)
        self._throttle.reserve(self._db, key, now=now)
        account = self._active_account(wanted)
        method = None if account is None else self._mfa.check(account, otp, now=now)
        if method is None:
            raise AuthenticationError(LOGIN_REFUSED)
        self._throttle.clear(self._db, key)
        return method

    def _active_account(self, name: str) -> Account | None:
        if not is_name(name):
            return None
        with self._db.session() as s:
            user = s.scalars(select(User).where(User.name == name)).first()
            if user is None or user.status != "active" or user.password_hash is None:
                return None
            return Account(
                user.id, user.name, user.password_hash, user.totp_secret, user.totp_last_step
            )

    def remove(self, name: str) -> None:
        """Delete a user, with their roles, recovery codes and sessions."""
        with self._db.session() as s:
            s.delete(self._user(s, name))
        self._throttle.clear(self._db, name_key(name))

    def unlock(self, name: str, *, now: datetime) -> bool:
        """Forget a user's failed sign-ins; returns whether the user was locked out at ``now``."""
        with self._db.session() as s:
            self._user(s, name)
        key = name_key(name)
        was_locked = self._throttle.is_locked_out(self._db, key, now=aware(now))
        self._throttle.clear(self._db, key)
        return was_locked

    def set_roles(self, name: str, roles: Sequence[tuple[str, PolicyRole]]) -> None:
        """Replace a user's roles (at least one)."""
        bindings = check_roles(roles)
        with self._db.session() as s:
            user = self._user(s, name)
            s.execute(delete(UserRole).where(UserRole.user_id == user.id))
            s.add_all(UserRole(user_id=user.id, namespace=ns, role=r) for ns, r in bindings)

    def reset(self, name: str, *, created_by: str, now: datetime) -> Enrolment:
        """Start a user's enrolment again: credentials cleared, sessions revoked, new code."""
        now = aware(now).astimezone(UTC)
        code = new_enrolment_code()
        with self._db.session() as s:
            user = self._user(s, name)
            user.status = "pending"
            user.password_hash = user.totp_secret = user.totp_last_step = None
            user.enrolment_hash = enrolment_code_hash(code)
            user.enrolment_expires_at = now + self._enrolment_ttl
            user.enrolled_at = None
            s.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user.id))
            s.execute(
                update(SessionRow)
                .where(SessionRow.user_id == user.id, SessionRow.revoked_at.is_(None))
                .values(revoked_at=now)
            )
        self._throttle.clear(self._db, name_key(name))
        _log.info("enrolment of user %s reset by %s", name, created_by)
        return Enrolment(name, code, now + self._enrolment_ttl)

    def roles_of(self, user_id: int) -> UserRoles:
        """The roles of the user with this id (none if there is no such user)."""
        with self._db.session() as s:
            return load_roles(s, user_id)

    def recovery_codes_left(self, name: str) -> int:
        """How many unused recovery codes a user has (to warn them when few are left)."""
        with self._db.session() as s:
            user_id = self._user(s, name).id
        return self._mfa.remaining_recovery_codes(user_id)

    def purge_throttle(self, *, now: datetime) -> int:
        """Delete failed-sign-in records that no longer delay anything; returns how many."""
        return self._throttle.purge(self._db, now=aware(now))

    @staticmethod
    def _user(s: Session, name: str) -> User:
        user = None
        if is_name(name):
            user = s.scalars(select(User).where(User.name == name)).first()
        if user is None:
            raise NotFoundError(f"no user named {str(name)[:80]!r}; list users to see the names")
        return user

    def list(self, *, now: datetime | None = None) -> builtins.list[dict[str, object]]:
        """Every user: id, name, status, roles, times and ``locked`` (locked out now).

        Never a hash or a secret. ``now`` defaults to the current time.
        """
        now = aware(now).astimezone(UTC) if now is not None else datetime.now(UTC)
        with self._db.session() as s:
            users = s.scalars(select(User).order_by(User.name)).all()
            keys = {name_key(u.name): u.name for u in users}
            throttled = s.scalars(select(LoginThrottle).where(LoginThrottle.name_key.in_(keys)))
            locked = {keys[r.name_key] for r in throttled if self._throttle.locked_out(r, now)}
            return [
                {
                    "id": u.id,
                    "name": u.name,
                    "status": u.status,
                    "roles": [{"namespace": ns, "role": r} for ns, r in load_roles(s, u.id)],
                    "created_at": iso(u.created_at),
                    "created_by": u.created_by,
                    "enrolled_at": iso(u.enrolled_at),
                    "last_login_at": iso(u.last_login_at),
                    "locked": u.name in locked,
                }
                for u in users
            ]
