"""Random access to the plaintext of a stored ``BSE1`` stream, without decrypting all of it.

The scanner reads a few bytes at scattered offsets of a large encrypted blob (the
header of a format, its tail, a table in the middle). Decrypting the blob to disk
first would put the plaintext at rest; decrypting it whole into memory would cost
its size. :class:`SegmentReader` opens only the segments a read touches.
"""

from __future__ import annotations

import io
import operator
from typing import TYPE_CHECKING, BinaryIO, Final

from bastion.crypto._segments import (
    HEADER_SIZE,
    TAG_SIZE,
    _check_associated_data,
    _check_key,
    _open_stream,
    _read_exact,
    _Segments,
    plaintext_size,
)
from bastion.errors import IntegrityError, UsageError

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["SegmentReader"]

_CLOSED: Final = "I/O operation on closed file."


class SegmentReader(io.BufferedIOBase, BinaryIO):
    """A read-only, seekable binary file over the plaintext of one ``BSE1`` stream.

    What it guarantees: every byte it returns comes from a segment that
    authenticated under its own index and last-segment flag, and a stream
    truncated (at a segment boundary or inside one) or extended is refused when
    the reader is built, because the size must fit the format and the last
    segment is opened then. What it does not prove: that segments it never read
    are intact. Only a full sequential read (or :func:`iter_decrypt`) shows that.

    The stream starts at ``src``'s position when the reader is built; ``src``
    must be seekable, and the reader owns it from then on: it closes it on
    :meth:`close`, and also when the constructor raises. One decrypted segment,
    the most recently used, is kept, so sequential small reads open each segment
    once. A read of ``n`` bytes holds the result (twice, briefly, when it spans
    segments) and one segment. A segment that fails authentication raises
    :class:`IntegrityError`, and every later read raises again. Not thread-safe.
    """

    def __init__(self, src: BinaryIO, key: bytes, *, associated_data: bytes = b"") -> None:
        super().__init__()
        self._src = src
        self._position = 0
        self._cached_index = -1
        self._cached = b""
        self._failed = False
        self._source_error: OSError | None = None
        try:
            self._open(key, _check_associated_data(associated_data))
        except BaseException:
            self.close()
            raise

    def _open(self, key: bytes, associated_data: bytes) -> None:
        _check_key(key)
        if not self._src.seekable():
            raise UsageError("SegmentReader needs a seekable source; use iter_decrypt instead")
        self._base = self._src.tell()
        header = _read_exact(self._src, HEADER_SIZE)
        if len(header) < HEADER_SIZE:
            raise IntegrityError("the encrypted stream is truncated inside its header")
        self._stream: _Segments = _open_stream(key, associated_data, header)
        self._segment_size = self._stream.segment_size
        stored = self._src.seek(0, io.SEEK_END) - self._base
        self._size = plaintext_size(stored, self._segment_size)
        self._count = max(1, -(-self._size // self._segment_size))
        # Opening the last segment as the last one refuses truncation and extension now,
        # before any plaintext is released (and an index past the format's limit).
        self._segment(self._count - 1)

    def __repr__(self) -> str:
        if self.closed:
            return "SegmentReader(closed)"
        return f"SegmentReader(size={self._size}, segment_size={self._segment_size})"

    @property
    def failed(self) -> bool:
        """Whether a segment failed authentication (every later read then raises)."""
        return self._failed

    @property
    def source_error(self) -> OSError | None:
        """The last error the source raised while a segment was read (a fault of the
        disk or the store, not damage the format detects), or None."""
        return self._source_error

    @property
    def size(self) -> int:
        """The plaintext size in bytes."""
        return self._size

    @property
    def mode(self) -> str:
        return "rb"

    @property
    def name(self) -> str:
        """The source's name, like :class:`io.BufferedReader` (no name: AttributeError)."""
        name: str = self._src.name
        return name

    def close(self) -> None:
        """Close the reader and its source, and drop the cached plaintext."""
        if self.closed:
            return
        self._cached_index, self._cached = -1, b""
        try:
            self._src.close()
        finally:
            super().close()

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError(_CLOSED)

    def readable(self) -> bool:
        self._check_open()
        return True

    def seekable(self) -> bool:
        self._check_open()
        return True

    def writable(self) -> bool:
        self._check_open()
        return False

    def tell(self) -> int:
        self._check_open()
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        """Move like :class:`io.BytesIO`: past the end is allowed, before the start is not."""
        self._check_open()
        offset = operator.index(offset)
        if whence == io.SEEK_SET:
            if offset < 0:
                raise ValueError(f"negative seek value {offset}")
            position = offset
        elif whence == io.SEEK_CUR:
            position = self._position + offset
        elif whence == io.SEEK_END:
            position = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        self._position = max(0, position)
        return self._position

    def read(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes (the rest when ``size`` is negative or None); fewer only at
        the end."""
        wanted = self._wanted(size)
        if not wanted:
            return b""
        index, start = divmod(self._position, self._segment_size)
        if start + wanted <= self._segment_size:
            data = self._segment(index)[start : start + wanted]
            self._position += len(data)
            return data
        buffer = bytearray(wanted)
        return bytes(memoryview(buffer)[: self.readinto(buffer)])

    def read1(self, size: int | None = -1, /) -> bytes:
        """Up to ``size`` bytes from one segment at most."""
        wanted = self._wanted(size)
        if not wanted:
            return b""
        start = self._position % self._segment_size
        return self.read(min(wanted, self._segment_size - start))

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        """Fill ``buffer`` from the current position; returns how many bytes were put in."""
        self._check_usable()
        with memoryview(buffer) as raw, raw.cast("B") as view:
            wanted = max(0, min(len(view), self._size - self._position))
            done = 0
            while done < wanted:
                index, start = divmod(self._position + done, self._segment_size)
                plain = self._segment(index)
                take = min(wanted - done, len(plain) - start)
                view[done : done + take] = plain[start : start + take]
                done += take
        self._position += done
        return done

    def readinto1(self, buffer: WriteableBuffer, /) -> int:
        """Like :meth:`readinto`, from one segment at most."""
        self._check_usable()
        with memoryview(buffer) as raw, raw.cast("B") as view:
            start = self._position % self._segment_size
            return self.readinto(view[: self._segment_size - start])

    def _wanted(self, size: int | None) -> int:
        self._check_usable()
        left = max(0, self._size - self._position)
        if size is None or size < 0:
            return left
        return min(operator.index(size), left)

    def _check_usable(self) -> None:
        self._check_open()
        if self._failed:
            raise IntegrityError("this stream already failed authentication; discard it")

    def _segment(self, index: int) -> bytes:
        """The authenticated plaintext of segment ``index``, from the cache or the source."""
        if index == self._cached_index:
            return self._cached
        last = index == self._count - 1
        step = self._segment_size + TAG_SIZE
        length = self._size - index * self._segment_size if last else self._segment_size
        try:
            self._src.seek(self._base + HEADER_SIZE + index * step)
            data = _read_exact(self._src, length + TAG_SIZE)
        except OSError as exc:
            self._source_error = exc
            raise
        self._cached_index, self._cached = -1, b""
        try:
            plain = self._stream.open_at(index, data, last=last)
        except IntegrityError:
            self._failed = True
            raise
        self._cached_index, self._cached = index, plain
        return plain
