"""Inference records: one per call, written in batches to daily JSON-lines files.

:meth:`InferenceRecorder.record` only appends to a deque; a background thread encodes what is
pending and appends it to ``records-YYYY-MM-DD.jsonl`` (the UTC day of each record) with one
write per batch and one fsync per file per flush. Past ``max_pending`` the oldest pending
records are dropped and counted, so a slow disk never slows the gateway. Each line is a JSON
object with ``"type": "bastion.inference"`` and ``"format": 1``: what SIEM agents tail and
:func:`read_records` (the export command) streams.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bastion.errors import (
    BastionError,
    InternalError,
    StorageFullError,
    UsageError,
)

__all__ = ["MAX_LINE", "RECORD_FORMAT", "RECORD_TYPE", "InferenceRecord", "InferenceRecorder"]

logger = logging.getLogger(__name__)

RECORD_TYPE = "bastion.inference"
RECORD_FORMAT = 1
#: Values (or rows) shown per output in a summary, and characters kept of each BYTES value.
SUMMARY_VALUES = 8
SUMMARY_TEXT_LENGTH = 64
#: Float outputs up to this many elements are summarised in Python, quicker than numpy there.
SMALL_FLOAT_OUTPUT = 32
#: Outputs summarised per record; those of a model with more are left out.
SUMMARY_OUTPUTS = 16
#: Longest line :func:`read_records` accepts, in bytes.
MAX_LINE = 1 << 20
#: Seconds between two log messages about lost records.
WARNING_INTERVAL = 60.0
_FILE_NAME = re.compile(r"records-(\d{4})-(\d{2})-(\d{2})\.jsonl\Z")
_DAY = 86_400


@dataclass(frozen=True, slots=True)
class InferenceRecord:
    """What happened to one inference call; built by the gateway, never by the caller."""

    time: float  # unix seconds
    request_id: str
    principal: str  # the caller's actor string, e.g. "key:ab12" or "user:alice"
    deployment: str
    version: str  # the version that answered; "" when refused before routing
    input_digest: str  # "sha256:<hex>" of the request body
    status: int  # the HTTP status sent
    outcome: str  # "ok" or the error code
    latency_ms: float
    output: Mapping[str, object] | None  # summarise_outputs(...), None on errors
    arm: str = "stable"  # stable, candidate or shadow


# -- output summaries ----------------------------------------------------------------------------


def _file_name(day: int) -> str:
    return datetime.fromtimestamp(day * _DAY, UTC).strftime("records-%Y-%m-%d.jsonl")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


#: Built once: ``json.dumps`` with options builds a new encoder for every call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False, default=_json_default)


def _encode(record: InferenceRecord) -> bytes:
    when = datetime.fromtimestamp(record.time, UTC).isoformat(timespec="microseconds")
    line = {
        "type": RECORD_TYPE,
        "format": RECORD_FORMAT,
        "time": when.replace("+00:00", "Z"),
        "ts": record.time,
        "request_id": record.request_id,
        "principal": record.principal,
        "deployment": record.deployment,
        "version": record.version,
        "arm": record.arm,
        "input_digest": record.input_digest,
        "status": record.status,
        "outcome": record.outcome,
        "latency_ms": record.latency_ms,
        "output": record.output,
    }
    return _ENCODER.encode(line).encode("ascii") + b"\n"


def _storage_error(exc: OSError, directory: Path) -> BastionError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError(
            f"the inference records folder {directory} is full; free space on its disk"
        )
    return InternalError(
        f"cannot write inference records to {directory}: {exc.strerror or exc}; "
        "check that the folder exists and that the server may write to it"
    )


def _cut_torn_tail(fd: int, path: Path) -> None:
    """Truncate a last line left without its newline by a crash, so appends stay whole."""
    size = end = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    keep = 0
    while end > 0:
        start = max(0, end - 65_536)
        index = os.pread(fd, end - start, start).rfind(b"\n")
        if index >= 0:
            keep = start + index + 1
            break
        end = start
    os.ftruncate(fd, keep)
    logger.warning("%s ended in a record torn by a crash (%d bytes); cut it off", path, size - keep)


class InferenceRecorder:
    """Collects inference records on the caller's thread, writes them on its own."""

    def __init__(
        self,
        directory: Path,
        *,
        flush_seconds: float = 1.0,
        max_batch: int = 4096,
        max_pending: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not flush_seconds > 0 or max_batch < 1 or max_pending < 1:
            raise UsageError("flush_seconds, max_batch and max_pending must be positive")
        self._directory = Path(directory)
        self._flush_seconds = flush_seconds
        self._max_batch = max_batch
        self._max_pending = max_pending
        self._clock = clock
        self._pending: deque[InferenceRecord] = deque(maxlen=max_pending)
        self._wake = threading.Event()
        self._lock = threading.Lock()  # one flush at a time; guards the open files
        self._files: dict[int, int] = {}  # UTC day number -> open descriptor
        self._directory_ready = False
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._dropped = 0  # over max_pending; only record() counts it
        self._lost = self._written = self._batches = 0  # counted by the flushing thread
        self._next_warning = -math.inf

    @property
    def directory(self) -> Path:
        """The folder the daily records files go to (what :func:`read_records` reads)."""
        return self._directory

    @property
    def dropped(self) -> int:
        """Records lost: dropped over ``max_pending``, or in a write that failed."""
        return self._dropped + self._lost

    @property
    def written(self) -> int:
        """Records written to disk."""
        return self._written

    @property
    def batches(self) -> int:
        """Writes made: one per batch of records of one day."""
        return self._batches

    def start(self) -> None:
        """Create the folder (mode 0700) and start the thread that flushes in the background."""
        if self._thread is not None or self._stopping:
            raise UsageError("this recorder was already started; make a new one")
        with self._lock:
            try:
                self._ensure_directory()
            except OSError as exc:
                raise _storage_error(exc, self._directory) from exc
        self._thread = threading.Thread(
            target=self._run, name="bastion-inference-records", daemon=True
        )
        self._thread.start()

    def record(self, record: InferenceRecord) -> None:
        """Queue ``record``; never blocks and does no I/O (the oldest go past max_pending)."""
        pending = self._pending
        if len(pending) >= self._max_pending:
            self._dropped += 1
            now = self._clock()
            if now >= self._next_warning:
                self._next_warning = now + WARNING_INTERVAL
                logger.warning(
                    "%d inference records dropped so far: more arrive than %s can take; "
                    "check that disk",
                    self.dropped,
                    self._directory,
                )
        pending.append(record)
        if len(pending) >= self._max_batch and not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        """Write what is pending now. StorageFullError or InternalError if the disk fails."""
        with self._lock:
            self._flush(len(self._pending))

    def close(self) -> None:
        """Stop the background thread, write what is pending and close the files."""
        self._stopping = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._wake.set()
            thread.join()
        with self._lock:
            try:
                self._flush(len(self._pending))
            finally:
                for fd in self._files.values():
                    os.close(fd)
                self._files.clear()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except BastionError as exc:
                now = self._clock()
                if now >= self._next_warning:
                    self._next_warning = now + WARNING_INTERVAL
                    logger.error("inference records lost: %s", exc.message)
            except Exception:  # keep recording whatever one flush hit
                logger.exception("inference records lost to an unexpected error")

    def _flush(self, count: int) -> None:
        touched: set[int] = set()
        while count > 0:
            size = min(count, self._max_batch)
            batch = [self._pending.popleft() for _ in range(size)]
            count -= size
            lines: dict[int, list[bytes]] = {}
            for record in batch:
                try:
                    line = _encode(record)
                    day = int(record.time // _DAY)
                except (ValueError, TypeError, OverflowError, OSError) as exc:
                    self._lost += 1
                    logger.error(
                        "inference record %s cannot be written: %s", record.request_id, exc
                    )
                    continue
                lines.setdefault(day, []).append(line)
            unwritten = sum(len(day_lines) for day_lines in lines.values())
            for day, day_lines in lines.items():
                try:
                    self._write(day, b"".join(day_lines))
                except OSError as exc:
                    self._lost += unwritten  # a partial write is cut off when reopened
                    self._forget(day)
                    raise _storage_error(exc, self._directory) from exc
                unwritten -= len(day_lines)
                self._written += len(day_lines)
                self._batches += 1
                touched.add(day)
        try:
            for day in touched:
                os.fsync(self._files[day])
        except OSError as exc:
            raise _storage_error(exc, self._directory) from exc
        newest = max(self._files, default=None)
        for day in [day for day in self._files if day != newest]:
            self._forget(day)  # keep only the newest day's file open

    def _write(self, day: int, data: bytes) -> None:
        fd = self._files.get(day)
        if fd is not None and os.fstat(fd).st_nlink == 0:  # removed under us: start afresh
            self._forget(day)
            fd = None
        if fd is None:
            self._ensure_directory()
            path = self._directory / _file_name(day)
            flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            fd = os.open(path, flags, 0o600)
            self._files[day] = fd
            _cut_torn_tail(fd, path)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    def _forget(self, day: int) -> None:
        fd = self._files.pop(day, None)
        if fd is not None:
            os.close(fd)

    def _ensure_directory(self) -> None:
        """Create the folder, mode 0700 whatever the umask; OSError if that fails."""
        if self._directory_ready:
            return
        try:
            self._directory.mkdir(mode=0o700, parents=True)
            os.chmod(self._directory, 0o700)
        except FileExistsError:
            if not self._directory.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, "not a folder") from None
        self._directory_ready = True


# -- reading -------------------------------------------------------------------------------------
