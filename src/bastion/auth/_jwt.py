"""JWS compact serialisation (RFC 7515) of a JWT (RFC 7519): split, decode, check the header.

:func:`decode_compact` turns a bearer token into an inert :class:`CompactJws`
without trusting anything in it: size and alphabet are bounded first, the
header's ``alg`` must be an asymmetric algorithm of :data:`ALGORITHMS`
(``none`` and ``HS*`` are refused outright, so a public key can never be used
as an HMAC secret), ``crit`` and key-pointing headers (``jku``, ``jwk``,
``x5u``) are refused, and JSON with duplicate names, ``NaN`` or deep nesting
is refused. The claims are decoded but must not be used before the signature
has been checked, except to pick which issuer's keys to check it with.

Every refusal is a :class:`TokenRejectedError`: an
:class:`~bastion.errors.AuthenticationError` with one safe message for the
caller and a precise ``reason`` for the audit log. Neither holds the token.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from bastion.auth._jwk import ALGORITHMS, b64url_decode
from bastion.errors import AuthenticationError

__all__ = [
    "CompactJws",
    "TokenRejectedError",
    "check_registered_claims",
    "decode_compact",
    "shown",
]

DEFAULT_MAX_TOKEN_BYTES: Final = 16 * 1024
_SAFE_MESSAGE = (
    "the bearer token was refused; sign in again or ask your identity provider for a new token"
)
_TYP_ALLOWED: Final = frozenset({"jwt", "at+jwt", "application/jwt", "application/at+jwt"})
_KEY_POINTERS: Final = ("jku", "jwk", "x5u")
_ASCII_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")
_LATEST: Final = 253402300799  # 9999-12-31T23:59:59Z, the last second a datetime can hold
_MAX_AUDIENCES: Final = 32
_MAX_SUBJECT: Final = 255


class TokenRejectedError(AuthenticationError):
    """A bearer token was refused. ``reason`` says precisely why, for the audit log only."""

    def __init__(self, reason: str) -> None:
        super().__init__(_SAFE_MESSAGE)
        self.reason = reason


def shown(value: object, limit: int = 64) -> str:
    """A value from a token, made safe to put in an audit reason: repr'd and truncated."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A decoded but not yet verified JWS: header, claims, the signed bytes and the signature."""

    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return str(self.header["alg"])

    @property
    def kid(self) -> str | None:
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate member {name!r}")
        result[name] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except (ValueError, RecursionError) as exc:
        raise TokenRejectedError(f"the token's {what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise TokenRejectedError(f"the token's {what} is not a JSON object")
    return value


def _part(text: str, what: str) -> bytes:
    try:
        return b64url_decode(text)
    except ValueError as exc:
        raise TokenRejectedError(f"the token's {what} is not base64url") from exc


def _check_header(header: dict[str, Any]) -> None:
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise TokenRejectedError("the token header has no 'alg'")
    if alg.lower() == "none":
        raise TokenRejectedError("the token is unsigned (alg 'none')")
    if alg.upper().startswith("HS"):
        raise TokenRejectedError(f"the token uses HMAC ({shown(alg)}); only public-key algorithms")
    if alg not in ALGORITHMS:
        raise TokenRejectedError(f"the token's algorithm {shown(alg)} is not supported")
    if "crit" in header:
        raise TokenRejectedError("the token header has 'crit' extensions, which are refused")
    for pointer in _KEY_POINTERS:
        if pointer in header:
            raise TokenRejectedError(f"the token header names its own key ({pointer!r})")
    typ = header.get("typ")
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _TYP_ALLOWED):
        raise TokenRejectedError(f"the token's type {shown(typ)} is not a JWT")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > 256):
        raise TokenRejectedError("the token's 'kid' is not a short string")


def decode_compact(token: str, *, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> CompactJws:
    """Decode a compact JWS; TokenRejectedError if it is oversize, malformed or unacceptable."""
    if not isinstance(token, str) or not token:
        raise TokenRejectedError("no bearer token was given")
    if len(token) > max_bytes:
        raise TokenRejectedError(f"the token is longer than {max_bytes} bytes")
    if not _ASCII_TOKEN.fullmatch(token):
        raise TokenRejectedError("the token has characters outside base64url and '.'")
    parts = token.split(".")
    if len(parts) == 5:
        raise TokenRejectedError("the token is encrypted (JWE), which is not supported")
    if len(parts) != 3:
        raise TokenRejectedError("the token is not a compact JWS (three dot-separated parts)")
    header = _json_object(_part(parts[0], "header"), "header")
    _check_header(header)
    claims = _json_object(_part(parts[1], "claims"), "claims")
    signature = _part(parts[2], "signature")
    if not signature:
        raise TokenRejectedError("the token has no signature")
    signing_input = f"{parts[0]}.{parts[1]}".encode("ascii")
    return CompactJws(header, claims, signing_input, signature)


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejectedError(f"the token's {name!r} is not a number of seconds")
    if not 0 <= value <= _LATEST:
        raise TokenRejectedError(f"the token's {name!r} is out of range")
    return float(value)


def check_registered_claims(
    claims: dict[str, Any],
    *,
    issuer: str,
    audiences: tuple[str, ...],
    now: float,
    leeway: float,
) -> float:
    """Check ``iss``, ``aud``, ``exp``, ``nbf``, ``iat`` and ``sub``; the expiry on success.

    Call only after the signature has been verified. ``now`` is seconds since the epoch.
    """
    if claims.get("iss") != issuer:
        raise TokenRejectedError(f"the token's issuer {shown(claims.get('iss'))} is not trusted")
    aud = claims.get("aud")
    held = [aud] if isinstance(aud, str) else aud
    if not isinstance(held, list) or not held or len(held) > _MAX_AUDIENCES:
        raise TokenRejectedError("the token has no usable 'aud' claim")
    if not any(isinstance(a, str) and a in audiences for a in held):
        raise TokenRejectedError(f"the token is for another audience ({shown(aud)})")
    exp = _numeric_date(claims, "exp")
    if exp is None:
        raise TokenRejectedError("the token has no expiry ('exp')")
    if now >= exp + leeway:
        raise TokenRejectedError("the token has expired")
    nbf = _numeric_date(claims, "nbf")
    if nbf is not None and nbf > now + leeway:
        raise TokenRejectedError("the token is not valid yet ('nbf' is in the future)")
    iat = _numeric_date(claims, "iat")
    if iat is not None and iat > now + leeway:
        raise TokenRejectedError("the token was issued in the future ('iat')")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > _MAX_SUBJECT:
        raise TokenRejectedError("the token has no usable subject ('sub')")
    return exp
