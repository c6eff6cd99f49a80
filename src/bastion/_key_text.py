"""The text of an API key, ``bst_<id>_<secret>``: one rule for the hub and the SDK.

A base-layer module: ``bastion.auth`` parses keys with it, the SDK and the hub's audit
trail use it to keep a key's secret out of what they send and record.
"""

from __future__ import annotations

import re
from typing import Final

from bastion.errors import BastionError

__all__ = ["KEY_ID", "TOKEN", "key_id_named", "key_id_of", "redact_tokens"]

#: A key's id: 16 characters of base32 (lower case).
KEY_ID: Final = re.compile(r"[a-z2-7]{16}")
#: A whole key: its id, then its secret (256 random bits, URL-safe base64).
TOKEN: Final = re.compile(r"bst_([a-z2-7]{16})_([A-Za-z0-9_-]{43})")


def key_id_of(text: str) -> str | None:
    """The id of the key ``text`` names: an id as it is, a whole key as its id, else None."""
    if KEY_ID.fullmatch(text):
        return text
    match = TOKEN.fullmatch(text)
    return match.group(1) if match else None


def key_id_named(text: str, refusal: type[BastionError]) -> str:
    """:func:`key_id_of`, or ``refusal`` raised without echoing ``text`` (a mistyped key is a
    secret too)."""
    key_id = key_id_of(text)
    if key_id is None:
        raise refusal(
            "that names no API key: give its id, 16 characters of a-z and 2-7 as "
            "bastion tokens ls shows, or the whole key"
        )
    return key_id


def redact_tokens(text: str) -> str:
    """``text`` with the secret of every whole key in it replaced by ``<redacted>``."""
    return TOKEN.sub(lambda match: f"bst_{match.group(1)}_<redacted>", text)
