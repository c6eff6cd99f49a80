"""Enrolment: from a one-time code to an active user with a password, TOTP and recovery codes.

The code is looked up by its SHA-256 (a secret of 192 random bits: the index lookup
says nothing useful about it) and then compared in constant time; an unknown code is
compared against a dummy hash. Every unknown, used or expired code gets the same
refusal. The slow password hash is computed outside any database transaction, and the
row is written only if it still holds the same code (a conditional UPDATE).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlalchemy import ColumnElement, and_, delete, select, update
from sqlalchemy.orm import Session

from bastion.auth._passwords import PasswordHasher, check_password_policy
from bastion.auth._totp import base32_secret, new_totp_secret, otpauth_uri, verify_totp
from bastion.auth._users_secrets import (
    enrolment_code_hash,
    new_recovery_codes,
    recovery_code_hash,
    seal_totp_secret,
    unseal_totp_secret,
)
from bastion.auth._users_throttle import rowcount
from bastion.crypto import KeyManager
from bastion.db import Database, RecoveryCode, User, aware
from bastion.errors import AuthenticationError, InputError

__all__ = ["ENROLMENT_REFUSED", "EnrolmentFlow", "TotpEnrolment"]

ENROLMENT_REFUSED: Final = (
    "the enrolment code is unknown, used or expired; ask an administrator for a new one"
)
_DUMMY_HASH: Final = hashlib.sha256(b"bastion: no such enrolment code").digest()
_NO_CODE: Final = bytes(32)


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    """The TOTP secret for a person's authenticator: shown once, as a URI (QR) and as text."""

    name: str
    otpauth_uri: str
    secret_base32: str

    def __repr__(self) -> str:
        return f"TotpEnrolment(name={self.name!r}, otpauth_uri=<hidden>, secret_base32=<hidden>)"


@dataclass(frozen=True, slots=True)
class _Pending:
    id: int
    name: str
    code_hash: bytes
    password_hash: str | None
    sealed_totp: str | None
    totp_last_step: int | None

    def __repr__(self) -> str:
        return f"_Pending(id={self.id}, name={self.name!r})"


class EnrolmentFlow:
    """The two steps of enrolment, over one database and key manager."""

    def __init__(
        self, db: Database, *, hasher: PasswordHasher, keys: KeyManager, issuer: str
    ) -> None:
        otpauth_uri(bytes(20), account="check", issuer=issuer)  # refuse a bad issuer now
        self._db = db
        self._hasher = hasher
        self._keys = keys
        self._issuer = issuer

    def _pending(self, s: Session, code: str, now: datetime) -> _Pending:
        digest = enrolment_code_hash(code)
        user = None
        if digest is not None:
            user = s.scalars(select(User).where(User.enrolment_hash == digest)).first()
        stored = _DUMMY_HASH if user is None or user.enrolment_hash is None else user.enrolment_hash
        matched = hmac.compare_digest(stored, digest or _NO_CODE)
        if user is None or digest is None or not matched or user.status != "pending":
            raise AuthenticationError(ENROLMENT_REFUSED)
        expires = user.enrolment_expires_at
        if expires is None or aware(expires) <= now:
            raise AuthenticationError(ENROLMENT_REFUSED)
        return _Pending(
            user.id, user.name, digest, user.password_hash, user.totp_secret, user.totp_last_step
        )

    @staticmethod
    def _still_pending(pending: _Pending) -> ColumnElement[bool]:
        """The row still holds the same code and is still pending."""
        return and_(
            User.id == pending.id,
            User.enrolment_hash == pending.code_hash,
            User.status == "pending",
        )

    def begin(self, code: str, password: str, *, now: datetime) -> TotpEnrolment:
        """Check the code and password policy; store the password hash and a new TOTP secret.

        May be repeated with the same code until enrolment finishes (a new secret each time).
        """
        with self._db.session() as s:
            pending = self._pending(s, code, now)
        check_password_policy(password, user=pending.name)
        password_hash = self._hasher.hash(password)
        secret = new_totp_secret()
        sealed = seal_totp_secret(self._keys, secret, name=pending.name)
        with self._db.session() as s:
            written = s.execute(
                update(User)
                .where(self._still_pending(pending))
                .values(password_hash=password_hash, totp_secret=sealed, totp_last_step=None)
            )
            if rowcount(written) != 1:
                raise AuthenticationError(ENROLMENT_REFUSED)
        uri = otpauth_uri(secret, account=pending.name, issuer=self._issuer)
        return TotpEnrolment(pending.name, uri, base32_secret(secret))

    def finish(self, code: str, totp_code: str, *, now: datetime) -> list[str]:
        """Activate the user once ``totp_code`` checks out; returns the new recovery codes."""
        with self._db.session() as s:
            pending = self._pending(s, code, now)
        if pending.password_hash is None or pending.sealed_totp is None:
            raise InputError(
                "enrolment has not begun: choose a password with this code first, then "
                "confirm a code from the authenticator"
            )
        secret = unseal_totp_secret(self._keys, pending.sealed_totp, name=pending.name)
        step = verify_totp(secret, totp_code, now=now, last_step=pending.totp_last_step)
        if step is None:
            raise AuthenticationError(
                "the authenticator code is wrong; check the device's clock, wait for the "
                "next code and try again"
            )
        codes = new_recovery_codes()
        with self._db.session() as s:
            activated = s.execute(
                update(User)
                .where(self._still_pending(pending))
                .values(
                    status="active",
                    enrolment_hash=None,
                    enrolment_expires_at=None,
                    enrolled_at=now,
                    totp_last_step=step,
                )
            )
            if rowcount(activated) != 1:
                raise AuthenticationError(ENROLMENT_REFUSED)
            s.execute(delete(RecoveryCode).where(RecoveryCode.user_id == pending.id))
            for recovery in codes:
                digest = recovery_code_hash(pending.id, recovery)
                assert digest is not None  # our own codes always have the right shape
                s.add(RecoveryCode(user_id=pending.id, code_hash=digest))
        return codes
