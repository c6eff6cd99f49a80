"""The local keyring: file safety, wrapping, rotation, re-wrapping, and secrecy of keys."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from bastion.crypto import KeyManager, LocalKeyring, WrappedKey, new_data_key, rewrap
from bastion.errors import IntegrityError, KeyringError, UsageError

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONTEXT = b"artifact-0001"


@pytest.fixture
def keyring_path(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


@pytest.fixture
def keyring(keyring_path: Path) -> LocalKeyring:
    return LocalKeyring.create(keyring_path, now=NOW)


def document(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(path.read_bytes())
    return loaded


def materials(path: Path) -> list[str]:
    return [entry["key"] for entry in document(path)["keys"]]


def test_create_writes_a_private_versioned_file(keyring: LocalKeyring, keyring_path: Path) -> None:
    st = keyring_path.stat()
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    doc = document(keyring_path)
    assert (doc["format"], doc["version"]) == ("bastion-keyring", 1)
    assert doc["current"] == keyring.current_key_id == doc["keys"][0]["id"]
    assert doc["current"].startswith("kek-20260301-")
    assert len(base64.b64decode(doc["keys"][0]["key"])) == 32
    assert keyring.key_ids() == (keyring.current_key_id,)
    assert [p.name for p in keyring_path.parent.iterdir()] == ["keyring.json"]


def test_create_refuses_to_overwrite(keyring: LocalKeyring, keyring_path: Path) -> None:
    before = keyring_path.read_bytes()
    with pytest.raises(KeyringError, match="exists already"):
        LocalKeyring.create(keyring_path)
    assert keyring_path.read_bytes() == before
    assert [p.name for p in keyring_path.parent.iterdir()] == ["keyring.json"]


def test_local_keyring_implements_the_protocol(keyring: LocalKeyring) -> None:
    manager: KeyManager = keyring
    assert manager.current_key_id in manager.key_ids()


def test_wrap_and_unwrap_round_trip(keyring: LocalKeyring) -> None:
    data_key = new_data_key()
    wrapped = keyring.wrap(data_key, context=CONTEXT)
    assert wrapped.kek_id == keyring.current_key_id
    assert data_key not in wrapped.blob
    assert keyring.unwrap(wrapped, context=CONTEXT) == data_key
    assert LocalKeyring(keyring.path).unwrap(wrapped, context=CONTEXT) == data_key
    assert keyring.wrap(data_key, context=CONTEXT).blob != wrapped.blob  # fresh nonce


def test_a_key_wrapped_for_another_context_does_not_unwrap(keyring: LocalKeyring) -> None:
    wrapped = keyring.wrap(new_data_key(), context=CONTEXT)
    with pytest.raises(IntegrityError, match="another artifact"):
        keyring.unwrap(wrapped, context=b"artifact-0002")


@pytest.mark.parametrize("position", [0, 11, 12, 40, 59])
def test_a_tampered_blob_does_not_unwrap(keyring: LocalKeyring, position: int) -> None:
    wrapped = keyring.wrap(new_data_key(), context=CONTEXT)
    blob = bytearray(wrapped.blob)
    blob[position] ^= 1
    with pytest.raises(IntegrityError):
        keyring.unwrap(WrappedKey(wrapped.kek_id, bytes(blob)), context=CONTEXT)
    with pytest.raises(IntegrityError, match="wrong length"):
        keyring.unwrap(WrappedKey(wrapped.kek_id, wrapped.blob[:-1]), context=CONTEXT)


def test_the_kek_id_is_bound_to_the_wrap(keyring: LocalKeyring) -> None:
    wrapped = keyring.wrap(new_data_key(), context=CONTEXT)
    old = wrapped.kek_id
    keyring.rotate()
    relabelled = WrappedKey(keyring.current_key_id, wrapped.blob)
    with pytest.raises(IntegrityError):
        keyring.unwrap(relabelled, context=CONTEXT)
    assert keyring.unwrap(WrappedKey(old, wrapped.blob), context=CONTEXT)


def test_an_unknown_kek_is_a_keyring_error(keyring: LocalKeyring) -> None:
    wrapped = WrappedKey("kek-elsewhere", bytes(60))
    with pytest.raises(KeyringError, match="no key-encryption key 'kek-elsewhere'"):
        keyring.unwrap(wrapped, context=CONTEXT)


def test_rotation_keeps_old_keys_and_rewrap_moves_to_the_new_one(
    keyring: LocalKeyring, keyring_path: Path
) -> None:
    data_key = new_data_key()
    old_wrapped = keyring.wrap(data_key, context=CONTEXT)
    first = keyring.current_key_id
    second = keyring.rotate(now=NOW)
    assert second != first
    assert keyring.current_key_id == second
    assert keyring.key_ids() == (first, second)
    assert stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
    assert document(keyring_path)["current"] == second
    assert keyring.unwrap(old_wrapped, context=CONTEXT) == data_key
    assert keyring.wrap(data_key, context=CONTEXT).kek_id == second

    moved = rewrap(keyring, old_wrapped, context=CONTEXT)
    assert moved.kek_id == second
    assert keyring.unwrap(moved, context=CONTEXT) == data_key
    assert rewrap(keyring, moved, context=CONTEXT) is moved
    with pytest.raises(IntegrityError):
        rewrap(keyring, old_wrapped, context=b"artifact-0002")


def test_rotation_in_another_process_is_picked_up(keyring: LocalKeyring) -> None:
    other = LocalKeyring(keyring.path)
    new_id = other.rotate()
    wrapped = other.wrap(b"k" * 32, context=CONTEXT)
    assert keyring.unwrap(wrapped, context=CONTEXT) == b"k" * 32  # reloads on an unknown id
    assert keyring.current_key_id == new_id
    third = keyring.rotate()
    assert LocalKeyring(keyring.path).key_ids() == (*other.key_ids(), third)


def test_retiring_a_key(keyring: LocalKeyring) -> None:
    wrapped = keyring.wrap(new_data_key(), context=CONTEXT)
    first = keyring.current_key_id
    with pytest.raises(UsageError, match="current"):
        keyring.retire(first)
    keyring.rotate()
    keyring.retire(first)
    assert first not in keyring.key_ids()
    assert first not in LocalKeyring(keyring.path).key_ids()
    with pytest.raises(KeyringError, match="no key-encryption key"):
        keyring.unwrap(wrapped, context=CONTEXT)
    with pytest.raises(KeyringError, match="no key"):
        keyring.retire(first)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o602, 0o610])
def test_a_file_open_to_group_or_others_is_refused(keyring_path: Path, mode: int) -> None:
    LocalKeyring.create(keyring_path)
    os.chmod(keyring_path, mode)
    with pytest.raises(KeyringError, match="chmod 600") as caught:
        LocalKeyring(keyring_path)
    assert all(material not in caught.value.message for material in materials(keyring_path))


def test_a_private_file_with_fewer_rights_is_accepted(keyring_path: Path) -> None:
    LocalKeyring.create(keyring_path)
    os.chmod(keyring_path, 0o400)
    assert LocalKeyring(keyring_path).key_ids()


def test_a_missing_file_is_a_keyring_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="does not exist"):
        LocalKeyring(tmp_path / "absent.json")


def test_a_directory_or_fifo_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    with pytest.raises(KeyringError, match="not a regular file"):
        LocalKeyring(folder)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(KeyringError, match="not a regular file"):
        LocalKeyring(fifo)  # refused without blocking on the FIFO


def test_create_in_a_missing_folder_is_a_keyring_error(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="cannot write keyring"):
        LocalKeyring.create(tmp_path / "missing" / "keyring.json")


def test_a_newer_format_version_is_refused(keyring_path: Path, keyring: LocalKeyring) -> None:
    doc = document(keyring_path)
    doc["version"] = 2
    keyring_path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError, match="format version 2"):
        LocalKeyring(keyring_path)


def test_keys_never_appear_in_reprs_errors_or_logs(
    keyring_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    keyring = LocalKeyring.create(keyring_path)
    keyring.rotate()
    data_key = new_data_key()
    wrapped = keyring.wrap(data_key, context=CONTEXT)
    secrets = [*materials(keyring_path), base64.b64encode(data_key).decode(), data_key.hex()]
    raw = [base64.b64decode(m) for m in materials(keyring_path)]
    shown = [repr(keyring), str(keyring), repr(wrapped), caplog.text]
    # A key whose base64 is one byte short: the message must not quote it.
    doc = document(keyring_path)
    doc["keys"][0]["key"] = base64.b64encode(raw[0][:31]).decode()
    keyring_path.write_text(json.dumps(doc))
    with pytest.raises(KeyringError) as caught:
        LocalKeyring(keyring_path)
    shown.append(caught.value.message)
    for text in shown:
        for secret in secrets:
            assert secret not in text
        for key in raw:
            assert repr(key)[2:-1] not in text
    assert "kek-" in repr(keyring)


def test_wrap_checks_its_arguments(keyring: LocalKeyring) -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        keyring.wrap(b"short", context=CONTEXT)
    with pytest.raises(UsageError, match="context must be bytes"):
        keyring.wrap(new_data_key(), context="artifact")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="context must be bytes"):
        keyring.wrap(new_data_key(), context=5)  # type: ignore[arg-type]


def test_wrapped_key_text_round_trip(keyring: LocalKeyring) -> None:
    wrapped = keyring.wrap(new_data_key(), context=CONTEXT)
    text = wrapped.to_text()
    assert text.startswith(f"wk1:{wrapped.kek_id}:")
    assert "=" not in text
    assert WrappedKey.from_text(text) == wrapped


@pytest.mark.parametrize(
    ("kek_id", "blob"),
    [("", b"x"), ("-leading-dash", b"x"), ("has:colon", b"x"), ("k" * 129, b"x"), ("ok", b"")],
)
def test_wrapped_key_validates_itself(kek_id: str, blob: bytes) -> None:
    with pytest.raises(UsageError):
        WrappedKey(kek_id, blob)
