"""7z archives, every member scanned by its content (needs the ``bastion[archives]`` extra).

py7zr parses the headers and decompresses, but never in this process: py7zr builds
a 7z's whole member list before any limit applies, so a small hostile header could
cost gigabytes. It runs in a short-lived child (``_sevenzip_child.py``, started with
``python -I`` and an empty environment) whose address space, data and CPU time are
capped (:class:`ChildLimits`); the parent waits at most ``idle_seconds`` for each of
its answers. The child lists the members (at most ``max_members``) and, one solid
block at a time as the parent asks, streams each member's bytes back through a pipe.
A child that runs out of memory, CPU or time is a ``scan.limit`` finding, one that
crashes or talks nonsense ``scan.incomplete``: never an exception, never a pass.

The parent keeps the judging: each member is spooled into an anonymous temporary
file, keyed by its index in the archive (a member's name is shown in findings, never
joined to a path), and scanned as soon as it is complete, so at most one member is
spooled at a time. Before anything is decompressed, each member's declared size is
checked against the file's unpack budget and each solid block's compression ratio
(bombs are ``scan.limit`` findings); the child stops at the budget it is given and
the parent enforces it again as the bytes arrive. A block that cannot be decompressed
leaves the others scanned. Encrypted archives and members, links, special members,
unsafe and duplicate names are reported as the zip and tar readers report them.
Without py7zr a 7z archive is ``scan.incomplete``, never a pass.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import BinaryIO, NamedTuple

from bastion.scanning._context import ScanContext, join_member
from bastion.scanning._names import check_member_name
from bastion.scanning._report import Severity

__all__ = ["ChildLimits", "Importer", "scan_sevenzip"]

#: Imports a module by name (``importlib.import_module``; tests pass one that fails).
Importer = Callable[[str], ModuleType]

_FORMAT = "7z"
_INSTALL = "install the archives extra: pip install 'bastion[archives]'"
_CHILD = Path(__file__).with_name("_sevenzip_child.py")
#: Largest frame the parent accepts from the child (data comes in 1 MiB frames).
_MAX_FRAME = 4 << 20
_KINDS = frozenset({"file", "dir", "link", "special"})


@dataclass(frozen=True, slots=True)
class ChildLimits:
    """What the py7zr child process may use."""

    memory: int = 512 << 20
    """Address space and data segment (``RLIMIT_AS``, ``RLIMIT_DATA``), in bytes."""
    cpu_seconds: int = 120
    """CPU time (``RLIMIT_CPU``)."""
    idle_seconds: float = 120.0
    """Longest wait for the child's next answer before it is killed."""


class _Member(NamedTuple):
    """What the child says about one member (validated by :func:`_member`)."""

    number: int
    name: str
    kind: str
    empty: bool
    block: int | None
    encrypted: bool
    uncompressed: int
    packed: int


class _ChildGone(Exception):
    """The child stopped answering; ``limit`` when a resource limit stopped it."""

    def __init__(self, reason: str, *, limit: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.limit = limit


def scan_sevenzip(
    ctx: ScanContext,
    stream: BinaryIO,
    member: str | None,
    depth: int,
    *,
    importer: Importer = importlib.import_module,
    child: ChildLimits | None = None,
) -> None:
    """Scan every member of the 7z archive ``stream`` by its content, one container deeper.

    ``child`` defaults to the archive-reader limits of the scan's :class:`Limits`.
    """
    if child is None:
        child = ChildLimits(
            ctx.limits.archive_reader_memory,
            ctx.limits.archive_reader_cpu_seconds,
            ctx.limits.archive_reader_idle_seconds,
        )
    try:
        importer("py7zr")
    except ImportError:
        _not_installed(ctx, member)
        return
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    with tempfile.TemporaryFile() as copy:
        shutil.copyfileobj(stream, copy, 1 << 20)
        copy.flush()
        copy.seek(0)
        try:
            channel = _Channel.start(copy.fileno(), child, ctx.limits.max_members)
        except OSError as exc:
            ctx.incomplete(
                f"7z archive cannot be scanned: the reader process did not start ({exc}); "
                "check that the Python interpreter can be run",
                format=_FORMAT,
                member=member,
            )
            return
        with channel:
            try:
                _Reader(ctx, channel, size, member, depth).run()
            except _ChildGone as gone:
                report = ctx.limit if gone.limit else ctx.incomplete
                report(
                    f"7z reader process {gone.reason}; the rest of the archive is not scanned",
                    format=_FORMAT,
                    member=member,
                )


def _not_installed(ctx: ScanContext, member: str | None) -> None:
    ctx.incomplete(
        f"7z archive cannot be scanned: py7zr is not installed ({_INSTALL})",
        format=_FORMAT,
        member=member,
    )


class _Channel:
    """The parent's end of the child: reads its frames, each within ``idle_seconds``."""

    def __init__(self, process: subprocess.Popen[bytes], limits: ChildLimits) -> None:
        self.process = process
        self.limits = limits
        assert process.stdout is not None
        assert process.stdin is not None
        self.out = process.stdout.fileno()
        self.commands = process.stdin
        self.timed_out = False
        self.killed = False

    @classmethod
    def start(cls, fd: int, limits: ChildLimits, max_members: int) -> _Channel:
        if not sys.executable:
            raise OSError("no Python interpreter path (sys.executable is empty)")
        args = [str(fd), str(limits.memory), str(limits.cpu_seconds), str(max_members)]
        process = subprocess.Popen(
            [sys.executable, "-I", str(_CHILD), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={},
            pass_fds=(fd,),
            close_fds=True,
        )
        return cls(process, limits)

    def __enter__(self) -> _Channel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()
        try:
            self.process.wait(timeout=0 if self.timed_out else 5)
        except subprocess.TimeoutExpired:
            self.killed = True
            self.process.kill()
            self.process.wait()

    def frame(self) -> tuple[bytes, bytes]:
        """The child's next frame: its type and payload."""
        head = self._read(5)
        length = int.from_bytes(head[1:], "big")
        if length > _MAX_FRAME:
            raise self.broken(f"sent a frame of {length} bytes")
        return head[:1], self._read(length)

    def send(self, command: object) -> None:
        try:
            self.commands.write(json.dumps(command).encode() + b"\n")
            self.commands.flush()
        except OSError as exc:
            raise self.gone() from exc

    def _read(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            ready, _, _ = select.select([self.out], [], [], self.limits.idle_seconds)
            if not ready:
                self.timed_out = True
                raise self.gone()
            chunk = os.read(self.out, size - len(data))
            if not chunk:
                raise self.gone()
            data += chunk
        return bytes(data)

    def broken(self, what: str) -> _ChildGone:
        self.stop()
        return _ChildGone(f"failed ({what})", limit=False)

    def gone(self) -> _ChildGone:
        """Why the child stopped: a resource limit, a time-out or a crash."""
        self.stop()
        code = self.process.returncode
        if self.timed_out:
            why = f"gave no answer for {self.limits.idle_seconds:g} seconds and was stopped"
            return _ChildGone(why, limit=True)
        if code == 3:
            why = f"ran out of its {self.limits.memory >> 20} MiB memory limit"
            return _ChildGone(why, limit=True)
        if code == -signal.SIGXCPU or (code == -signal.SIGKILL and not self.killed):
            why = f"ran out of its {self.limits.cpu_seconds} seconds CPU limit (exit {code})"
            return _ChildGone(why, limit=True)
        return _ChildGone(f"failed (exit status {code})", limit=False)


def _member(index: int, payload: bytes) -> _Member:
    """One validated member entry (the child reads hostile input: trust none of it)."""
    entry = json.loads(payload)
    if not (isinstance(entry, list) and len(entry) == 7):
        raise ValueError("member entry is not a 7-item list")
    name, kind, empty, block, encrypted, uncompressed, packed = entry
    if not (
        isinstance(name, str)
        and kind in _KINDS
        and isinstance(empty, bool)
        and (block is None or (type(block) is int and block >= 0))
        and isinstance(encrypted, bool)
        and type(uncompressed) is int
        and type(packed) is int
        and uncompressed >= 0
        and packed >= 0
    ):
        raise ValueError("member entry has wrong types")
    return _Member(index, name, str(kind), empty, block, encrypted, uncompressed, packed)


class _Reader:
    """Judges the child's member list, then has it extract one solid block at a time."""

    def __init__(
        self, ctx: ScanContext, channel: _Channel, size: int, parent: str | None, depth: int
    ) -> None:
        self.ctx = ctx
        self.channel = channel
        self.size = size
        self.parent = parent
        self.depth = depth
        self.stopped = False

    def shown(self, info: _Member) -> str:
        return join_member(self.parent, info.name)

    def run(self) -> None:
        try:
            files = self._listing()
        except (ValueError, KeyError, TypeError) as exc:
            raise self.channel.broken(f"sent an invalid member list: {exc}") from exc
        if files is None:
            return
        self.ctx.mark_scanned(_FORMAT, self.parent)
        self._duplicates(files)
        blocks: dict[int, list[_Member]] = {}
        for info in files:
            if self._check(info) and info.block is not None:
                blocks.setdefault(info.block, []).append(info)
        block_sizes = _block_sizes(files)
        for key, members in blocks.items():
            if self.stopped:
                break
            unpacked, packed = block_sizes[key]
            if unpacked > self.ctx.limits.max_ratio * max(1, min(packed, self.size)):
                for info in members:
                    self.ctx.limit(
                        f"7z member's solid block declares {unpacked} bytes from {packed} "
                        f"compressed (more than {self.ctx.limits.max_ratio} times; a bomb?); "
                        "not scanned",
                        format=_FORMAT,
                        member=self.shown(info),
                    )
                continue
            if sum(info.uncompressed for info in members) > self.ctx.unpack_budget():
                self._over_budget(members[0])
                break
            self._extract(members)

    def _listing(self) -> list[_Member] | None:
        """The members the child lists (``None`` when it could list none: reported)."""
        kind, payload = self.channel.frame()
        if kind == b"P":
            self.ctx.add(
                "7z.encrypted",
                Severity.MEDIUM,
                "archive's header is encrypted: its members cannot be listed or scanned",
                format=_FORMAT,
                member=self.parent,
            )
            return None
        if kind == b"X":
            why = json.loads(payload)["why"]
            self.ctx.incomplete(
                f"unreadable 7z archive ({str(why)[:300]}); not scanned",
                format=_FORMAT,
                member=self.parent,
            )
            return None
        if kind == b"N":
            _not_installed(self.ctx, self.parent)
            return None
        if kind != b"H":
            raise self.channel.gone()
        total = json.loads(payload)["total"]
        if type(total) is not int:
            raise ValueError("member count is not an integer")
        limit = self.ctx.limits.max_members
        files: list[_Member] = []
        while (frame := self.channel.frame())[0] != b"L":
            if frame[0] != b"M" or len(files) >= min(limit, total):
                raise ValueError("unexpected frame in the member list")
            files.append(_member(len(files), frame[1]))
        if total > limit:
            self.ctx.limit(
                f"7z has {total} members; only the first {limit} are scanned",
                format=_FORMAT,
                member=self.parent,
            )
        return files

    def _duplicates(self, files: Iterable[_Member]) -> None:
        for name, n in Counter(info.name for info in files).items():
            if n > 1:
                self.ctx.add(
                    "7z.duplicate-name",
                    Severity.MEDIUM,
                    f"{n} members are named {name!r}; extractors disagree on which one is kept "
                    "(every member was scanned)",
                    format=_FORMAT,
                    member=join_member(self.parent, name),
                )

    def _check(self, info: _Member) -> bool:
        """Report what the member's header says; whether its bytes should be scanned."""
        shown = self.shown(info)
        check_member_name(self.ctx, info.name, _FORMAT, shown, "7z")
        if info.kind == "link":
            self.ctx.add(
                "7z.symlink",
                Severity.HIGH,
                "member is a symbolic link or junction; extracting it can write or read outside "
                "the folder",
                format=_FORMAT,
                member=shown,
            )
            return False
        if info.kind == "special":
            self.ctx.add(
                "7z.special-member",
                Severity.MEDIUM,
                "member is a device, FIFO, socket or other special file",
                format=_FORMAT,
                member=shown,
            )
            return False
        if info.empty:
            if info.kind == "file":
                self.ctx.nested(io.BytesIO(), shown, self.depth + 1)
            return False
        if info.block is None:
            self.ctx.incomplete(
                "member has data but the archive holds no stream for it; not scanned",
                format=_FORMAT,
                member=shown,
            )
            return False
        if info.encrypted:
            self.ctx.add(
                "7z.encrypted",
                Severity.MEDIUM,
                "member is encrypted and cannot be scanned",
                format=_FORMAT,
                member=shown,
            )
            return False
        return True

    def _over_budget(self, info: _Member) -> None:
        self.stopped = True
        self.ctx.limit(
            f"the file unpacks to more than {self.ctx.limits.max_unpacked_bytes} bytes; this "
            "7z member and the ones after it are not scanned",
            format=_FORMAT,
            member=self.shown(info),
        )

    def _extract(self, members: list[_Member]) -> None:
        """Have the child decompress one solid block's ``members``, scanning each as it
        completes."""
        sink = _Sink(self, {info.number: info for info in members})
        try:
            self.channel.send([self.ctx.unpack_budget(), [info.number for info in members]])
            status = sink.receive()
        except _ChildGone as gone:
            sink.discard()
            self._lost(members, sink, gone)
            raise
        finally:
            sink.discard()
        if status is None:  # over the budget
            self._over_budget(members[0])
            return
        for info in members:
            if info.number not in sink.done:
                self.ctx.incomplete(
                    f"7z member could not be decompressed ({sink.error or 'no data'}); not scanned",
                    format=_FORMAT,
                    member=self.shown(info),
                )

    def _lost(self, members: list[_Member], sink: _Sink, gone: _ChildGone) -> None:
        self.stopped = True
        report = self.ctx.limit if gone.limit else self.ctx.incomplete
        for info in members:
            if info.number not in sink.done:
                report(
                    f"7z reader process {gone.reason}; member not scanned",
                    format=_FORMAT,
                    member=self.shown(info),
                )


class _Spool:
    """One member's bytes as they arrive: an anonymous temporary file within the budget."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.file: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the sink
        self.written = 0


class _Sink:
    """Receives one block's frames from the child and scans each member when done."""

    def __init__(self, reader: _Reader, members: dict[int, _Member]) -> None:
        self.reader = reader
        self.members = members
        self.pending: _Spool | None = None
        self.done: set[int] = set()
        self.error: str | None = None

    def receive(self) -> str | None:
        """Read frames up to the block's status; ``None`` when the budget ran out."""
        channel = self.reader.channel
        while True:
            kind, payload = channel.frame()
            if kind == b"B":
                index = int(payload) if payload.isdigit() and len(payload) < 20 else -1
                if index not in self.members or index in self.done:
                    raise channel.broken("named a member it was not asked for")
                if self.pending is not None:
                    self.finish(self.pending, note=None)
                self.pending = _Spool(index)
            elif kind == b"D" and self.pending is not None:
                spool = self.pending
                if spool.written + len(payload) > self.reader.ctx.unpack_budget():
                    self.discard()
                    return None
                spool.written += len(payload)
                spool.file.write(payload)
            elif kind == b"E" and self.pending is not None:
                self.finish(self.pending, note=None)
            elif kind == b"K":
                return self._status(payload)
            elif kind == b"O":
                raise channel.gone()
            else:
                raise channel.broken(f"sent an unexpected frame {kind!r}")

    def _status(self, payload: bytes) -> str | None:
        try:
            status = json.loads(payload)
            state, why = str(status["status"]), status["why"]
        except (ValueError, KeyError, TypeError) as exc:
            raise self.reader.channel.broken("sent an invalid block status") from exc
        if state == "budget":
            self.discard()
            return None
        if state == "ok":
            self.finish_pending(crc=False, why=None)
        else:
            self.finish_pending(crc=state == "crc", why=str(why)[:300])
        return state

    def discard(self) -> None:
        if self.pending is not None:
            self.pending.file.close()
            self.pending = None

    def finish_pending(self, *, crc: bool, why: str | None) -> None:
        """Scan the member the child was writing when it stopped (``why``: the error)."""
        self.error = why
        if self.pending is not None:
            self.finish(self.pending, note=None if why is None else (crc, why))

    def finish(self, spool: _Spool, note: tuple[bool, str] | None) -> None:
        """Scan what ``spool`` holds; ``note`` says why it may be incomplete or corrupt."""
        if spool is self.pending:
            self.pending = None
        self.done.add(spool.index)
        reader = self.reader
        shown = reader.shown(self.members[spool.index])
        with spool.file as data:
            reader.ctx.unpacked += spool.written
            data.seek(0)
            if note is not None and note[0]:
                reader.ctx.add(
                    "7z.crc-mismatch",
                    Severity.MEDIUM,
                    "member's CRC does not match its bytes; extractors report an error but "
                    "leave the file behind; scanned as decoded",
                    format=_FORMAT,
                    member=shown,
                )
            elif note is not None:
                reader.ctx.incomplete(
                    f"7z member is truncated or corrupt ({note[1]}); scanned what it holds",
                    format=_FORMAT,
                    member=shown,
                )
            reader.ctx.nested(data, shown, reader.depth + 1)


def _block_sizes(files: Iterable[_Member]) -> dict[int, tuple[int, int]]:
    """Each solid block's declared (unpacked, packed) sizes, keyed by the block's number."""
    sizes: dict[int, tuple[int, int]] = {}
    for info in files:
        if info.block is None:
            continue
        unpacked, packed = sizes.get(info.block, (0, info.packed))
        sizes[info.block] = (unpacked + info.uncompressed, packed)
    return sizes
