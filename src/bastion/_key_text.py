"""The text of an API key, ``bst_<id>_<secret>``: one rule for the hub and the SDK.

A base-layer module: ``bastion.auth`` parses keys (and session tokens, ``bss_<id>_<secret>``)
with it, the SDK and the hub's audit trail use it to keep a secret out of what they send
and record.
"""

from __future__ import annotations

import re
from typing import Final

from bastion.errors import BastionError

__all__ = ["KEY_ID", "SESSION_TOKEN", "TOKEN", "key_id_named", "key_id_of", "redact_tokens"]

#: A key's id: 16 characters of base32 (lower case).
KEY_ID: Final = re.compile(r"[a-z2-7]{16}")
#: A whole key: its id, then its secret (256 random bits, URL-safe base64).
TOKEN: Final = re.compile(r"bst_([a-z2-7]{16})_([A-Za-z0-9_-]{43})")
#: A person's session: its id, then its secret, shaped as a key.
SESSION_TOKEN: Final = re.compile(r"bss_([a-z2-7]{16})_([A-Za-z0-9_-]{43})")
_ANY_TOKEN: Final = re.compile(r"(bs[st])_([a-z2-7]{16})_([A-Za-z0-9_-]{43})")


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
    """``text`` with the secret of every whole key or session token replaced by ``<redacted>``."""
    return _ANY_TOKEN.sub(lambda match: f"{match.group(1)}_{match.group(2)}_<redacted>", text)
