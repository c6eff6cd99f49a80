"""AuditEntry: sealing, the canonical encoding and hash, and strict reading of one line."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from bastion.audit import GENESIS_HASH, AuditEntry
from bastion.audit._entry import MAX_DETAILS_BYTES, MAX_ENTRY_BYTES
from bastion.errors import InputError, UsageError
from tests.unit.audit._log import make_entry

WHEN = datetime(2026, 1, 31, 12, 0, 0, 123456, tzinfo=UTC)
# The exact bytes the first entry below hashes, written out by hand: keys sorted, no
# whitespace, non-ASCII as UTF-8, the format version "v", and no "hash".
GOLDEN_BODY = (
    '{"action":"version.push","actor":"key-7f3a","details":{"files":["a",null],'
    '"note":"naïve \\"q\\"\\n","signed":true,"size":1024},"outcome":"allowed",'
    '"prev_hash":"' + "0" * 64 + '","request_id":"req-1","resource":"med/xray@1.2.0",'
    '"seq":1,"source":"10.0.0.5","time":"2026-01-31T12:00:00.123456Z","v":1}'
)
GOLDEN_HASH = "5bda134ca61bfa102977e3d08a02e62d09b5b6bf934380159392a3c61b317bc0"


def golden(**changes: Any) -> AuditEntry:
    fields: dict[str, Any] = {
        "prev_hash": GENESIS_HASH,
        "seq": 1,
        "time": WHEN,
        "actor": "key-7f3a",
        "action": "version.push",
        "resource": "med/xray@1.2.0",
        "outcome": "allowed",
        "source": "10.0.0.5",
        "request_id": "req-1",
        "details": {"size": 1024, "signed": True, "note": 'naïve "q"\n', "files": ["a", None]},
    }
    fields.update(changes)
    return AuditEntry.seal(**fields)


def test_the_hash_is_sha256_of_prefix_and_canonical_body() -> None:
    entry = golden()
    expected = hashlib.sha256(b"bastion-audit-entry/v1\n" + GOLDEN_BODY.encode()).hexdigest()
    assert entry.hash == expected == GOLDEN_HASH
    assert entry.hash_matches()
    assert entry.to_json() == GOLDEN_BODY.replace(
        ',"outcome"', f',"hash":"{GOLDEN_HASH}","outcome"'
    )


def test_to_json_is_one_canonical_line() -> None:
    line = golden().to_json()
    assert "\n" not in line
    assert ": " not in line
    assert ", " not in line
    keys = list(json.loads(line))
    assert keys == sorted(keys)
    assert keys == [
        "action",
        "actor",
        "details",
        "hash",
        "outcome",
        "prev_hash",
        "request_id",
        "resource",
        "seq",
        "source",
        "time",
        "v",
    ]


def test_round_trip_through_json() -> None:
    entry = golden()
    again = AuditEntry.from_json(entry.to_json())
    assert again == entry
    assert AuditEntry.from_json(entry.to_json().encode() + b"\n") == entry
    assert hash(again) == hash(entry)


def test_every_field_is_covered_by_the_hash() -> None:
    entry = golden()
    changes: dict[str, Any] = {
        "seq": 2,
        "time": WHEN + timedelta(microseconds=1),
        "actor": "anonymous",
        "action": "version.pull",
        "resource": "med/xray@1.2.1",
        "outcome": "denied",
        "source": "10.0.0.6",
        "request_id": "req-2",
        "details": {"size": 1025},
        "prev_hash": "1" * 64,
    }
    for name, value in changes.items():
        changed = replace(entry, **{name: value})
        assert not changed.hash_matches(), name
        assert changed.compute_hash() != entry.hash, name


def test_seal_converts_time_to_utc_and_refuses_naive_time() -> None:
    plus_two = timezone(timedelta(hours=2))
    entry = golden(time=datetime(2026, 1, 31, 14, 0, 0, 123456, tzinfo=plus_two))
    assert entry.time == WHEN
    assert entry.time.utcoffset() == timedelta(0)
    assert entry.hash == GOLDEN_HASH
    with pytest.raises(UsageError, match="aware"):
        golden(time=datetime(2026, 1, 31, 12, 0))
    with pytest.raises(InputError, match="UTC"):
        replace(golden(), time=datetime(2026, 1, 31, 14, 0, tzinfo=plus_two))


def test_details_are_copied_and_tuples_become_lists() -> None:
    details: dict[str, Any] = {"files": ("a", "b"), "nested": {"n": 1}}
    entry = golden(details=details)
    details["nested"]["n"] = 2
    details["extra"] = True
    assert entry.details == {"files": ["a", "b"], "nested": {"n": 1}}
    assert entry.hash_matches()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seq": 0}, "seq must be between 1"),
        ({"seq": True}, "seq must be an integer"),
        ({"actor": ""}, "actor must not be empty"),
        ({"actor": "a" * 257}, "actor is too long"),
        ({"actor": "bob\nINFO forged line"}, "control"),
        ({"resource": "med/x\u202eyarx"}, "bidirectional"),
        ({"action": "Version.Push"}, "dotted lower-case"),
        ({"action": "version..push"}, "dotted lower-case"),
        ({"outcome": "maybe"}, "outcome must be one of"),
        ({"prev_hash": "A" * 64}, "lower-case hexadecimal"),
        ({"prev_hash": "0" * 63}, "lower-case hexadecimal"),
        ({"details": [1, 2]}, "must be a JSON object"),
        ({"details": {"ratio": 0.5}}, "not float"),
        ({"details": {"n": 2**53}}, "2\\*\\*53-1"),
        ({"details": {"bad key": 1}}, "not a name"),
        ({"details": {"k": "\ud800"}}, "not valid Unicode"),
        ({"details": {"k": {1, 2}}}, "not set"),
        ({"details": {"blob": "x" * MAX_DETAILS_BYTES}}, "exceed"),
    ],
)
def test_seal_refuses_bad_fields(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        golden(**changes)


def test_details_nesting_is_bounded() -> None:
    deep: dict[str, Any] = {"k": 1}
    for _ in range(8):
        deep = {"k": deep}
    with pytest.raises(InputError, match="nest deeper"):
        golden(details=deep)
    golden(details=deep["k"])  # one level less is fine


def test_a_huge_details_value_is_refused_without_walking_all_of_it() -> None:
    with pytest.raises(InputError, match="exceed"):
        golden(details={"many": [0] * 10_000_000})


@pytest.mark.parametrize(
    "key", ["password", "api_key", "access_token", "Authorization", "db.secret", "credentials"]
)
def test_seal_refuses_details_that_name_secrets(key: str) -> None:
    with pytest.raises(UsageError, match="never hold secrets"):
        golden(details={"outer": [{key: "hunter2"}]})


def test_names_that_merely_mention_keys_are_allowed() -> None:
    entry = golden(details={"api_key_id": "k1", "token_count": 3, "key_id": "sha256:ab"})
    assert entry.details["api_key_id"] == "k1"


def test_the_largest_possible_entry_fits_in_one_line() -> None:
    wide = "\U0001f600"  # four bytes of UTF-8 each
    details = {"d": "\U0001f600" * ((MAX_DETAILS_BYTES - 10) // 4)}
    entry = golden(
        actor=wide * 256,
        resource=wide * 512,
        source=wide * 256,
        request_id=wide * 128,
        action="a" * 64,
        seq=2**53 - 1,
        details=details,
    )
    assert len(entry.to_json().encode()) <= MAX_ENTRY_BYTES
    assert AuditEntry.from_json(entry.to_json()) == entry


def _line(**changes: Any) -> str:
    doc = json.loads(golden().to_json())
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    return json.dumps(doc)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (_line(extra=1), "unknown field"),
        (_line(hash=...), "lacks the field"),
        (_line(v=2), "version 2 is not supported"),
        (_line(seq="1"), "seq must be an integer"),
        (_line(seq=1.0), "not an integer"),
        (_line(hash="5BDA" + GOLDEN_HASH[4:]), "lower-case hexadecimal"),
        (_line(time="2026-01-31T12:00:00Z"), "RFC 3339"),
        (_line(time="2026-01-31T12:00:00.123456+00:00"), "RFC 3339"),
        (_line(time="2026-02-30T12:00:00.000000Z"), "not a real date"),
        (_line(details=None), "must be a JSON object"),
        (_line(outcome=["allowed"]), "outcome must be one of"),
        ('{"seq":1,"seq":2}', "appears twice"),
        ('{"seq":NaN}', "not valid JSON"),
        ("[1,2]", "not a JSON object"),
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
        ("\ufeff" + _line(), "not valid JSON"),
        (_line(actor="\ud800"), "surrogate"),
    ],
)
def test_from_json_refuses_malformed_lines(line: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        AuditEntry.from_json(line)


def test_from_json_refuses_invalid_utf8_and_oversize_lines() -> None:
    with pytest.raises(InputError, match="UTF-8"):
        AuditEntry.from_json(b'{"actor":"\xff"}')
    with pytest.raises(InputError, match="too long"):
        AuditEntry.from_json(b"{" + b" " * MAX_ENTRY_BYTES + b"}")
    with pytest.raises(InputError, match="too long"):
        AuditEntry.from_json("{" + " " * (MAX_ENTRY_BYTES * 2) + "}")
    with pytest.raises(InputError, match="lone surrogate"):
        AuditEntry.from_json('{"a":"\ud800"}')


def test_from_json_reads_but_does_not_judge_the_hash() -> None:
    tampered = replace(make_entry(5, GENESIS_HASH), actor="mallory")
    again = AuditEntry.from_json(tampered.to_json())
    assert again == tampered
    assert not again.hash_matches()
