"""Property-based tests for the keyring file reader and the wrapped-key text format.

Random, hostile and mutated keyring files give a :class:`KeyringError`, never
another exception, a hang or unbounded memory; random or mutated wrapped-key
text gives an :class:`IntegrityError` or parses to a key that writes back
exactly the same text (the format is canonical).
"""

from __future__ import annotations

import base64
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.crypto import LocalKeyring, WrappedKey
from bastion.crypto._keyring_file import KEK_ID
from bastion.errors import IntegrityError, KeyringError

_VALID: dict[str, Any] = {
    "format": "bastion-keyring",
    "version": 1,
    "current": "kek-b",
    "keys": [
        {"id": "kek-a", "created": "2026-01-01T00:00:00Z", "key": base64.b64encode(bytes(32))},
        {"id": "kek-b", "created": "2026-02-01T00:00:00Z", "key": base64.b64encode(b"k" * 32)},
    ],
}
for _entry in _VALID["keys"]:
    _entry["key"] = _entry["key"].decode()


def _open(data: bytes) -> LocalKeyring | KeyringError:
    """Open ``data`` as a 0600 keyring file: the keyring, or the KeyringError it gives."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "keyring.json"
        path.touch(mode=0o600)
        path.write_bytes(data)
        try:
            return LocalKeyring(path)
        except KeyringError as exc:
            return exc


def test_the_valid_document_opens() -> None:
    keyring = _open(json.dumps(_VALID).encode())
    assert isinstance(keyring, LocalKeyring)
    assert keyring.key_ids() == ("kek-a", "kek-b")
    assert keyring.current_key_id == "kek-b"


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=2000))
@example(b"[" * 100_000)
@example(b'{"a":' * 50_000)
@example(b"9" * 10_000)
@example(b"\xff\xfe{}")
@example(b"")
def test_random_bytes_give_a_keyring_error(data: bytes) -> None:
    assert isinstance(_open(data), KeyringError)


@settings(max_examples=200, deadline=None)
@given(_JSON)
def test_random_json_gives_a_keyring_error(value: Any) -> None:
    assert isinstance(_open(json.dumps(value).encode()), KeyringError)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return []
    found = []
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


@st.composite
def _mutated(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(_VALID)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(
                _JSON
                | st.sampled_from(["kek-a", "kek-b", "kek-c", "x:y", "2026-01-01T00:00:00"])
                | st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())
            )
    return doc


@settings(max_examples=300, deadline=None)
@given(_mutated())
def test_mutated_documents_open_only_when_still_valid(doc: dict[str, Any]) -> None:
    result = _open(json.dumps(doc).encode())
    if isinstance(result, KeyringError):
        return
    # Accepted: then it really is a well-formed keyring.
    assert doc["format"] == "bastion-keyring"
    assert doc["version"] == 1
    assert result.current_key_id == doc["current"]
    assert result.key_ids() == tuple(entry["id"] for entry in doc["keys"])
    assert all(len(base64.b64decode(entry["key"])) == 32 for entry in doc["keys"])


def test_an_oversized_keyring_is_refused_unread() -> None:
    result = _open(b" " * ((1 << 20) + 1))
    assert isinstance(result, KeyringError)
    assert "too large" in result.message


_IDS = st.from_regex(KEK_ID, fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(kek_id=_IDS, blob=st.binary(min_size=1, max_size=300))
def test_wrapped_key_text_round_trips(kek_id: str, blob: bytes) -> None:
    wrapped = WrappedKey(kek_id, blob)
    assert WrappedKey.from_text(wrapped.to_text()) == wrapped


def _parse(text: str) -> WrappedKey | IntegrityError:
    try:
        return WrappedKey.from_text(text)
    except IntegrityError as exc:
        return exc


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
@example("wk1:kek-a:AA==")
@example("wk1:kek-a:AB")
@example("wk1:kek-a:A")
@example("wk1:kek-a:")
@example("wk1:kek-a:AAAA:")
@example("wk2:kek-a:AAAA")
@example("wk1:kek-a:AA AA")
@example("wk1:kek-\u00e9:AAAA")
@example("wk1:kek-a:" + "A" * 20_000)
def test_random_text_parses_only_when_canonical(text: str) -> None:
    result = _parse(text)
    if isinstance(result, WrappedKey):
        assert result.to_text() == text


@st.composite
def _mutated_text(draw: st.DrawFn) -> str:
    text = WrappedKey(draw(_IDS), draw(st.binary(min_size=1, max_size=80))).to_text()
    chars = list(text)
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(chars)))
        kind = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.characters(codec="utf-8") | st.sampled_from(list(":=+/-_ \n")))
        if kind == "insert":
            chars.insert(position, char)
        elif chars and position < len(chars):
            if kind == "delete":
                del chars[position]
            else:
                chars[position] = char
    return "".join(chars)


@settings(max_examples=300, deadline=None)
@given(_mutated_text())
def test_mutated_text_parses_only_when_canonical(text: str) -> None:
    result = _parse(text)
    if isinstance(result, WrappedKey):
        assert result.to_text() == text
