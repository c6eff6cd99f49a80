"""Signed checkpoints and the hub's audit key file."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from bastion.audit import (
    CheckpointSigner,
    MerkleAccumulator,
    SignedCheckpoint,
    audit_key_id,
    create_audit_key,
    load_audit_key,
    load_audit_public_key,
    load_or_create_audit_key,
    public_key_pem,
)
from bastion.errors import (
    ConflictError,
    InputError,
    IntegrityError,
    KeyFormatError,
    PassphraseError,
    UsageError,
)

NOW = datetime(2026, 2, 1, 8, 30, tzinfo=UTC)


def _signed(signer: CheckpointSigner, size: int = 3) -> SignedCheckpoint:
    tree = MerkleAccumulator()
    for i in range(size):
        tree.append(bytes([i]) * 32)
    return signer.checkpoint(log_id="hub-1", tree=tree, last_hash="ab" * 32, now=NOW)


def test_sign_and_verify(signer: CheckpointSigner) -> None:
    signed = _signed(signer)
    cp = signed.verify(signer.public_key)
    assert cp.size == 3
    assert cp.log_id == "hub-1"
    assert cp.key_id == signer.key_id
    assert len(signed.signature) == 64
    signer.public_key.verify(
        signed.signature,
        b"bastion-audit-checkpoint/v1\n"
        + json.dumps(cp.to_dict(), sort_keys=True, separators=(",", ":")).encode(),
    )


@pytest.mark.parametrize(
    "change",
    [
        {"size": 4},
        {"root": "00" * 32},
        {"last_hash": "cd" * 32},
        {"log_id": "hub-2"},
        {"time": NOW + timedelta(microseconds=1)},
    ],
)
def test_any_change_breaks_the_signature(signer: CheckpointSigner, change: dict[str, Any]) -> None:
    signed = _signed(signer)
    altered = replace(signed, checkpoint=replace(signed.checkpoint, **change))
    with pytest.raises(IntegrityError, match="forged or altered"):
        altered.verify(signer.public_key)


def test_a_checkpoint_signed_by_another_key_is_refused(
    signer: CheckpointSigner, other_signer: CheckpointSigner
) -> None:
    theirs = _signed(other_signer)
    with pytest.raises(IntegrityError, match="another key"):
        theirs.verify(signer.public_key)
    # Claiming our key id does not help: the signature is still theirs.
    claimed = other_signer.sign(replace(theirs.checkpoint, key_id=other_signer.key_id))
    forged = SignedCheckpoint(replace(claimed.checkpoint, key_id=signer.key_id), claimed.signature)
    with pytest.raises(IntegrityError, match="forged or altered"):
        forged.verify(signer.public_key)


def test_the_signer_refuses_a_checkpoint_naming_another_key(
    signer: CheckpointSigner, other_signer: CheckpointSigner
) -> None:
    theirs = _signed(other_signer).checkpoint
    with pytest.raises(UsageError, match="this signer holds"):
        signer.sign(theirs)
    with pytest.raises(UsageError, match="aware"):
        signer.checkpoint(
            log_id="hub-1", tree=MerkleAccumulator(), last_hash="0" * 64, now=datetime(2026, 1, 1)
        )
    with pytest.raises(UsageError, match="Ed25519"):
        CheckpointSigner(ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]


def test_checkpoint_time_is_stored_in_utc(signer: CheckpointSigner) -> None:
    later = datetime(2026, 2, 1, 10, 30, tzinfo=timezone(timedelta(hours=2)))
    signed = signer.checkpoint(
        log_id="hub-1", tree=MerkleAccumulator(), last_hash="0" * 64, now=later
    )
    assert signed.checkpoint.time == NOW
    assert signed.checkpoint.time.tzinfo == UTC


def test_json_round_trip(signer: CheckpointSigner) -> None:
    signed = _signed(signer)
    line = signed.to_json()
    assert "\n" not in line
    doc = json.loads(line)
    assert set(doc) == {"v", "log_id", "size", "root", "last_hash", "time", "key_id", "signature"}
    again = SignedCheckpoint.from_json(line)
    assert again == signed
    again.verify(signer.public_key)


def _line(signer: CheckpointSigner, **changes: Any) -> str:
    doc = json.loads(_signed(signer).to_json())
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"extra": 1}, "unknown field"),
        ({"signature": ...}, "lacks the field"),
        ({"v": 0}, "version 0 is not supported"),
        ({"size": -1}, "between 0 and"),
        ({"size": "3"}, "must be an integer"),
        ({"root": "AB" * 32}, "lower-case hexadecimal"),
        ({"key_id": "ab" * 32}, "sha256:"),
        ({"log_id": "hub 1"}, "letters, digits"),
        ({"log_id": ""}, "must not be empty"),
        ({"time": "2026-02-01T08:30:00Z"}, "RFC 3339"),
        ({"signature": "not base64!" + "A" * 77}, "not valid base64"),
        ({"signature": base64.b64encode(b"x" * 63).decode()}, "64 bytes"),
        # 64 bytes encode to 86 characters and "=="; changing the unused bits of the last
        # character gives another spelling of the same bytes, which is refused.
        ({"signature": base64.b64encode(b"\x00" * 64).decode()[:-3] + "B=="}, "canonical"),
    ],
)
def test_from_json_is_strict(
    signer: CheckpointSigner, changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        SignedCheckpoint.from_json(_line(signer, **changes))


def test_checkpoint_validates_itself(signer: CheckpointSigner) -> None:
    cp = _signed(signer).checkpoint
    with pytest.raises(InputError, match="aware UTC"):
        replace(cp, time=datetime(2026, 1, 1))
    with pytest.raises(InputError, match="size must be an integer"):
        replace(cp, size=True)


# --- the audit key file -----------------------------------------------------------


def test_create_then_load(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    key = create_audit_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = load_audit_key(path)
    assert audit_key_id(loaded) == audit_key_id(key)
    assert [p.name for p in tmp_path.iterdir()] == ["audit.key"]  # no temporary file left


def test_create_never_replaces_an_existing_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    key = create_audit_key(path)
    with pytest.raises(ConflictError, match="exists already"):
        create_audit_key(path)
    assert audit_key_id(load_audit_key(path)) == audit_key_id(key)


def test_create_is_not_widened_by_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        create_audit_key(tmp_path / "audit.key")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "audit.key").stat().st_mode) == 0o600


def test_load_or_create_creates_once(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    first = load_or_create_audit_key(path)
    second = load_or_create_audit_key(path)
    assert audit_key_id(first) == audit_key_id(second)


def test_load_or_create_is_safe_when_processes_race(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    ids: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            ids.append(audit_key_id(load_or_create_audit_key(path)))
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(ids)) == 1
    assert ids[0] == audit_key_id(load_audit_key(path))


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_key_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "audit.key"
    create_audit_key(path)
    path.chmod(mode)
    with pytest.raises(KeyFormatError, match="chmod 600"):
        load_audit_key(path)


def test_passphrase_protected_key(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    key = create_audit_key(path, passphrase=b"correct horse")
    assert b"ENCRYPTED" in path.read_bytes()
    with pytest.raises(PassphraseError, match="encrypted"):
        load_audit_key(path)
    with pytest.raises(PassphraseError, match="wrong passphrase"):
        load_audit_key(path, passphrase=b"wrong")
    loaded = load_audit_key(path, passphrase=b"correct horse")
    assert audit_key_id(loaded) == audit_key_id(key)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def test_unusable_key_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_audit_key(tmp_path / "missing.key")
    (tmp_path / "dir").mkdir(mode=0o700)
    with pytest.raises(KeyFormatError, match="not a regular file"):
        load_audit_key(tmp_path / "dir")
    garbage = tmp_path / "garbage.key"
    _write_private(garbage, b"not a key")
    with pytest.raises(KeyFormatError, match="not a readable PEM"):
        load_audit_key(garbage)
    ecdsa = tmp_path / "ecdsa.key"
    _write_private(
        ecdsa,
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    with pytest.raises(KeyFormatError, match="not an Ed25519 key"):
        load_audit_key(ecdsa)
    huge = tmp_path / "huge.key"
    _write_private(huge, b"A" * (65 * 1024))
    with pytest.raises(KeyFormatError, match="too large"):
        load_audit_key(huge)
    with pytest.raises(InputError, match="cannot create"):
        create_audit_key(tmp_path / "no" / "such" / "dir" / "audit.key")


def test_public_key_pem_and_key_id() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = public_key_pem(key)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert public_key_pem(key.public_key()) == pem
    public = load_audit_public_key(pem)
    der = public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    assert audit_key_id(public) == audit_key_id(key) == "sha256:" + hashlib.sha256(der).hexdigest()


def test_load_audit_public_key_refuses_other_things() -> None:
    ecdsa = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = ecdsa.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(KeyFormatError, match="not an Ed25519 key"):
        load_audit_public_key(pem)
    with pytest.raises(KeyFormatError, match="not a readable PEM"):
        load_audit_public_key(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    with pytest.raises(KeyFormatError, match="too large"):
        load_audit_public_key(b"A" * (65 * 1024))
