"""Time-based one-time passwords (TOTP, RFC 6238) for people's second factor.

A code is the HOTP value (RFC 4226) of the number of ``period``-second steps since the
Unix epoch, under a shared secret. :func:`verify_totp` accepts the current step and
``window`` steps either side (clock drift), never a step at or before the last one
accepted, so a code is never accepted twice; it returns the step to remember.
Authenticator apps read the secret from an ``otpauth://`` URI (the "Key URI format"
of Google Authenticator), usually shown as a QR code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from datetime import datetime
from typing import Final, Literal
from urllib.parse import quote, urlencode

from bastion.errors import InputError, UsageError

__all__ = [
    "TOTP_DIGITS",
    "TOTP_PERIOD",
    "TotpAlgorithm",
    "base32_secret",
    "new_totp_secret",
    "otpauth_uri",
    "time_step",
    "totp_code",
    "verify_totp",
]

TotpAlgorithm = Literal["SHA1", "SHA256", "SHA512"]
TOTP_DIGITS: Final = 6
TOTP_PERIOD: Final = 30
SECRET_SIZE: Final = 20
_MIN_SECRET: Final = 16  # RFC 4226 section 4: at least 128 bits
_MAX_SECRET: Final = 128
_DIGESTS: Final = {"SHA1": hashlib.sha1, "SHA256": hashlib.sha256, "SHA512": hashlib.sha512}
_CODES: Final = {digits: re.compile(f"[0-9]{{{digits}}}") for digits in (6, 7, 8)}


def new_totp_secret() -> bytes:
    """A fresh 160-bit secret, the size RFC 4226 recommends for HMAC-SHA1."""
    return secrets.token_bytes(SECRET_SIZE)


def _check_parameters(secret: bytes, digits: int, period: int, algorithm: str) -> None:
    if not isinstance(secret, bytes) or not _MIN_SECRET <= len(secret) <= _MAX_SECRET:
        raise UsageError(f"a TOTP secret must be {_MIN_SECRET} to {_MAX_SECRET} bytes")
    if digits not in _CODES:
        raise UsageError("a TOTP code has 6, 7 or 8 digits")
    if not isinstance(period, int) or not 1 <= period <= 300:
        raise UsageError("a TOTP period must be 1 to 300 seconds")
    if algorithm not in _DIGESTS:
        raise UsageError(f"a TOTP algorithm is one of {', '.join(_DIGESTS)}")


def time_step(at: datetime | int, *, period: int = TOTP_PERIOD) -> int:
    """The number of whole ``period``-second steps from the Unix epoch to ``at``."""
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise UsageError("a TOTP time must be timezone-aware (UTC)")
        seconds = int(at.timestamp() // 1)
    elif isinstance(at, int) and not isinstance(at, bool):
        seconds = at
    else:
        raise UsageError("a TOTP time is a timezone-aware datetime or Unix seconds")
    if seconds < 0:
        raise UsageError("a TOTP time must not be before the Unix epoch")
    return seconds // period


def _hotp(secret: bytes, counter: int, digits: int, algorithm: str) -> str:
    """RFC 4226 section 5.3: dynamic truncation of HMAC(secret, counter), ``digits`` long."""
    mac = hmac.new(secret, counter.to_bytes(8, "big"), _DIGESTS[algorithm]).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10**digits).zfill(digits)


def totp_code(
    secret: bytes,
    at: datetime | int,
    *,
    digits: int = TOTP_DIGITS,
    period: int = TOTP_PERIOD,
    algorithm: TotpAlgorithm = "SHA1",
) -> str:
    """The code an authenticator shows at ``at`` (a datetime or Unix seconds)."""
    _check_parameters(secret, digits, period, algorithm)
    return _hotp(secret, time_step(at, period=period), digits, algorithm)


def verify_totp(
    secret: bytes,
    code: str,
    *,
    now: datetime | int,
    last_step: int | None,
    window: int = 1,
    digits: int = TOTP_DIGITS,
    period: int = TOTP_PERIOD,
    algorithm: TotpAlgorithm = "SHA1",
) -> int | None:
    """The time step ``code`` is valid for near ``now``, or None.

    Steps at or before ``last_step`` are never accepted (no replay). Anything but
    exactly ``digits`` ASCII digits is refused before any HMAC is computed. Every
    candidate step is compared in constant time, whether an earlier one matched or not.
    """
    _check_parameters(secret, digits, period, algorithm)
    if not isinstance(window, int) or not 0 <= window <= 10:
        raise UsageError("a TOTP window must be 0 to 10 steps")
    if not isinstance(code, str) or not _CODES[digits].fullmatch(code):
        return None
    current = time_step(now, period=period)
    floor = -1 if last_step is None else last_step
    accepted = None
    for step in range(current - window, current + window + 1):
        if step <= floor or step < 0:
            continue
        expected = _hotp(secret, step, digits, algorithm)
        if hmac.compare_digest(expected.encode(), code.encode()):
            accepted = step
    return accepted


def otpauth_uri(
    secret: bytes,
    *,
    account: str,
    issuer: str,
    algorithm: TotpAlgorithm = "SHA1",
    digits: int = TOTP_DIGITS,
    period: int = TOTP_PERIOD,
) -> str:
    """``otpauth://totp/Issuer:account?secret=...&issuer=...`` for an authenticator app.

    The secret is unpadded base32 (RFC 4648); the label and parameters are URL-quoted.
    Neither ``issuer`` nor ``account`` may contain a colon (the Key URI format forbids it).
    """
    _check_parameters(secret, digits, period, algorithm)
    for what, value in (("issuer", issuer), ("account", account)):
        if not isinstance(value, str) or not value or ":" in value or len(value) > 256:
            raise InputError(f"the TOTP {what} must be 1-256 characters without ':'")
        if not value.isprintable():  # control characters, lone surrogates
            raise InputError(f"the TOTP {what} holds unprintable characters; remove them")
    label = f"{quote(issuer, safe='')}:{quote(account, safe='')}"
    query = urlencode(
        {
            "secret": base32_secret(secret),
            "issuer": issuer,
            "algorithm": algorithm,
            "digits": str(digits),
            "period": str(period),
        },
        quote_via=quote,
    )
    return f"otpauth://totp/{label}?{query}"


def base32_secret(secret: bytes) -> str:
    """``secret`` as unpadded upper-case base32, as people type it into an authenticator."""
    return base64.b32encode(secret).decode("ascii").rstrip("=")
