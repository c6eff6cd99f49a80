"""Property-based tests: every reader of the audit package, fuzzed, and verify_log against
random tampering.

Readers must give an entry (or checkpoint) that round-trips, or a clean
:class:`~bastion.errors.InputError`, never another exception. ``verify_log`` must never
raise on any tampered log, must report a problem whenever the entries differ from
the signed original, and must classify each single kind of tampering as documented.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from bastion.audit import (
    AuditEntry,
    CheckpointSigner,
    SignedCheckpoint,
    load_audit_key,
    load_audit_public_key,
    read_checkpoints,
    read_entries,
    verify_log,
)
from bastion.errors import BastionError, InputError, KeyFormatError
from tests.unit.audit._log import SignedLog, build_log, make_entry, rechain, reseal

SIGNER = CheckpointSigner(ed25519.Ed25519PrivateKey.generate())
FIELDS = ["v", "seq", "time", "actor", "action", "resource", "outcome", "source"]
FIELDS += ["request_id", "details", "prev_hash", "hash"]
CHECKPOINT_FIELDS = ["v", "log_id", "size", "root", "last_hash", "time", "key_id", "signature"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.sampled_from(["0" * 64, "2026-01-31T12:00:00.000000Z", "version.push", "allowed"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@cache
def small_log(size: int, every: int) -> SignedLog:
    return build_log(size, every, SIGNER)


def _mutate_doc(doc: dict[str, Any], data: st.DataObject, fields: list[str]) -> dict[str, Any]:
    for _ in range(data.draw(st.integers(1, 3))):
        action = data.draw(st.sampled_from(["set", "delete", "add"]))
        key = data.draw(st.sampled_from(fields))
        if action == "set":
            doc[key] = data.draw(json_values)
        elif action == "delete":
            doc.pop(key, None)
        else:
            doc[data.draw(st.text(max_size=8))] = data.draw(json_values)
    return doc


def _flip_bytes(raw: bytes, data: st.DataObject) -> bytes:
    out = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        out[data.draw(st.integers(0, len(out) - 1))] = data.draw(st.integers(0, 255))
    return bytes(out)


def _entry_round_trips(line: str | bytes) -> None:
    try:
        entry = AuditEntry.from_json(line)
    except InputError:
        return
    assert AuditEntry.from_json(entry.to_json()) == entry


def _checkpoint_round_trips(line: str | bytes) -> None:
    try:
        signed = SignedCheckpoint.from_json(line)
    except InputError:
        return
    assert SignedCheckpoint.from_json(signed.to_json()) == signed


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
@example(b'{"seq":' + b"9" * 5000 + b"}")
@example("[" * 5000)
@example('{"details":' + '{"a":' * 3000 + "1" + "}" * 3001)
def test_entry_reader_on_arbitrary_input(data: bytes | str) -> None:
    _entry_round_trips(data)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.data())
def test_entry_reader_on_mutated_entries(seq: int, data: st.DataObject) -> None:
    line = make_entry(seq, "ab" * 32).to_json()
    if data.draw(st.booleans()):
        mutated: str | bytes = json.dumps(_mutate_doc(json.loads(line), data, FIELDS))
    else:
        mutated = _flip_bytes(line.encode(), data)
    _entry_round_trips(mutated)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=400), st.text(max_size=400)))
def test_checkpoint_reader_on_arbitrary_input(data: bytes | str) -> None:
    _checkpoint_round_trips(data)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(small_log(20, 4).checkpoints), st.data())
def test_checkpoint_reader_on_mutated_checkpoints(
    signed: SignedCheckpoint, data: st.DataObject
) -> None:
    line = signed.to_json()
    if data.draw(st.booleans()):
        mutated: str | bytes = json.dumps(_mutate_doc(json.loads(line), data, CHECKPOINT_FIELDS))
    else:
        mutated = _flip_bytes(line.encode(), data)
    try:
        parsed = SignedCheckpoint.from_json(mutated)
    except InputError:
        return
    # Whatever parses either is the original or fails verification: never both changed and valid.
    try:
        parsed.verify(SIGNER.public_key)
    except BastionError:
        return
    assert parsed == signed


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=120), max_size=8), st.data())
def test_export_readers_on_arbitrary_streams(chunks: list[bytes], data: st.DataObject) -> None:
    genuine = [make_entry(i + 1, "ab" * 32).to_json().encode() for i in range(2)]
    lines = chunks + (genuine if data.draw(st.booleans()) else [])
    raw = b"\n".join(data.draw(st.permutations(lines))) if lines else b""
    with contextlib.suppress(InputError):
        list(read_entries(io.BytesIO(raw)))
    with contextlib.suppress(InputError):
        read_checkpoints(io.BytesIO(raw))


def test_export_readers_bound_each_line() -> None:
    endless = io.BytesIO(b"{" + b" " * (1 << 22))
    with pytest.raises(InputError, match="line 1 of the audit log export is longer than"):
        list(read_entries(endless))
    assert endless.tell() < 64 * 1024  # stopped reading just past the limit


@pytest.mark.parametrize(
    ("tail", "message"),
    [
        (b"\n\n", "line 2 of the audit log export is empty"),
        (b"\n{}\n", "line 2 of the audit log export: the audit entry lacks"),
    ],
)
def test_export_readers_name_the_bad_line(tail: bytes, message: str) -> None:
    good = make_entry(1, "0" * 64).to_json().encode()
    with pytest.raises(InputError, match=message):
        list(read_entries(io.BytesIO(good + tail + good)))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
@example(b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n")
def test_public_key_reader_on_arbitrary_input(data: bytes) -> None:
    with contextlib.suppress(KeyFormatError):
        load_audit_public_key(data)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400), st.booleans())
@example(
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", True
)
def test_private_key_reader_on_arbitrary_files(data: bytes, passphrase: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.key"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        with contextlib.suppress(InputError):
            load_audit_key(path, passphrase=b"pw" if passphrase else None)


# --- verify_log against random tampering ----------------------------------------

logs = st.builds(small_log, st.integers(2, 40), st.integers(1, 12))


def _tamper(entries: list[AuditEntry], data: st.DataObject) -> list[AuditEntry]:
    out = list(entries)
    for _ in range(data.draw(st.integers(1, 3))):
        if not out:
            break
        i = data.draw(st.integers(0, len(out) - 1))
        op = data.draw(
            st.sampled_from(
                ["delete", "duplicate", "swap", "modify", "modify+reseal", "rechain", "forge"]
            )
        )
        if op == "delete":
            del out[i]
        elif op == "duplicate":
            out.insert(data.draw(st.integers(0, len(out) - 1)), out[i])
        elif op == "swap":
            j = data.draw(st.integers(0, len(out) - 1))
            out[i], out[j] = out[j], out[i]
        elif op in ("modify", "modify+reseal"):
            changed = replace(out[i], actor="mallory", details={"n": data.draw(st.integers(0, 9))})
            out[i] = reseal(changed) if op == "modify+reseal" else changed
        elif op == "rechain":
            out = rechain(out, i)
        else:  # a forged entry, chained to the one before, anywhere but the very end
            prev = out[i - 1].hash if i else "0" * 64
            out.insert(i, make_entry(data.draw(st.integers(1, 60)), prev, actor="mallory"))
    return out


@settings(max_examples=300, deadline=None)
@given(logs, st.data())
def test_any_tampering_is_reported_and_never_crashes(log: SignedLog, data: st.DataObject) -> None:
    tampered = _tamper(log.entries, data)
    report = verify_log(tampered, log.checkpoints, log.public_key)
    # The last checkpoint covers every entry, so any difference at all must show.
    assert report.ok == (tampered == log.entries), [p.to_dict() for p in report.problems]
    json.dumps(report.to_dict())


@settings(max_examples=150, deadline=None)
@given(logs, st.data())
def test_a_single_tampering_is_classified(log: SignedLog, data: st.DataObject) -> None:
    entries = list(log.entries)
    n = len(entries)
    i = data.draw(st.integers(0, n - 1))
    op = data.draw(st.sampled_from(["delete", "modify", "modify+reseal", "insert", "swap"]))
    if op == "delete":
        del entries[i]
        expected = {"deleted"}
    elif op == "modify":
        entries[i] = replace(entries[i], actor="mallory")
        expected = {"modified"}
    elif op == "modify+reseal":
        entries[i] = reseal(replace(entries[i], actor="mallory"))
        expected = {"modified"}
    elif op == "insert":
        prev = entries[i - 1].hash if i else "0" * 64
        entries.insert(i, make_entry(i + 1, prev, actor="mallory"))
        expected = {"inserted"}
    else:
        i = min(i, n - 2)
        entries[i], entries[i + 1] = entries[i + 1], entries[i]
        expected = {"reordered"}
    report = verify_log(entries, log.checkpoints, log.public_key)
    assert {p.kind for p in report.problems} == expected, [p.to_dict() for p in report.problems]
    assert len(report.problems) == 1
