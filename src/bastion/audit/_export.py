"""The export format: JSON lines, one entry (or one signed checkpoint) per line.

Readers take a binary stream and read it line by line with a bound on each line, so
an export of any length is read in constant memory and a line without an end cannot
exhaust it. A bad line is an :class:`~bastion.errors.InputError` naming its number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import IO, TypeVar

from bastion.audit._checkpoint import MAX_CHECKPOINT_BYTES, SignedCheckpoint
from bastion.audit._entry import MAX_ENTRY_BYTES, AuditEntry
from bastion.errors import InputError

__all__ = ["read_checkpoints", "read_entries", "write_lines"]

MAX_CHECKPOINTS = 1_000_000
_T = TypeVar("_T")


def _read(stream: IO[bytes], parse: Callable[[bytes], _T], what: str, limit: int) -> Iterator[_T]:
    number = 0
    while line := stream.readline(limit + 2):
        number += 1
        if len(line) > limit + 1 or (len(line) == limit + 1 and not line.endswith(b"\n")):
            raise InputError(f"line {number} of the {what} is longer than {limit} bytes")
        if line.strip() == b"":
            raise InputError(f"line {number} of the {what} is empty; exports have none")
        try:
            yield parse(line)
        except InputError as exc:
            raise InputError(f"line {number} of the {what}: {exc.message}") from exc


def read_entries(stream: IO[bytes]) -> Iterator[AuditEntry]:
    """Audit entries from an export, lazily: feed the iterator to ``verify_log``."""
    return _read(stream, AuditEntry.from_json, "audit log export", MAX_ENTRY_BYTES)


def read_checkpoints(stream: IO[bytes]) -> list[SignedCheckpoint]:
    """Every signed checkpoint of an export (at most a million)."""
    out: list[SignedCheckpoint] = []
    for checkpoint in _read(
        stream, SignedCheckpoint.from_json, "checkpoint export", MAX_CHECKPOINT_BYTES
    ):
        if len(out) >= MAX_CHECKPOINTS:
            raise InputError(f"the checkpoint export holds more than {MAX_CHECKPOINTS} lines")
        out.append(checkpoint)
    return out


def write_lines(items: Iterable[AuditEntry | SignedCheckpoint], stream: IO[bytes]) -> int:
    """Write entries or checkpoints as JSON lines; returns how many were written."""
    count = 0
    for item in items:
        stream.write(item.to_json().encode("utf-8") + b"\n")
        count += 1
    return count
