"""People's passwords: argon2id hashes (PHC strings) and the rules a new password must meet.

:class:`PasswordHasher` wraps argon2-cffi with the argon2id variant. A password is
normalised to Unicode NFKC before hashing and verifying (NIST SP 800-63B, 5.1.1.2), so
the same passphrase typed on two keyboards verifies. Verifying for a user that does not
exist (``stored=None``) runs the same argon2id computation against a fixed dummy hash
made with the same parameters, so the time taken does not say whether the user exists.
"""

from __future__ import annotations

import secrets
import unicodedata
from typing import Final

import argon2
from argon2.exceptions import Argon2Error, InvalidHashError

from bastion.errors import InputError

__all__ = [
    "MAX_PASSWORD_BYTES",
    "MIN_PASSWORD_CHARS",
    "PasswordHasher",
    "check_password_policy",
]

MIN_PASSWORD_CHARS: Final = 12
MAX_PASSWORD_BYTES: Final = 1024
#: Shorter user names are not looked for in passwords: "containing x" refuses too much.
_MIN_NAME_CHECKED: Final = 3


def _normalised(password: object) -> bytes | None:
    """The UTF-8 bytes of the NFKC form of ``password``; None if it cannot be one."""
    if not isinstance(password, str):
        return None
    try:
        return unicodedata.normalize("NFKC", password).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: not text a person can type
        return None


class PasswordHasher:
    """Hashes and verifies passwords with argon2id.

    The defaults (``time_cost=3``, 64 MiB, one lane) follow RFC 9106's second
    recommended option for memory-constrained servers. Tests may use a cheap hasher
    (``PasswordHasher(time_cost=1, memory_cost_kib=1024)``).
    """

    def __init__(
        self, time_cost: int = 3, memory_cost_kib: int = 65536, parallelism: int = 1
    ) -> None:
        if time_cost < 1 or parallelism < 1 or memory_cost_kib < 8 * parallelism:
            raise InputError(
                "argon2id needs time_cost >= 1, parallelism >= 1 and at least "
                "8 KiB of memory per lane; raise the settings"
            )
        self.time_cost = time_cost
        self.memory_cost_kib = memory_cost_kib
        self.parallelism = parallelism
        self._argon2 = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            hash_len=32,
            salt_len=16,
            type=argon2.Type.ID,
        )
        #: Verified against when there is no stored hash, so that costs the same.
        self.dummy_hash: Final = self._argon2.hash(secrets.token_bytes(32))

    def __repr__(self) -> str:
        return (
            f"PasswordHasher(time_cost={self.time_cost}, "
            f"memory_cost_kib={self.memory_cost_kib}, parallelism={self.parallelism})"
        )

    def hash(self, password: str) -> str:
        """The argon2id PHC string of ``password`` (with a fresh random salt)."""
        encoded = _normalised(password)
        if encoded is None:
            raise InputError("the password is not valid text; choose one without odd characters")
        return self._argon2.hash(encoded)

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored``; False (at the same cost) if ``stored`` is None.

        Never raises for a wrong, malformed or oversized password or a damaged hash.
        """
        encoded = _normalised(password)
        usable = encoded is not None and len(encoded) <= MAX_PASSWORD_BYTES
        if stored is None or not usable:
            self._check(self.dummy_hash, b"" if encoded is None else encoded[:MAX_PASSWORD_BYTES])
            return False
        assert encoded is not None  # usable implies it
        return self._check(stored, encoded)

    def _check(self, stored: str, encoded: bytes) -> bool:
        """One argon2 verification; every argon2 failure is a mismatch."""
        try:
            return self._argon2.verify(stored, encoded)
        except (Argon2Error, InvalidHashError, ValueError, TypeError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        """Whether ``stored`` was made with other parameters (or is unreadable): hash again."""
        try:
            return self._argon2.check_needs_rehash(stored)
        except (Argon2Error, InvalidHashError, ValueError, TypeError):
            return True


def check_password_policy(password: str, *, user: str) -> None:
    """Refuse a new password that is too short, too long, holds the user's name, or one character.

    The message names the rule broken and never repeats the password.
    """
    if not isinstance(password, str):
        raise InputError("the password must be text")
    encoded = _normalised(password)
    if encoded is None:
        raise InputError("the password is not valid text; choose one without odd characters")
    text = unicodedata.normalize("NFKC", password)
    if len(text) < MIN_PASSWORD_CHARS:
        raise InputError(
            f"the password is too short: use at least {MIN_PASSWORD_CHARS} characters "
            "(a phrase of several words is easy to remember)"
        )
    if len(encoded) > MAX_PASSWORD_BYTES:
        raise InputError(
            f"the password is too long: use at most {MAX_PASSWORD_BYTES} bytes of UTF-8 text"
        )
    if len(set(text)) == 1:
        raise InputError("the password repeats one character; choose one with several")
    if len(user) >= _MIN_NAME_CHECKED and user.casefold() in text.casefold():
        raise InputError("the password contains the user name; choose one that does not")
