"""Seekable views of bytes inside a file, so that members are scanned in place.

A stored member of a zip or a tar is a byte range of the file that holds it:
:class:`SeekableSlice` reads that range without copying it. Decompressed data
has no such range; :func:`spool` copies it into an anonymous temporary file
(never a named one, never the member's own name), and stops at a byte budget.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

__all__ = ["CHUNK", "BudgetExceeded", "SeekableSlice", "as_binary", "read_chunks", "spool"]

#: Bytes read at a time when copying or checking members.
CHUNK = 1 << 20


class BudgetExceeded(Exception):
    """Decompressed output grew past the bytes the caller allowed (internal signal)."""

    def __init__(self, produced: int) -> None:
        super().__init__(produced)
        self.produced = produced


class SeekableSlice(io.RawIOBase):
    """A read-only, seekable window of ``length`` bytes at ``offset`` in ``base``.

    The window may claim more bytes than ``base`` holds (a truncated archive):
    reads then simply end early, as they would for the loader.
    """

    def __init__(self, base: BinaryIO, offset: int, length: int) -> None:
        super().__init__()
        self._base = base
        self._offset = offset
        self._length = max(length, 0)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            new = pos
        elif whence == io.SEEK_CUR:
            new = self._pos + pos
        elif whence == io.SEEK_END:
            new = self._length + pos
        else:
            raise ValueError(f"invalid whence {whence}")
        if new < 0:
            raise ValueError("negative seek position")
        self._pos = new
        return new

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        want = min(len(buffer), self._length - self._pos)
        if want <= 0:
            return 0
        self._base.seek(self._offset + self._pos)
        data = self._base.read(want)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = self._length - self._pos
        buf = bytearray(max(0, min(size, self._length - self._pos)))
        n = self.readinto(buf)
        return bytes(buf[:n])


def as_binary(raw: io.RawIOBase) -> BinaryIO:
    """``raw`` wrapped in a buffer, typed as the binary stream the scanners take."""
    return io.BufferedReader(raw, buffer_size=CHUNK)


def read_chunks(stream: BinaryIO, size: int = CHUNK) -> Iterator[bytes]:
    while chunk := stream.read(size):
        yield chunk


def spool(
    chunks: Iterator[bytes], budget: int, on_chunk: Callable[[bytes], None] | None = None
) -> BinaryIO:
    """Copy ``chunks`` into an anonymous temporary file, rewound; raise past ``budget`` bytes.

    The file is deleted when closed (and by the OS if the process dies), so no
    member ever lands on disk under a name.
    """
    out: BinaryIO = tempfile.TemporaryFile()  # noqa: SIM115 - returned to the caller
    produced = 0
    try:
        for chunk in chunks:
            produced += len(chunk)
            if produced > budget:
                raise BudgetExceeded(produced)
            if on_chunk is not None:
                on_chunk(chunk)
            out.write(chunk)
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out
