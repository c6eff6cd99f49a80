"""One audit log entry: its fields, its canonical encoding, and the hash that chains it.

``hash = SHA-256(ENTRY_DOMAIN || canonical_json(entry without "hash"))``, where the
document carries ``"v": 1`` (the format version) and ``prev_hash``, the hash of the
entry before it (:data:`GENESIS_HASH`, 64 zeros, for the first). Changing any field
of an entry therefore changes its hash, and the next entry no longer chains to it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal, cast, get_args

from bastion.audit._encoding import (
    MAX_SAFE_INTEGER,
    JsonValue,
    canonical_json,
    check_fields,
    check_hex_digest,
    check_int,
    check_text,
    check_utc,
    format_time,
    load_json_object,
    parse_time,
)
from bastion.errors import InputError, UsageError

__all__ = [
    "ENTRY_DOMAIN",
    "ENTRY_FORMAT",
    "GENESIS_HASH",
    "MAX_DETAILS_BYTES",
    "MAX_ENTRY_BYTES",
    "OUTCOMES",
    "AuditEntry",
    "Outcome",
]

Outcome = Literal["allowed", "denied", "failed"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
ENTRY_FORMAT = 1
ENTRY_DOMAIN = b"bastion-audit-entry/v1\n"
GENESIS_HASH = "0" * 64
MAX_SEQ = MAX_SAFE_INTEGER  # every number is exact in any JSON reader
MAX_ENTRY_BYTES = 16 * 1024
MAX_DETAILS_BYTES = 8 * 1024
MAX_DETAILS_DEPTH = 8
_FIELDS = frozenset(
    {"v", "seq", "time", "actor", "action", "resource", "outcome", "source", "request_id"}
    | {"details", "prev_hash", "hash"}
)
_ACTION = re.compile(r"[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*")
_DETAIL_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_SECRET_KEY = re.compile(
    r"(.*[_.:-])?(password|passphrase|passwd|secret|token|authorization|cookie"
    r"|private_key|api_key|credentials?)",
    re.IGNORECASE,
)
_SURROGATE = re.compile("[\ud800-\udfff]")


def _copy_details(value: object) -> dict[str, JsonValue]:
    """A private deep copy of ``details``, checked for type, depth and size on the way."""
    if not isinstance(value, Mapping):
        raise InputError(f"the audit entry's details must be a JSON object, not {_kind(value)}")
    budget = [MAX_DETAILS_BYTES]  # each value costs at least one byte of canonical JSON
    copy = _copy_value(value, 1, budget)
    if len(canonical_json(cast(dict[str, Any], copy))) > MAX_DETAILS_BYTES:
        raise InputError(f"the audit entry's details exceed {MAX_DETAILS_BYTES} bytes as JSON")
    return cast(dict[str, JsonValue], copy)


def _kind(value: object) -> str:
    return type(value).__name__


def _copy_value(value: object, depth: int, budget: list[int]) -> JsonValue:
    budget[0] -= 1 + (len(value) if isinstance(value, str) else 0)
    if budget[0] < 0:
        raise InputError(f"the audit entry's details exceed {MAX_DETAILS_BYTES} bytes as JSON")
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise InputError("integers in audit details must be at most 2**53-1 in magnitude")
        return int(value)
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise InputError("a string in the audit entry's details is not valid Unicode")
        return str(value)
    if depth > MAX_DETAILS_DEPTH:
        raise InputError(f"the audit entry's details nest deeper than {MAX_DETAILS_DEPTH} levels")
    if isinstance(value, list | tuple):
        return [_copy_value(item, depth + 1, budget) for item in value]
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str) or not _DETAIL_KEY.fullmatch(key):
                raise InputError(
                    f"audit detail key {key!r} is not a name of 1 to 64 letters, digits or _.:-"
                )
            out[key] = _copy_value(item, depth + 1, budget)
        return out
    raise InputError(
        f"audit details hold only strings, integers, booleans, null, lists and objects, "
        f"not {_kind(value)}"
    )


def _refuse_secrets(value: object, path: str = "details") -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if isinstance(key, str) and _SECRET_KEY.fullmatch(key):
                raise UsageError(
                    f"audit {path} key {key!r} names a secret; audit entries never hold secrets: "
                    "leave it out, or record an identifier instead"
                )
            _refuse_secrets(item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            _refuse_secrets(item, path)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One recorded request or pull. Build new entries with :meth:`seal`."""

    seq: int
    time: datetime
    actor: str
    action: str
    resource: str
    outcome: Outcome
    source: str
    request_id: str
    details: Mapping[str, JsonValue]
    prev_hash: str
    hash: str

    def __post_init__(self) -> None:
        check_int(self.seq, "the audit entry's seq", low=1, high=MAX_SEQ)
        check_utc(self.time, "the audit entry's time")
        check_text(self.actor, "the audit entry's actor", limit=256, empty=False)
        check_text(self.action, "the audit entry's action", limit=64, empty=False)
        if not _ACTION.fullmatch(self.action):
            raise InputError(
                f"audit action {self.action!r} must be dotted lower-case words, e.g. version.push"
            )
        check_text(self.resource, "the audit entry's resource", limit=512)
        if self.outcome not in OUTCOMES:
            raise InputError(f"the audit entry's outcome must be one of {', '.join(OUTCOMES)}")
        check_text(self.source, "the audit entry's source", limit=256)
        check_text(self.request_id, "the audit entry's request_id", limit=128)
        check_hex_digest(self.prev_hash, "the audit entry's prev_hash")
        check_hex_digest(self.hash, "the audit entry's hash")
        object.__setattr__(self, "details", _copy_details(self.details))

    def __hash__(self) -> int:
        return hash((self.seq, self.hash))

    @classmethod
    def seal(
        cls,
        *,
        prev_hash: str,
        seq: int,
        time: datetime,
        actor: str,
        action: str,
        resource: str,
        outcome: Outcome,
        source: str,
        request_id: str,
        details: Mapping[str, JsonValue] | None = None,
    ) -> AuditEntry:
        """A new entry chained to ``prev_hash`` (:data:`GENESIS_HASH` for seq 1), hashed."""
        if not isinstance(time, datetime) or time.tzinfo is None:
            raise UsageError("an audit entry's time must be an aware datetime (UTC)")
        _refuse_secrets(details)
        draft = cls(
            seq=seq,
            time=time.astimezone(UTC),
            actor=actor,
            action=action,
            resource=resource,
            outcome=outcome,
            source=source,
            request_id=request_id,
            details={} if details is None else details,
            prev_hash=prev_hash,
            hash=GENESIS_HASH,
        )
        return replace(draft, hash=draft.compute_hash())

    def body(self) -> dict[str, Any]:
        """The hashed document: every field but ``hash``, with the format version."""
        return {
            "v": ENTRY_FORMAT,
            "seq": self.seq,
            "time": format_time(self.time),
            "actor": self.actor,
            "action": self.action,
            "resource": self.resource,
            "outcome": self.outcome,
            "source": self.source,
            "request_id": self.request_id,
            "details": self.details,
            "prev_hash": self.prev_hash,
        }

    def compute_hash(self) -> str:
        """The hash this entry's content should have."""
        return hashlib.sha256(ENTRY_DOMAIN + canonical_json(self.body())).hexdigest()

    def hash_matches(self) -> bool:
        """Whether the stored ``hash`` is the hash of the content (false: modified)."""
        return self.compute_hash() == self.hash

    def to_dict(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    def to_json(self) -> str:
        """One line of canonical JSON, no newline: the export format."""
        return canonical_json(self.to_dict()).decode("utf-8")

    @classmethod
    def from_json(cls, line: str | bytes) -> AuditEntry:
        """Read one exported line strictly; the hash is read, not checked (see verify_log)."""
        doc = load_json_object(line, "audit entry", limit=MAX_ENTRY_BYTES)
        check_fields(doc, _FIELDS, "audit entry")
        version = check_int(doc["v"], "the audit entry's format version", low=0, high=2**31)
        if version != ENTRY_FORMAT:
            raise InputError(
                f"audit entry format version {version} is not supported; "
                f"this Bastion reads version {ENTRY_FORMAT}"
            )
        return cls(
            seq=doc["seq"],
            time=parse_time(doc["time"], "the audit entry's time"),
            actor=doc["actor"],
            action=doc["action"],
            resource=doc["resource"],
            outcome=doc["outcome"],
            source=doc["source"],
            request_id=doc["request_id"],
            details=doc["details"],
            prev_hash=doc["prev_hash"],
            hash=doc["hash"],
        )
