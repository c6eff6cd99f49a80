"""Compressed streams (gzip, bzip2, xz, zlib, lz4, and zip's raw codecs), decompressed
within the budget.

Loaders decompress transparently (joblib sniffs zlib, gzip, bz2, xz and lz4
magic; pandas trusts ``.pkl.gz``), so a compressed pickle is still a pickle.
Output is spooled to an anonymous temporary file and bounded two ways: the
file's total decompressed bytes, and the compression ratio of each stream.
lz4 needs the ``lz4`` module (the ``bastion[archives]`` extra); without it an
lz4 stream is reported as not scanned, never passed.
"""

from __future__ import annotations

import bz2
import importlib
import io
import lzma
import struct
import zlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import BinaryIO, Protocol

from bastion.scanning._context import ScanContext, join_member
from bastion.scanning._streams import CHUNK, BudgetExceeded, read_chunks, spool

__all__ = ["Importer", "decompress", "scan_compressed"]

#: Imports a module by name (``importlib.import_module``; tests pass one that fails).
Importer = Callable[[str], ModuleType]


class _Decompressor(Protocol):
    @property
    def eof(self) -> bool: ...
    @property
    def needs_input(self) -> bool: ...
    @property
    def unused_data(self) -> bytes | None: ...  # lz4: None when nothing follows
    def decompress(self, data: bytes, max_length: int = ..., /) -> bytes: ...


def scan_compressed(
    ctx: ScanContext,
    stream: BinaryIO,
    member: str | None,
    depth: int,
    fmt: str,
    *,
    importer: Importer = importlib.import_module,
) -> None:
    """Decompress ``stream`` and scan what it holds, one container deeper."""
    size = stream.seek(0, io.SEEK_END)
    stream.seek(0)
    inner = decompress(ctx, stream, size, fmt, member, importer=importer)
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
    *,
    declared_size: int | None = None,
    importer: Importer = importlib.import_module,
) -> BinaryIO | None:
    """The decompressed bytes of ``stream``, spooled; ``None`` after reporting why not.

    ``codec`` is one of ``gzip bzip2 xz zlib lz4 deflate zip-lzma`` (``deflate``:
    a raw stream, as in zip members; ``zip-lzma``: zip's method 14, whose
    ``declared_size`` is the member's uncompressed size from its header). A
    truncated stream is reported, and what it held is still returned, since a
    loader runs what it reads before the end.
    """
    if codec == "lz4":
        return _lz4(ctx, stream, compressed_size, member, on_chunk, importer)
    chunks = _zip_lzma_chunks(declared_size) if codec == "zip-lzma" else _CODECS[codec]
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
    except (zlib.error, OSError, EOFError, ValueError, lzma.LZMAError, RuntimeError) as exc:
        # RuntimeError: how the lz4 module reports a corrupt frame.
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
                    data = d.unused_data or b""
                    if not data.strip(b"\x00"):
                        return
                    d = make()
                    continue
                if d.needs_input:
                    break
        if not d.eof:
            raise _Truncated

    return chunks


def _zip_lzma_chunks(declared_size: int | None) -> Callable[[BinaryIO], Iterator[bytes]]:
    """Zip's LZMA: a 4-byte header (SDK version, properties size), LZMA1 properties, then
    a raw LZMA1 stream, with an end marker or ending after ``declared_size`` bytes."""

    def chunks(stream: BinaryIO) -> Iterator[bytes]:
        head = stream.read(4)
        if len(head) < 4:
            raise _Truncated
        (props_size,) = struct.unpack("<H", head[2:])
        props = stream.read(props_size)
        if props_size != 5:
            raise ValueError(f"LZMA properties are {props_size} bytes, not 5")
        if len(props) < props_size:
            raise _Truncated
        d = _lzma1(props, declared_size)
        produced = 0
        for data in read_chunks(stream, 64 << 10):
            while True:
                out = d.decompress(data, CHUNK)
                produced += len(out)
                yield out
                data = b""
                if d.eof or d.needs_input:
                    break
            if d.eof:
                return
        while not d.eof and (out := d.decompress(b"", CHUNK)):
            produced += len(out)
            yield out
        if not d.eof and (declared_size is None or produced < declared_size):
            raise _Truncated

    return chunks


def _lzma1(props: bytes, declared_size: int | None) -> lzma.LZMADecompressor:
    """A raw LZMA1 decoder for 5 property bytes (lc/lp/pb, then the dictionary size).

    The dictionary never needs to exceed the output: it is capped at the declared size,
    so a header cannot make the decoder reserve gigabytes for a small member (a stream
    that reaches further back than that is reported as corrupt).
    """
    (dict_size,) = struct.unpack("<I", props[1:5])
    if declared_size is not None:
        dict_size = min(dict_size, max(declared_size, 4096))
    pb, rest = divmod(props[0], 45)
    lp, lc = divmod(rest, 9)
    if pb > 4:
        raise ValueError(f"invalid LZMA properties byte {props[0]:#x}")
    lzma1 = {"id": lzma.FILTER_LZMA1, "dict_size": dict_size, "lc": lc, "lp": lp, "pb": pb}
    return lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=[lzma1])


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
    importer: Importer,
) -> BinaryIO | None:
    try:
        lz4_frame = importer("lz4.frame")
    except ImportError:
        ctx.incomplete(
            "lz4-compressed data cannot be scanned: the lz4 module is not installed "
            "(install the archives extra: pip install 'bastion[archives]')",
            format="lz4",
            member=member,
        )
        return None
    make: Callable[[], _Decompressor] = lz4_frame.LZ4FrameDecompressor
    return _spool(ctx, _stream_chunks(make)(stream), compressed_size, "lz4", member, on_chunk)
