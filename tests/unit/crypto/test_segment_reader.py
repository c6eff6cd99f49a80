"""``SegmentReader`` behaves like ``io.BytesIO`` over the plaintext, and reads only what it needs.

The property test drives a reader and a ``BytesIO`` holding the same plaintext with
one random sequence of seeks, reads and tells, and compares them operation by
operation. Damage to the stream is covered in ``test_segment_reader_tamper.py``.
"""

from __future__ import annotations

import io
import os
import tracemalloc
import zipfile
from typing import Any, BinaryIO

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.crypto import (
    DEFAULT_SEGMENT_SIZE,
    SegmentEncryptor,
    SegmentReader,
    ciphertext_size,
    encrypt_stream,
)
from bastion.crypto._segments import HEADER_SIZE, TAG_SIZE
from bastion.errors import UsageError

KEY = bytes(range(32))
AD = b"artifact-0001"


def encrypt(plain: bytes, segment_size: int, *, key: bytes = KEY, ad: bytes = AD) -> bytes:
    encryptor = SegmentEncryptor(key, associated_data=ad, segment_size=segment_size)
    return encryptor.header() + encryptor.update(plain) + encryptor.finalize()


class CountingSource(io.BytesIO):
    """A seekable source that counts the bytes read from it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size: int | None = -1, /) -> bytes:
        data = super().read(size)
        self.bytes_read += len(data)
        return data


Op = tuple[Any, ...]

OPS = st.one_of(
    st.tuples(st.just("seek"), st.integers(-300, 600), st.sampled_from([0, 0, 1, 1, 2, 2, 3])),
    st.tuples(st.just("read"), st.one_of(st.none(), st.integers(-2, 200))),
    st.tuples(st.just("readinto"), st.integers(0, 200)),
    st.tuples(st.just("read1"), st.one_of(st.none(), st.integers(-1, 200))),
    st.tuples(st.just("readinto1"), st.integers(0, 200)),
    st.tuples(st.just("readline"), st.integers(-1, 100)),
    st.tuples(st.just("tell")),
)


def apply(stream: BinaryIO, op: Op) -> object:
    """The outcome of ``op`` on ``stream``: its result, or the type of what it raised."""
    name, *args = op
    try:
        if name == "readinto":
            buffer = bytearray(b"\xaa" * args[0])
            count = stream.readinto(buffer)
            return count, bytes(buffer)
        result: object = getattr(stream, name)(*args)
        return result
    except (ValueError, OSError) as exc:
        return type(exc)


def one_segment_at_most(reader: SegmentReader, model: io.BytesIO, op: Op) -> None:
    """``read1``/``readinto1`` may stop at a segment's end: a prefix of what BytesIO gives,
    empty only at the end or when nothing was asked for."""
    name, size = op
    before = model.tell()
    if name == "read1":
        got = reader.read1(size)
    else:
        buffer = bytearray(size)
        got = bytes(buffer[: reader.readinto1(buffer)])
    expected = model.read(size)
    assert expected.startswith(got)
    assert got or not expected
    model.seek(before + len(got))


@given(
    segment_size=st.integers(16, 64),
    plain=st.binary(max_size=5 * 64 + 3),
    ops=st.lists(OPS, max_size=40),
)
def test_random_operations_match_bytesio(segment_size: int, plain: bytes, ops: list[Op]) -> None:
    model = io.BytesIO(plain)
    with SegmentReader(io.BytesIO(encrypt(plain, segment_size)), KEY, associated_data=AD) as r:
        assert r.size == len(plain)
        for op in ops:
            if op[0] in ("read1", "readinto1"):
                one_segment_at_most(r, model, op)
            else:
                assert apply(r, op) == apply(model, op), op
            assert r.tell() == model.tell()


@given(segment_size=st.integers(16, 64), plain=st.binary(max_size=5 * 64 + 3))
def test_a_full_read_returns_the_plaintext_and_the_source_is_closed(
    segment_size: int, plain: bytes
) -> None:
    source = io.BytesIO(encrypt(plain, segment_size))
    with SegmentReader(source, KEY, associated_data=AD) as reader:
        assert reader.read() == plain
        assert reader.read() == b""
        reader.seek(0)
        assert b"".join(iter(lambda: reader.read(7), b"")) == plain
    assert source.closed


def test_an_empty_stream_reads_as_empty() -> None:
    with SegmentReader(io.BytesIO(encrypt(b"", 16)), KEY, associated_data=AD) as reader:
        assert reader.size == 0
        assert reader.read() == b""
        assert reader.read(5) == b""
        assert reader.seek(10) == 10
        assert reader.read(1) == b""
        assert reader.readinto(bytearray(4)) == 0


def test_it_is_a_read_only_seekable_binary_file() -> None:
    source = io.BytesIO(encrypt(b"line one\nline two\n", 16))
    reader = SegmentReader(source, KEY, associated_data=AD)
    assert isinstance(reader, io.BufferedIOBase)
    assert reader.readable()
    assert reader.seekable()
    assert not reader.writable()
    assert reader.mode == "rb"
    assert list(reader) == [b"line one\n", b"line two\n"]
    reader.seek(0)
    with io.TextIOWrapper(reader, encoding="ascii") as text:
        assert text.read() == "line one\nline two\n"
    assert source.closed
    assert reader.closed


def test_a_zip_archive_is_read_in_place() -> None:
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model/config.json", b'{"layers": 2}')
        zf.writestr("model/weights.bin", os.urandom(5000))
    source = io.BytesIO(encrypt(archive.getvalue(), 64))
    with SegmentReader(source, KEY, associated_data=AD) as r, zipfile.ZipFile(r) as zf:
        assert zf.read("model/config.json") == b'{"layers": 2}'


def test_the_stream_starts_where_the_source_stands() -> None:
    source = io.BytesIO(b"prefix" + encrypt(b"payload", 16))
    source.seek(6)
    with SegmentReader(source, KEY, associated_data=AD) as reader:
        assert reader.read() == b"payload"


def test_a_closed_reader_raises_valueerror_like_io() -> None:
    reader = SegmentReader(io.BytesIO(encrypt(b"abc", 16)), KEY, associated_data=AD)
    reader.close()
    reader.close()
    for call in (
        reader.read,
        lambda: reader.readinto(bytearray(2)),
        lambda: reader.seek(0),
        reader.tell,
        reader.readable,
        reader.seekable,
        reader.__enter__,
    ):
        with pytest.raises(ValueError, match="closed file"):
            call()
    assert repr(reader) == "SegmentReader(closed)"


@pytest.mark.parametrize(
    ("key", "ad"),
    [(KEY[:16], AD), (KEY.hex(), AD), (KEY, "artifact-0001")],
)
def test_bad_arguments_are_usage_errors_and_close_the_source(key: Any, ad: Any) -> None:
    source = io.BytesIO(encrypt(b"abc", 16))
    with pytest.raises(UsageError):
        SegmentReader(source, key, associated_data=ad)
    assert source.closed


def test_a_source_that_cannot_seek_is_refused() -> None:
    class Pipe(io.BytesIO):
        def seekable(self) -> bool:
            return False

    with pytest.raises(UsageError, match="seekable"):
        SegmentReader(Pipe(encrypt(b"abc", 16)), KEY, associated_data=AD)


def large_stream() -> tuple[bytes, CountingSource]:
    plain = os.urandom(8 * DEFAULT_SEGMENT_SIZE)
    blob = io.BytesIO()
    encrypt_stream(io.BytesIO(plain), blob, KEY, associated_data=AD)
    assert len(blob.getvalue()) == ciphertext_size(len(plain))
    return plain, CountingSource(blob.getvalue())


STEP = DEFAULT_SEGMENT_SIZE + TAG_SIZE


def test_scattered_reads_decrypt_only_the_segments_they_touch() -> None:
    plain, source = large_stream()
    with SegmentReader(source, KEY, associated_data=AD) as reader:
        assert source.bytes_read == HEADER_SIZE + STEP  # the header and the last segment
        reader.seek(5 << 20)
        assert reader.read(8) == plain[5 << 20 : (5 << 20) + 8]
        assert source.bytes_read <= HEADER_SIZE + 2 * STEP
        for offset in (512, 1024, 2048, 4096):
            reader.seek(offset)
            assert reader.read(8) == plain[offset : offset + 8]
        assert source.bytes_read <= HEADER_SIZE + 3 * STEP
        reader.seek(-4, io.SEEK_END)
        assert reader.read() == plain[-4:]
        assert source.bytes_read <= HEADER_SIZE + 4 * STEP


def test_sequential_small_reads_open_each_segment_once() -> None:
    plain, source = large_stream()
    with SegmentReader(source, KEY, associated_data=AD) as reader:
        pieces = iter(lambda: reader.read(60_000), b"")
        assert b"".join(pieces) == plain
    # Every segment once, and the last one a second time (it was opened at construction).
    assert source.bytes_read == ciphertext_size(len(plain)) + STEP


def test_a_small_read_holds_about_one_segment_of_memory() -> None:
    plain, source = large_stream()
    with SegmentReader(source, KEY, associated_data=AD) as reader:
        reader.seek(5 << 20)
        tracemalloc.start()
        try:
            data = reader.read(8)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert data == plain[5 << 20 : (5 << 20) + 8]
    assert peak < 3 * DEFAULT_SEGMENT_SIZE


class FailingSource(io.BytesIO):
    """A source whose reads starting in ``[low, high)`` raise EIO while ``failing`` is set."""

    def __init__(self, data: bytes, low: int, high: int) -> None:
        super().__init__(data)
        self.low, self.high = low, high
        self.failing = True

    def read(self, size: int | None = -1, /) -> bytes:
        if self.failing and self.low <= self.tell() < self.high:
            raise OSError(5, "Input/output error")
        return super().read(size)


def test_a_source_read_error_is_kept_apart_from_damage_and_a_later_read_may_succeed() -> None:
    plain = os.urandom(5 * 64 + 7)  # six segments of 64 bytes, the last of 7
    stream = encrypt(plain, 64)
    step = 64 + TAG_SIZE
    last = HEADER_SIZE + 5 * step
    with pytest.raises(OSError, match="Input/output"):  # the last segment is read at once
        SegmentReader(FailingSource(stream, last, len(stream)), KEY, associated_data=AD)

    source = FailingSource(stream, HEADER_SIZE + step, HEADER_SIZE + 2 * step)  # segment 1
    with SegmentReader(source, KEY, associated_data=AD) as reader:
        assert reader.source_error is None
        assert reader.read(64) == plain[:64]
        with pytest.raises(OSError, match="Input/output"):
            reader.read(64)
        assert isinstance(reader.source_error, OSError)
        assert not reader.failed  # a fault of the source, not damage
        source.failing = False  # the fault passes: the same read now succeeds
        assert reader.read(64) == plain[64:128]
