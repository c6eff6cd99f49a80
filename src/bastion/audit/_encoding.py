"""The audit log's byte-level rules: canonical JSON, strict JSON reading, field checks.

Canonical JSON is UTF-8, object keys sorted, no whitespace, strings escaped as
ECMAScript's ``JSON.stringify`` escapes them. Audit documents hold only strings,
integers in the interoperable range (``|n| < 2**53``), booleans, null, arrays and
objects whose keys are plain ASCII names, and for exactly those values this
encoding is the JSON Canonicalization Scheme (RFC 8785): any language can
recompute a hash or check a signature.

Reading is strict: duplicate keys, floats, ``NaN``, byte order marks, invalid
UTF-8 and lone surrogates are refused with :class:`~bastion.errors.InputError`,
so a document has exactly one meaning and one encoding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.errors import InputError

__all__ = [
    "MAX_SAFE_INTEGER",
    "JsonValue",
    "canonical_json",
    "check_fields",
    "check_hex_digest",
    "check_int",
    "check_text",
    "check_utc",
    "format_time",
    "load_json_object",
    "parse_time",
]

JsonValue = str | int | bool | None | list[Any] | dict[str, Any]

MAX_SAFE_INTEGER = 2**53 - 1
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{6})Z")
# C0 and C1 controls, DEL, lone surrogates, and the bidirectional overrides that make a
# line display differently from what it holds ("Trojan Source").
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(Exception):
    """Raised inside the JSON parser's hooks; turned into an InputError by the caller."""


def canonical_json(value: Mapping[str, Any]) -> bytes:
    """The canonical encoding of an already validated audit document."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"the key {key!r} appears twice")
        out[key] = value
    return out


def _no_float(text: str) -> Any:
    raise _Refused(f"the number {text[:20]} is not an integer; audit documents hold no floats")


def _no_constant(text: str) -> Any:
    raise _Refused(f"{text} is not valid JSON")


def load_json_object(data: str | bytes, what: str, *, limit: int) -> dict[str, Any]:
    """Parse one JSON object of at most ``limit`` UTF-8 bytes (a trailing newline allowed)."""
    if len(data) > limit + 1:
        raise InputError(f"the {what} is too long (over {limit} bytes); it cannot be an {what}")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputError(f"the {what} is not valid UTF-8 (corrupt?)") from exc
    else:
        text = data
        if _SURROGATE.search(text):
            raise InputError(f"the {what} holds a lone surrogate, which is not valid Unicode")
    text = text.removesuffix("\n")
    if len(text.encode("utf-8", "surrogatepass")) > limit:
        raise InputError(f"the {what} is too long (over {limit} bytes); it cannot be an {what}")
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except _Refused as exc:
        raise InputError(f"the {what} is not valid: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise InputError(f"the {what} is not valid JSON (truncated or corrupt?)") from exc
    if not isinstance(value, dict):
        raise InputError(f"the {what} is not a JSON object")
    return value


def check_fields(doc: Mapping[str, Any], fields: frozenset[str], what: str) -> None:
    """Refuse a document whose keys are not exactly ``fields``."""
    unknown = sorted(set(doc) - fields)
    if unknown:
        raise InputError(f"the {what} has unknown field(s) {', '.join(map(repr, unknown[:5]))}")
    missing = sorted(fields - set(doc))
    if missing:
        raise InputError(f"the {what} lacks the field(s) {', '.join(missing)}")


def check_int(value: object, what: str, *, low: int, high: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise InputError(f"{what} must be an integer, not {type(value).__name__}")
    if not low <= value <= high:
        raise InputError(f"{what} must be between {low} and {high}, not {value}")
    return value


def check_hex_digest(value: object, what: str) -> str:
    """A SHA-256 digest as exactly 64 lower-case hexadecimal characters."""
    if not isinstance(value, str) or not _HEX_DIGEST.fullmatch(value):
        raise InputError(f"{what} must be a SHA-256 digest: 64 lower-case hexadecimal characters")
    return value


def check_text(value: object, what: str, *, limit: int, empty: bool = True) -> str:
    """A printable string of at most ``limit`` characters."""
    if not isinstance(value, str):
        raise InputError(f"{what} must be a string, not {type(value).__name__}")
    if not value and not empty:
        raise InputError(f"{what} must not be empty")
    if len(value) > limit:
        raise InputError(f"{what} is too long ({len(value)} characters; at most {limit})")
    if _UNPRINTABLE.search(value):
        raise InputError(f"{what} holds control, bidirectional or surrogate characters")
    return value


def check_utc(value: object, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise InputError(f"{what} must be a datetime, not {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() != timedelta(0):
        raise InputError(f"{what} must be an aware UTC datetime")
    return value


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with microseconds and ``Z``; the year always has four digits."""
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T"
        f"{v.hour:02d}:{v.minute:02d}:{v.second:02d}.{v.microsecond:06d}Z"
    )


def parse_time(value: object, what: str) -> datetime:
    """The inverse of :func:`format_time`, and nothing else."""
    if not isinstance(value, str) or not (match := _TIME.fullmatch(value)):
        raise InputError(f"{what} must be an RFC 3339 UTC time like 2026-01-31T12:00:00.000000Z")
    try:
        year, month, day, hour, minute, second, micro = (int(part) for part in match.groups())
        return datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
    except ValueError as exc:
        raise InputError(f"{what} {value!r} is not a real date and time") from exc
