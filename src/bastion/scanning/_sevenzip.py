"""7z archives, every member scanned by its content (needs the ``bastion[archives]`` extra).

py7zr parses the headers and decompresses; it never touches the file system here.
Each member is decompressed through a writer of Bastion's own into an anonymous
temporary file, keyed by its index in the archive (a member's name is shown in
findings, never joined to a path), and scanned as soon as it is complete, so at most
one member is spooled at a time. py7zr's ``extract`` is not used: it resolves member
names against the working directory and gives up on the whole archive at the first
unsafe name, which would hide the other members.

Before anything is decompressed, each member's declared size is checked against the
file's unpack budget and each solid block's compression ratio (bombs are
``scan.limit`` findings). py7zr never writes more than a member's declared size, and
the writers enforce the budget again as the bytes arrive. Solid blocks are extracted
one at a time, so a block that cannot be decompressed leaves the others scanned.
Encrypted archives and members, links, special members, unsafe and duplicate names
are reported as the zip and tar readers report them. Without py7zr a 7z archive is
``scan.incomplete``, never a pass.
"""

from __future__ import annotations

import importlib
import io
import stat
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO

from bastion.scanning._context import ScanContext, join_member
from bastion.scanning._names import check_member_name
from bastion.scanning._report import Severity
from bastion.scanning._streams import BudgetExceeded

if TYPE_CHECKING:
    from py7zr import SevenZipFile
    from py7zr.archiveinfo import Folder
    from py7zr.py7zr import ArchiveFile

__all__ = ["Importer", "scan_sevenzip"]

#: Imports a module by name (``importlib.import_module``; tests pass one that fails).
Importer = Callable[[str], ModuleType]

_FORMAT = "7z"
_INSTALL = "install the archives extra: pip install 'bastion[archives]'"
#: 7z method ids in the crypto namespace (AES-256, zip and RAR ciphers) start with 0x06.
_CRYPTO = b"\x06"


def scan_sevenzip(
    ctx: ScanContext,
    stream: BinaryIO,
    member: str | None,
    depth: int,
    *,
    importer: Importer = importlib.import_module,
) -> None:
    """Scan every member of the 7z archive ``stream`` by its content, one container deeper."""
    try:
        py7zr = importer("py7zr")
    except ImportError:
        ctx.incomplete(
            f"7z archive cannot be scanned: py7zr is not installed ({_INSTALL})",
            format=_FORMAT,
            member=member,
        )
        return
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    try:
        archive: SevenZipFile = py7zr.SevenZipFile(stream, "r")
    except py7zr.PasswordRequired:
        ctx.add(
            "7z.encrypted",
            Severity.MEDIUM,
            "archive's header is encrypted: its members cannot be listed or scanned",
            format=_FORMAT,
            member=member,
        )
        return
    except Exception as exc:  # hostile input: py7zr raises many kinds of error
        ctx.incomplete(
            f"unreadable 7z archive ({_describe(exc)}); not scanned", format=_FORMAT, member=member
        )
        return
    with archive:
        _Reader(ctx, py7zr, archive, size, member, depth).run()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200] or 'no detail'}"


class _Reader:
    """Plans which members to decompress, then extracts them one solid block at a time."""

    def __init__(
        self,
        ctx: ScanContext,
        py7zr: ModuleType,
        archive: SevenZipFile,
        size: int,
        parent: str | None,
        depth: int,
    ) -> None:
        self.ctx = ctx
        self.py7zr = py7zr
        self.archive = archive
        self.size = size
        self.parent = parent
        self.depth = depth
        self.stopped = False

    def shown(self, info: ArchiveFile) -> str:
        return join_member(self.parent, str(info.filename))

    def run(self) -> None:
        files = list(self.archive.files)
        limit = self.ctx.limits.max_members
        if len(files) > limit:
            self.ctx.limit(
                f"7z has {len(files)} members; only the first {limit} are scanned",
                format=_FORMAT,
                member=self.parent,
            )
            files = files[:limit]
        self.ctx.mark_scanned(_FORMAT, self.parent)
        self._duplicates(files)
        blocks: dict[int, list[ArchiveFile]] = {}
        for info in files:
            if self._check(info):
                blocks.setdefault(id(info.folder), []).append(info)
        block_sizes = _block_sizes(files)
        self.archive.worker.max_extract_size = self.ctx.unpack_budget()
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

    def _duplicates(self, files: Iterable[ArchiveFile]) -> None:
        for name, n in Counter(str(info.filename) for info in files).items():
            if n > 1:
                self.ctx.add(
                    "7z.duplicate-name",
                    Severity.MEDIUM,
                    f"{n} members are named {name!r}; extractors disagree on which one is kept "
                    "(every member was scanned)",
                    format=_FORMAT,
                    member=join_member(self.parent, name),
                )

    def _check(self, info: ArchiveFile) -> bool:
        """Report what the member's header says; whether its bytes should be scanned."""
        name = str(info.filename)
        shown = self.shown(info)
        check_member_name(self.ctx, name, _FORMAT, shown, "7z")
        kind = _kind(info)
        if kind == "link":
            self.ctx.add(
                "7z.symlink",
                Severity.HIGH,
                "member is a symbolic link or junction; extracting it can write or read outside "
                "the folder",
                format=_FORMAT,
                member=shown,
            )
            return False
        if kind == "special":
            self.ctx.add(
                "7z.special-member",
                Severity.MEDIUM,
                "member is a device, FIFO, socket or other special file",
                format=_FORMAT,
                member=shown,
            )
            return False
        if info.emptystream:
            if kind == "file":
                self.ctx.nested(io.BytesIO(), shown, self.depth + 1)
            return False
        folder = _folder(info)
        if folder is None:
            self.ctx.incomplete(
                "member has data but the archive holds no stream for it; not scanned",
                format=_FORMAT,
                member=shown,
            )
            return False
        if any(bytes(coder.get("method", b""))[:1] == _CRYPTO for coder in folder.coders):
            self.ctx.add(
                "7z.encrypted",
                Severity.MEDIUM,
                "member is encrypted and cannot be scanned",
                format=_FORMAT,
                member=shown,
            )
            return False
        return True

    def _over_budget(self, info: ArchiveFile) -> None:
        self.stopped = True
        self.ctx.limit(
            f"the file unpacks to more than {self.ctx.limits.max_unpacked_bytes} bytes; this "
            "7z member and the ones after it are not scanned",
            format=_FORMAT,
            member=self.shown(info),
        )

    def _extract(self, members: list[ArchiveFile]) -> None:
        """Decompress one solid block's ``members``, scanning each as it completes."""
        worker = self.archive.worker
        sink = _Sink(self, {str(info.id): info for info in members})
        for info in members:
            worker.register_filelike(info.id, self.py7zr.io.MemIO(str(info.id), sink))
        crc_error = self.py7zr.exceptions.CrcError
        bomb = getattr(self.py7zr, "DecompressionBombError", BudgetExceeded)  # py7zr >= 1.0
        try:
            worker.extract(self.archive.fp, None, parallel=False)
        except (BudgetExceeded, bomb):
            sink.discard()
            self._over_budget(members[0])
        except crc_error:
            sink.finish_pending(crc=True, why="CRC mismatch")
        except Exception as exc:  # hostile input: py7zr raises many kinds of error
            sink.finish_pending(crc=False, why=_describe(exc))
        else:
            sink.finish_pending(crc=False, why=None)
        finally:
            sink.discard()
            for info in members:
                worker.register_filelike(info.id, None)
        if self.stopped:
            return
        for info in members:
            if str(info.id) not in sink.done:
                self.ctx.incomplete(
                    f"7z member could not be decompressed ({sink.error or 'no data'}); not scanned",
                    format=_FORMAT,
                    member=self.shown(info),
                )


class _Spool:
    """What py7zr writes one member into: an anonymous temporary file within the budget.

    Duck-types ``py7zr.io.Py7zIO``; py7zr calls :meth:`close` when the member is complete.
    """

    def __init__(self, sink: _Sink, key: str) -> None:
        self.sink = sink
        self.key = key
        self.file: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the sink
        self.written = 0

    def write(self, data: bytes | bytearray) -> int:
        if self.written + len(data) > self.sink.reader.ctx.unpack_budget():
            raise BudgetExceeded(self.written + len(data))
        self.written += len(data)
        return self.file.write(data)

    def read(self, size: int | None = None) -> bytes:
        return self.file.read(-1 if size is None else size)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.file.seek(offset, whence)

    def flush(self) -> None:
        self.file.flush()

    def size(self) -> int:
        return self.written

    def close(self) -> None:
        self.sink.finish(self, note=None)


class _Sink:
    """Hands out a spool per member (py7zr's writer factory) and scans each when done."""

    def __init__(self, reader: _Reader, members: dict[str, ArchiveFile]) -> None:
        self.reader = reader
        self.members = members
        self.pending: _Spool | None = None
        self.done: set[str] = set()
        self.error: str | None = None

    def create(self, filename: str) -> _Spool:
        if filename not in self.members:
            raise KeyError(f"py7zr asked for an unplanned member {filename!r}")
        if self.pending is not None:  # py7zr versions that do not call close()
            self.finish(self.pending, note=None)
        self.pending = _Spool(self, filename)
        return self.pending

    def discard(self) -> None:
        if self.pending is not None:
            self.pending.file.close()
            self.pending = None

    def finish_pending(self, *, crc: bool, why: str | None) -> None:
        """Scan the member py7zr was writing when it stopped (``why``: the error, if any)."""
        self.error = why
        if self.pending is not None:
            self.finish(self.pending, note=None if why is None else (crc, why))

    def finish(self, spool: _Spool, note: tuple[bool, str] | None) -> None:
        """Scan what ``spool`` holds; ``note`` says why it may be incomplete or corrupt."""
        if spool is self.pending:
            self.pending = None
        if spool.key in self.done:
            return
        self.done.add(spool.key)
        reader = self.reader
        shown = reader.shown(self.members[spool.key])
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


def _kind(info: ArchiveFile) -> str:
    """``file``, ``dir``, ``link`` or ``special``, from the Unix mode when there is one."""
    fmt = info.st_fmt
    if fmt:
        if fmt == stat.S_IFLNK:
            return "link"
        if fmt == stat.S_IFDIR:
            return "dir"
        return "file" if fmt == stat.S_IFREG else "special"
    if info.is_symlink or info.is_junction:
        return "link"
    return "dir" if info.is_directory else "file"


def _folder(info: ArchiveFile) -> Folder | None:
    """The member's solid block; py7zr types it as always present, but an empty member has
    none, nor has a member of an archive without streams."""
    return info.folder


def _block_sizes(files: Iterable[ArchiveFile]) -> dict[int, tuple[int, int]]:
    """Each solid block's declared (unpacked, packed) sizes, keyed by the block's identity."""
    sizes: dict[int, tuple[int, int]] = {}
    for info in files:
        if _folder(info) is None:
            continue
        unpacked, packed = sizes.get(id(info.folder), (0, _packed(info)))
        sizes[id(info.folder)] = (unpacked + max(0, info.uncompressed or 0), packed)
    return sizes


def _packed(info: ArchiveFile) -> int:
    properties: dict[str, Any] = dict(info.file_properties())
    packsizes = properties.get("packsizes")
    if isinstance(packsizes, list) and all(isinstance(n, int) for n in packsizes):
        return max(0, sum(packsizes))
    return 0
