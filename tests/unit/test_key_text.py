"""The text of an API key: an id found in a whole key, and secrets kept out of records."""

from __future__ import annotations

import secrets

from hypothesis import given
from hypothesis import strategies as st

from bastion._key_text import KEY_ID, TOKEN, key_id_of, redact_tokens

ID = "abcdefghijklmnop"
#: A secret is URL-safe base64 and may hold "_" itself: this one does, in the middle.
KEY = f"bst_{ID}_{secrets.token_urlsafe(32)[:20]}_{secrets.token_urlsafe(32)[:22]}"


def test_an_id_or_a_whole_key_names_the_key_and_nothing_else_does() -> None:
    assert TOKEN.fullmatch(KEY)
    assert key_id_of(ID) == ID
    assert key_id_of(KEY) == ID
    for text in ("", "ABCDEFGHIJKLMNOP", ID[:-1], ID + "q", f"{KEY}x", f"bst_{ID}", "../x"):
        assert key_id_of(text) is None, text


def test_a_whole_key_is_recorded_by_its_id_only() -> None:
    secret = KEY.split("_", 2)[2]
    assert redact_tokens(f"/api/v1/api-keys/{KEY}/rotate") == (
        f"/api/v1/api-keys/bst_{ID}_<redacted>/rotate"
    )
    assert secret not in redact_tokens(f"key:{KEY} and {KEY}")
    assert redact_tokens("key:" + ID) == "key:" + ID
    # A person's session token is as much a secret (it was once recorded whole).
    session = f"bss_{ID}_{secret}"
    assert redact_tokens(f"key:{session}") == f"key:bss_{ID}_<redacted>"


#: Text around a key that cannot itself hold one (every key has an underscore).
AROUND = st.text(st.characters(blacklist_characters="_"), max_size=100)


@given(AROUND, AROUND)
def test_no_secret_survives_redaction(before: str, after: str) -> None:
    redacted = redact_tokens(before + KEY + after)
    assert KEY.split("_", 2)[2] not in redacted
    assert redacted.startswith(before)
    assert f"bst_{ID}_<redacted>" in redacted


@given(st.text(max_size=200))
def test_any_text_names_a_valid_id_or_none(text: str) -> None:
    found = key_id_of(text)
    assert found is None or KEY_ID.fullmatch(found)
    assert redact_tokens(text) == text or "<redacted>" in redact_tokens(text)
