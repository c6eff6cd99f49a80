"""Inference records: one per call, written in batches to daily JSON-lines files.

:meth:`InferenceRecorder.record` only appends to a deque; a background thread encodes what is
pending and appends it to ``records-YYYY-MM-DD.jsonl`` (the UTC day of each record) with one
write per batch and one fsync per file per flush. Past ``max_pending`` the oldest pending
records are dropped and counted, so a slow disk never slows the gateway. Each line is a JSON
object with ``"type": "bastion.inference"`` and ``"format": 1``: what SIEM agents tail and
:func:`read_records` (the export command) streams.
"""

from __future__ import annotations

import calendar
import errno
import json
import logging
import math
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bastion.errors import (
    BastionError,
    InputError,
    InternalError,
    PathNotFoundError,
    StorageFullError,
    UsageError,
)

__all__ = ["InferenceRecord", "InferenceRecorder", "read_records", "summarise_outputs"]

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


def summarise_outputs(outputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, object]:
    """A small, bounded description of each output: datatype, shape and a few values.

    Integer, bool and BYTES outputs show their first values (BYTES decoded as UTF-8 with
    replacement and cut short); float outputs show min and max and the argmax of each of the
    first rows (the first values when they have no second dimension). Never the full tensor.
    """
    summary: dict[str, object] = {}
    for name, value in list(outputs.items())[:SUMMARY_OUTPUTS]:
        summary[name] = _summarise(np.asarray(value))
    return summary


def _datatype(dtype: np.dtype[Any]) -> str:
    kind, bits = dtype.kind, dtype.itemsize * 8
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{bits}"
    if kind == "f":
        return f"FP{bits}"
    return {"b": "BOOL", "O": "BYTES", "S": "BYTES", "U": "BYTES"}.get(kind, str(dtype))


def _summarise(array: np.ndarray[Any, Any]) -> dict[str, object]:
    kind = array.dtype.kind
    entry: dict[str, object] = {"datatype": _datatype(array.dtype), "shape": list(array.shape)}
    if kind == "f":
        if array.size:
            _summarise_floats(array, entry)
    elif kind in "biu":
        entry["values"] = array.flat[:SUMMARY_VALUES].tolist()
    elif kind in "OSU":
        entry["values"] = [_text(value) for value in array.flat[:SUMMARY_VALUES].tolist()]
    return entry


def _summarise_floats(array: np.ndarray[Any, Any], entry: dict[str, object]) -> None:
    """Min, max and per-row argmax (or first values); in Python when that is quicker."""
    rows = array.shape[0] if array.ndim >= 2 else 0
    argmax: list[int] = []
    if array.size <= SMALL_FLOAT_OUTPUT:  # numpy's per-call overhead dominates here
        flat: list[float] = array.ravel().tolist()
        total = sum(flat)
        nan = total != total and any(value != value for value in flat)
        low, high = (math.nan, math.nan) if nan else (min(flat), max(flat))
        width = len(flat) // rows if rows else 0
        for row in range(min(rows, SUMMARY_VALUES)):
            argmax.append(_first_max(flat[row * width : (row + 1) * width], nan))
    else:
        low, high = array.min(), array.max()
        if rows:
            first = array[:SUMMARY_VALUES]
            argmax = first.reshape(len(first), -1).argmax(axis=1).tolist()
    entry["min"], entry["max"] = _number(low), _number(high)
    if rows:
        entry["argmax"] = argmax
    else:
        entry["values"] = [_number(value) for value in array.flat[:SUMMARY_VALUES].tolist()]


def _first_max(row: list[float], nan: bool) -> int:
    """The index numpy's argmax gives: the first NaN, else the first largest value."""
    if nan:
        for index, value in enumerate(row):
            if value != value:
                return index
    return row.index(max(row))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value[: SUMMARY_TEXT_LENGTH * 4].decode("utf-8", errors="replace")
    return str(value)[:SUMMARY_TEXT_LENGTH]


def _number(value: object) -> float | str:
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else str(number)  # "nan", "inf": strict JSON


# -- writing -------------------------------------------------------------------------------------


def _file_name(day: int) -> str:
    return datetime.fromtimestamp(day * _DAY, UTC).strftime("records-%Y-%m-%d.jsonl")


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return dict(value)
    return str(value)


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
    text = json.dumps(line, separators=(",", ":"), allow_nan=False, default=_json_default)
    return text.encode("ascii") + b"\n"


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


def read_records(
    directory: Path,
    *,
    since: float | None = None,
    until: float | None = None,
    deployment: str | None = None,
) -> Iterator[dict[str, object]]:
    """The records in ``directory``, oldest day first, with ``since <= ts < until``.

    A torn last line (a write cut short) is skipped with a warning; any other line that is
    not a format-1 inference record raises InputError naming the file and line.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise PathNotFoundError(
            f"no inference records folder at {directory}; give the server's records folder"
        )
    try:
        names = sorted(entry.name for entry in os.scandir(directory))
    except OSError as exc:
        raise InputError(f"cannot list {directory}: {exc.strerror or exc}") from exc
    paths = []
    for name in names:
        match = _FILE_NAME.match(name)
        if match is None:
            continue
        try:
            start = calendar.timegm((*map(int, match.groups()), 0, 0, 0))
        except ValueError:  # a name like records-2024-13-45.jsonl is not ours
            continue
        if (since is None or start + _DAY > since) and (until is None or start < until):
            paths.append(directory / name)
    return _iterate(paths, since, until, deployment)


def _iterate(
    paths: list[Path], since: float | None, until: float | None, deployment: str | None
) -> Iterator[dict[str, object]]:
    for path in paths:
        for ts, item in _read_file(path):
            in_range = (since is None or ts >= since) and (until is None or ts < until)
            if in_range and (deployment is None or item.get("deployment") == deployment):
                yield item


def _read_file(path: Path) -> Iterator[tuple[float, dict[str, object]]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    with handle:
        number = 0
        while raw := _read_line(handle, path):
            number += 1
            where = f"{path} line {number}"
            complete = raw.endswith(b"\n")
            if not complete and len(raw) > MAX_LINE:
                raise InputError(f"{where} is over {MAX_LINE} bytes; not an inference record")
            try:
                item = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                if not complete:
                    logger.warning("%s: skipped a torn last line (a write cut short)", where)
                    return
                raise InputError(f"{where} is not JSON; remove or repair that line") from exc
            yield _check_record(item, where)


def _read_line(handle: BinaryIO, path: Path) -> bytes:
    try:
        line: bytes = handle.readline(MAX_LINE + 1)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return line


def _check_record(item: object, where: str) -> tuple[float, dict[str, object]]:
    if not isinstance(item, dict) or item.get("type") != RECORD_TYPE:
        raise InputError(f"{where} is not a JSON object of type {RECORD_TYPE!r}")
    if type(item.get("format")) is not int or item["format"] != RECORD_FORMAT:
        raise InputError(
            f"{where} has record format {item.get('format')!r}; this Bastion reads format "
            f"{RECORD_FORMAT}: use the Bastion version that wrote it"
        )
    ts = item.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, float | int) or not math.isfinite(ts):
        raise InputError(f"{where} has no valid 'ts' (unix seconds)")
    return ts, item
