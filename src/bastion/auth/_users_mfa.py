"""A person's second factor at sign-in and step-up: a TOTP code, or a one-time recovery code.

Six ASCII digits are a TOTP code; anything else is tried as a recovery code. Both are
consumed atomically: the accepted TOTP step is written only if it is later than the
last one (a conditional UPDATE), and a recovery code is marked used only if it was
not already, so two sign-ins racing with the same code cannot both pass.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Final, Literal

from sqlalchemy import or_, select, update

from bastion.auth._totp import verify_totp
from bastion.auth._users_secrets import recovery_code_hash, unseal_totp_secret
from bastion.auth._users_throttle import rowcount
from bastion.crypto import KeyManager
from bastion.db import Database, RecoveryCode, User

__all__ = ["Account", "MfaMethod", "SecondFactor"]

MfaMethod = Literal["totp", "recovery"]
_TOTP_SHAPE: Final = re.compile(r"[0-9]{6}")


@dataclass(frozen=True, slots=True)
class Account:
    """What sign-in needs of an active user, read once (no secret in its repr)."""

    id: int
    name: str
    password_hash: str | None
    sealed_totp: str | None
    totp_last_step: int | None

    def __repr__(self) -> str:
        return f"Account(id={self.id}, name={self.name!r})"


class SecondFactor:
    """Checks and consumes TOTP and recovery codes for accounts of one database."""

    def __init__(self, db: Database, keys: KeyManager) -> None:
        self._db = db
        self._keys = keys

    def check(self, account: Account, code: object, *, now: datetime) -> MfaMethod | None:
        """The method ``code`` passed with (now used up), or None if it is not valid."""
        if not isinstance(code, str):
            return None
        if _TOTP_SHAPE.fullmatch(code):
            return "totp" if self._totp(account, code, now) else None
        return "recovery" if self._recovery(account, code, now) else None

    def _totp(self, account: Account, code: str, now: datetime) -> bool:
        if account.sealed_totp is None:
            return False
        secret = unseal_totp_secret(self._keys, account.sealed_totp, name=account.name)
        step = verify_totp(secret, code, now=now, last_step=account.totp_last_step)
        if step is None:
            return False
        with self._db.session() as s:
            accepted = s.execute(
                update(User)
                .where(
                    User.id == account.id,
                    or_(User.totp_last_step.is_(None), User.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
            return rowcount(accepted) == 1

    def _recovery(self, account: Account, code: str, now: datetime) -> bool:
        digest = recovery_code_hash(account.id, code)
        if digest is None:  # not shaped like a recovery code: nothing to look up
            return False
        with self._db.session() as s:
            unused = s.execute(
                select(RecoveryCode.id, RecoveryCode.code_hash).where(
                    RecoveryCode.user_id == account.id, RecoveryCode.used_at.is_(None)
                )
            ).all()
            matched = None
            for code_id, stored in unused:  # compare with every one: no early exit
                if hmac.compare_digest(stored, digest):
                    matched = code_id
            if matched is None:
                return False
            used = s.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == matched, RecoveryCode.used_at.is_(None))
                .values(used_at=now)
            )
            return rowcount(used) == 1

    def remaining_recovery_codes(self, user_id: int) -> int:
        """How many recovery codes the user has not used yet."""
        with self._db.session() as s:
            return len(
                s.scalars(
                    select(RecoveryCode.id).where(
                        RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)
                    )
                ).all()
            )
