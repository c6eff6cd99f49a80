"""Compressed streams (gzip, bzip2, xz, zlib, lz4), decompressed within the budget.

Loaders decompress transparently (joblib sniffs zlib, gzip, bz2, xz and lz4
magic; pandas trusts ``.pkl.gz``), so a compressed pickle is still a pickle.
Output is spooled to an anonymous temporary file and bounded two ways: the
file's total decompressed bytes, and the compression ratio of each stream.
"""

from __future__ import annotations

import bz2
import io
import lzma
import zlib
from collections.abc import Callable, Iterator
from typing import BinaryIO, Protocol

from bastion.scanning._context import ScanContext, join_member
from bastion.scanning._streams import CHUNK, BudgetExceeded, read_chunks, spool

__all__ = ["decompress", "scan_compressed"]


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes: ...
    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def scan_compressed(
    ctx: ScanContext, stream: BinaryIO, member: str | None, depth: int, fmt: str
) -> None:
    """Decompress ``stream`` and scan what it holds, one container deeper."""
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    inner = decompress(ctx, stream, size, fmt, member)
    if inner is None:
        return
    with inner:
        ctx.mark_scanned(fmt, member)
        ctx.nested(inner, join_member(member, f"<{fmt}>"), depth + 1)


def decompress(
    ctx: ScanContext,
    stream: BinaryIO,
    compressed_size: int,
    codec: str,
    member: str | None,
    on_chunk: Callable[[bytes], None] | None = None,
) -> BinaryIO | None:
    """The decompressed bytes of ``stream``, spooled; ``None`` after reporting why not.

    ``codec`` is one of ``gzip bzip2 xz zlib lz4 deflate`` (``deflate``: a raw
    stream, as in zip members). A truncated stream is reported, and what it
    held is still returned, since a loader runs what it reads before the end.
    """
    chunks = _CODECS.get(codec)
    if chunks is None:
        return _lz4(ctx, stream, compressed_size, member, on_chunk)
    return _spool(ctx, chunks(stream), compressed_size, codec, member, on_chunk)


def _spool(
    ctx: ScanContext,
    chunks: Iterator[bytes],
    compressed_size: int,
    codec: str,
    member: str | None,
    on_chunk: Callable[[bytes], None] | None,
) -> BinaryIO | None:
    by_ratio = ctx.limits.max_ratio * max(compressed_size, 1)
    budget = min(ctx.unpack_budget(), by_ratio)
    truncated: list[str] = []
    try:
        out = spool(_noting_truncation(chunks, truncated), budget, on_chunk)
    except BudgetExceeded as exc:
        ctx.unpacked += exc.produced
        if budget == by_ratio:
            why = f"decompresses more than {ctx.limits.max_ratio} times its size (a bomb?)"
        else:
            why = f"the file unpacks to more than {ctx.limits.max_unpacked_bytes} bytes"
        ctx.limit(f"{codec} stream {why}; not scanned", format=codec, member=member)
        return None
    except (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError) as exc:
        ctx.incomplete(f"corrupt {codec} stream ({exc}); not scanned", format=codec, member=member)
        return None
    ctx.unpacked += out.seek(0, io.SEEK_END)
    out.seek(0)
    if truncated:
        ctx.incomplete(
            f"{codec} stream is truncated; scanned what it holds", format=codec, member=member
        )
    return out


def _noting_truncation(chunks: Iterator[bytes], truncated: list[str]) -> Iterator[bytes]:
    try:
        yield from chunks
    except _Truncated:
        truncated.append("truncated")


class _Truncated(Exception):
    pass


def _zlib_chunks(wbits: int, multi: bool) -> Callable[[BinaryIO], Iterator[bytes]]:
    def chunks(stream: BinaryIO) -> Iterator[bytes]:
        d = zlib.decompressobj(wbits)
        for data in read_chunks(stream, 64 << 10):
            while data:
                yield d.decompress(data, CHUNK)
                data = d.unconsumed_tail
                if d.eof:
                    data = d.unused_data + data
                    if not multi or not data.strip(b"\x00"):
                        return
                    d = zlib.decompressobj(wbits)
        while not d.eof and (out := d.decompress(b"", CHUNK)):
            yield out
        if not d.eof:
            raise _Truncated

    return chunks


def _stream_chunks(make: Callable[[], _Decompressor]) -> Callable[[BinaryIO], Iterator[bytes]]:
    """For bz2, lzma and lz4 decompressors, which take ``max_length`` and may be concatenated."""

    def chunks(stream: BinaryIO) -> Iterator[bytes]:
        d = make()
        for data in read_chunks(stream, 64 << 10):
            while True:
                yield d.decompress(data, CHUNK)
                data = b""
                if d.eof:
                    data = d.unused_data
                    if not data.strip(b"\x00"):
                        return
                    d = make()
                    continue
                if d.needs_input:
                    break
        if not d.eof:
            raise _Truncated

    return chunks


_CODECS: dict[str, Callable[[BinaryIO], Iterator[bytes]]] = {
    "gzip": _zlib_chunks(31, multi=True),
    "zlib": _zlib_chunks(15, multi=False),
    "deflate": _zlib_chunks(-15, multi=False),
    "bzip2": _stream_chunks(bz2.BZ2Decompressor),
    "xz": _stream_chunks(lambda: lzma.LZMADecompressor(lzma.FORMAT_AUTO)),
}


def _lz4(
    ctx: ScanContext,
    stream: BinaryIO,
    compressed_size: int,
    member: str | None,
    on_chunk: Callable[[bytes], None] | None,
) -> BinaryIO | None:
    try:
        import lz4.frame  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        ctx.incomplete(
            "lz4-compressed data cannot be scanned: the lz4 module is not installed",
            format="lz4",
            member=member,
        )
        return None
    make: Callable[[], _Decompressor] = lz4.frame.LZ4FrameDecompressor
    return _spool(ctx, _stream_chunks(make)(stream), compressed_size, "lz4", member, on_chunk)
