"""The py7zr half of the 7z reader: a short-lived child process under resource limits.

py7zr parses a 7z's whole header and builds its whole member list before any of
Bastion's limits can apply, and a block's decoder reserves what the archive declares,
so a small hostile archive can ask for gigabytes. ``_sevenzip.py`` therefore runs
py7zr here, as ``python -I _sevenzip_child.py FD MEMORY CPU MAX_MEMBERS`` with an
empty environment: this process caps its own address space and CPU time before it
imports py7zr (``preexec_fn`` is not safe in the threaded server), reads the archive
from the inherited descriptor ``FD``, and answers on stdout in frames (one type
byte, a 4-byte big-endian length, the payload):

- ``P`` the header is encrypted, ``X`` unreadable (JSON ``why``), ``N`` no py7zr,
  ``O`` out of memory; each ends the process;
- ``H`` JSON ``total`` members, then one ``M`` per member up to ``MAX_MEMBERS``
  (JSON ``[name, kind, empty, block, encrypted, uncompressed, packed]``), then ``L``;
- then, for each JSON line ``[budget, [index, ...]]`` read from stdin (one solid
  block's members), ``B`` index / ``D`` bytes... / ``E`` per member as py7zr writes
  it, and ``K`` JSON ``{"status": "ok" | "budget" | "crc" | "error", "why": ...}``.

It imports nothing of Bastion's (``-I`` keeps the package off ``sys.path``), writes no
file, and never runs anything from the archive. The parent trusts none of its output.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import stat
import sys
from typing import Any, BinaryIO

_CHUNK = 1 << 20
#: 7z method ids in the crypto namespace (AES-256, zip and RAR ciphers) start with 0x06.
_CRYPTO = b"\x06"


class _Budget(Exception):
    """The block wrote more than the parent's unpack budget allows."""


class _Out:
    """Writes frames to the parent."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        data = kind + len(payload).to_bytes(4, "big") + payload
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def json(self, kind: bytes, value: object) -> None:
        self.send(kind, json.dumps(value).encode())


class _Writer:
    """What py7zr writes one member into: frames to the parent, within the budget."""

    def __init__(self, sink: _Sink, index: int) -> None:
        self.sink = sink
        self.index = index
        self.written = 0

    def write(self, data: bytes | bytearray) -> int:
        self.written += len(data)
        self.sink.total += len(data)
        if self.sink.total > self.sink.budget:
            raise _Budget
        for start in range(0, len(data), _CHUNK):
            self.sink.out.send(b"D", bytes(data[start : start + _CHUNK]))
        return len(data)

    def read(self, size: int | None = None) -> bytes:
        return b""

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.written

    def flush(self) -> None:
        return None

    def size(self) -> int:
        return self.written

    def close(self) -> None:
        self.sink.out.send(b"E")


class _Sink:
    """py7zr's writer factory for one block: member keys are indices in the listing."""

    def __init__(self, out: _Out, budget: int, keys: dict[str, int]) -> None:
        self.out = out
        self.budget = budget
        self.keys = keys
        self.total = 0

    def create(self, filename: str) -> _Writer:
        index = self.keys[filename]
        self.out.send(b"B", str(index).encode())
        return _Writer(self, index)


def _kind(info: Any) -> str:
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


def _packed(info: Any) -> int:
    packsizes = dict(info.file_properties()).get("packsizes")
    if isinstance(packsizes, list) and all(isinstance(n, int) for n in packsizes):
        return max(0, sum(packsizes))
    return 0


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200] or 'no detail'}"


def _list(out: _Out, files: list[Any], limit: int) -> None:
    out.json(b"H", {"total": len(files)})
    blocks: dict[int, int] = {}
    for info in files[:limit]:
        folder = info.folder
        block = None if folder is None else blocks.setdefault(id(folder), len(blocks))
        encrypted = folder is not None and any(
            bytes(coder.get("method", b""))[:1] == _CRYPTO for coder in folder.coders
        )
        entry = [
            str(info.filename),
            _kind(info),
            bool(info.emptystream),
            block,
            encrypted,
            max(0, int(info.uncompressed or 0)),
            0 if folder is None else _packed(info),
        ]
        out.json(b"M", entry)
    out.send(b"L")


def _extract(py7zr: Any, archive: Any, out: _Out, files: list[Any], command: Any) -> None:
    budget, indices = int(command[0]), [int(n) for n in command[1]]
    members = [files[n] for n in indices]
    keys = {str(info.id): n for info, n in zip(members, indices, strict=True)}
    sink = _Sink(out, budget, keys)
    worker = archive.worker
    worker.max_extract_size = budget
    for info in members:
        worker.register_filelike(info.id, py7zr.io.MemIO(str(info.id), sink))
    status: dict[str, str | None] = {"status": "ok", "why": None}
    try:
        worker.extract(archive.fp, None, parallel=False)
    except MemoryError:
        raise
    except (_Budget, py7zr.DecompressionBombError):
        status = {"status": "budget", "why": None}
    except py7zr.exceptions.CrcError:
        status = {"status": "crc", "why": "CRC mismatch"}
    except Exception as exc:  # hostile input: py7zr raises many kinds of error
        status = {"status": "error", "why": _describe(exc)}
    finally:
        for info in members:
            worker.register_filelike(info.id, None)
    out.json(b"K", status)


def _serve(out: _Out, fd: int, limit: int) -> None:
    try:
        import py7zr
    except ImportError:
        out.send(b"N")
        return
    with os.fdopen(fd, "rb") as source:
        stream: BinaryIO = source
        try:
            archive = py7zr.SevenZipFile(stream, "r")
        except py7zr.PasswordRequired:
            out.send(b"P")
            return
        except MemoryError:
            raise
        except Exception as exc:  # hostile input: py7zr raises many kinds of error
            out.json(b"X", {"why": _describe(exc)})
            return
        with archive:
            files = list(archive.files)
            _list(out, files, limit)
            del files[limit:]
            for line in sys.stdin.buffer:
                _extract(py7zr, archive, out, files, json.loads(line))


def main(argv: list[str]) -> int:
    fd, memory, cpu, limit = (int(arg) for arg in argv[1:5])
    for which, value in (
        (resource.RLIMIT_AS, memory),
        (resource.RLIMIT_DATA, memory),
        (resource.RLIMIT_CPU, cpu),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(which, (value, value))
    # Frames go to a private copy of stdout; anything printed goes to stderr instead.
    out = _Out(os.dup(1))
    os.dup2(2, 1)
    try:
        _serve(out, fd, limit)
    except MemoryError:
        with contextlib.suppress(OSError, MemoryError):  # the exit status says it too
            out.send(b"O")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
