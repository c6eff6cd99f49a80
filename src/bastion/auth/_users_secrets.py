"""The secrets of a person's enrolment: enrolment codes, recovery codes, the sealed TOTP secret.

Enrolment codes (``ben_`` + 192 random bits) and recovery codes (80 random bits) are
shown once; only a SHA-256 of each is stored. A recovery code's hash also binds the
user's id, so one stored hash can never stand for another person's code.

The TOTP secret must be readable by the hub (it computes codes), so it is sealed, not
hashed. The 20-byte secret is padded to the 32 bytes of a data key (one length byte,
the secret, zeros) and wrapped directly by the hub's :class:`~bastion.crypto.KeyManager`
with the context ``bastion-totp:<user name>``: AES-256-GCM under the key-encryption key
(or the KMS's own encryption), authenticated, bound to that user. A sealed secret
copied to another user's row does not unwrap; rotating the key-encryption key and
:func:`~bastion.crypto.rewrap` work on it as on any artifact's data key; and no second
layer of keys is needed, since the secret itself fits where a data key goes.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from typing import Final

from bastion.crypto import KeyManager, WrappedKey
from bastion.errors import IntegrityError

__all__ = [
    "ENROLMENT_PREFIX",
    "RECOVERY_CODE_COUNT",
    "enrolment_code_hash",
    "new_enrolment_code",
    "new_recovery_codes",
    "recovery_code_hash",
    "seal_totp_secret",
    "unseal_totp_secret",
]

ENROLMENT_PREFIX: Final = "ben_"
RECOVERY_CODE_COUNT: Final = 10
_ENROLMENT: Final = re.compile(r"ben_[A-Za-z0-9_-]{32}")
_B32: Final = "abcdefghijklmnopqrstuvwxyz234567"
_RECOVERY: Final = re.compile(r"[a-z2-7]{16}")
_RECOVERY_GROUP: Final = 4
_SEALED_PREFIX: Final = "tp1:"
_DATA_KEY_SIZE: Final = 32
_DAMAGED: Final = "a stored TOTP secret is damaged or was moved from another user; reset the user"


def new_enrolment_code() -> str:
    """A one-time enrolment code: ``ben_`` and 32 URL-safe characters (192 bits)."""
    return ENROLMENT_PREFIX + secrets.token_urlsafe(24)


def enrolment_code_hash(code: str) -> bytes | None:
    """The stored form of an enrolment code; None if ``code`` is not shaped like one."""
    if not isinstance(code, str) or not _ENROLMENT.fullmatch(code):
        return None
    return hashlib.sha256(code.encode("ascii")).digest()


def new_recovery_codes(count: int = RECOVERY_CODE_COUNT) -> list[str]:
    """Fresh recovery codes, each ``xxxx-xxxx-xxxx-xxxx`` in lower-case base32 (80 bits)."""
    codes = []
    for _ in range(count):
        raw = "".join(secrets.choice(_B32) for _ in range(16))
        groups = [raw[i : i + _RECOVERY_GROUP] for i in range(0, len(raw), _RECOVERY_GROUP)]
        codes.append("-".join(groups))
    return codes


def recovery_code_hash(user_id: int, code: str) -> bytes | None:
    """The stored form of ``code`` for this user; None if it is not shaped like one.

    Case, spaces and hyphens do not matter, as people copy codes from paper.
    """
    if not isinstance(code, str) or len(code) > 64:
        return None
    plain = code.lower().replace("-", "").replace(" ", "")
    if not _RECOVERY.fullmatch(plain):
        return None
    return hashlib.sha256(f"bastion-recovery-code:{user_id}:{plain}".encode("ascii")).digest()


def _context(name: str) -> bytes:
    return b"bastion-totp:" + name.encode("utf-8")


def seal_totp_secret(keys: KeyManager, secret: bytes, *, name: str) -> str:
    """``secret`` wrapped by ``keys`` for user ``name``, as text for ``users.totp_secret``."""
    if not 1 <= len(secret) < _DATA_KEY_SIZE:
        raise IntegrityError("a TOTP secret to seal must be 1 to 31 bytes")
    padded = bytes([len(secret)]) + secret
    padded += bytes(_DATA_KEY_SIZE - len(padded))
    return _SEALED_PREFIX + keys.wrap(padded, context=_context(name)).to_text()


def unseal_totp_secret(keys: KeyManager, sealed: str, *, name: str) -> bytes:
    """The TOTP secret of user ``name``; IntegrityError if it was damaged or moved."""
    if not sealed.startswith(_SEALED_PREFIX):
        raise IntegrityError(_DAMAGED)
    try:
        wrapped = WrappedKey.from_text(sealed[len(_SEALED_PREFIX) :])
        padded = keys.unwrap(wrapped, context=_context(name))
    except IntegrityError:
        raise IntegrityError(_DAMAGED) from None
    size = padded[0] if len(padded) == _DATA_KEY_SIZE else 0
    if not 1 <= size < _DATA_KEY_SIZE or any(padded[1 + size :]):
        raise IntegrityError(_DAMAGED)
    return padded[1 : 1 + size]
