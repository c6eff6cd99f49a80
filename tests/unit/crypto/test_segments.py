"""The BSE1 streaming format: round trips, sizes, the documented layout, misuse."""

from __future__ import annotations

import io
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.crypto import (
    DEFAULT_SEGMENT_SIZE,
    SegmentDecryptor,
    SegmentEncryptor,
    ciphertext_size,
    encrypt_stream,
    iter_decrypt,
    new_data_key,
    plaintext_size,
)
from bastion.crypto._segments import HEADER_SIZE, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, TAG_SIZE
from bastion.errors import IntegrityError, UsageError

KEY = bytes(range(32))
AD = b"artifact-0001"
SEG = MIN_SEGMENT_SIZE


def split(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` cut into pieces of the given sizes, cycling through them."""
    pieces, offset, index = [], 0, 0
    while offset < len(data):
        size = sizes[index % len(sizes)] if sizes else len(data)
        pieces.append(data[offset : offset + size])
        offset += size
        index += 1
    return pieces


def encrypt(data: bytes, *, segment_size: int = SEG, writes: list[int] | None = None) -> bytes:
    encryptor = SegmentEncryptor(KEY, associated_data=AD, segment_size=segment_size)
    out = [encryptor.header()]
    out += [encryptor.update(piece) for piece in split(data, writes or [len(data) or 1])]
    out.append(encryptor.finalize())
    return b"".join(out)


def decrypt(blob: bytes, *, reads: list[int] | None = None) -> bytes:
    decryptor = SegmentDecryptor(KEY, associated_data=AD)
    out = [decryptor.update(piece) for piece in split(blob, reads or [len(blob) or 1])]
    out.append(decryptor.finalize())
    return b"".join(out)


BOUNDARY_SIZES = [0, 1, SEG - 1, SEG, SEG + 1, 2 * SEG, 3 * SEG + 5]


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_round_trip_at_and_around_segment_boundaries(size: int) -> None:
    data = os.urandom(size)
    blob = encrypt(data)
    assert len(blob) == ciphertext_size(size, SEG)
    assert decrypt(blob) == data
    assert b"".join(iter_decrypt(io.BytesIO(blob), KEY, associated_data=AD)) == data
    streamed = io.BytesIO()
    written = encrypt_stream(io.BytesIO(data), streamed, KEY, associated_data=AD, segment_size=SEG)
    assert written == len(streamed.getvalue()) == len(blob)
    assert decrypt(streamed.getvalue()) == data


@pytest.mark.parametrize(
    "size", [0, 1, DEFAULT_SEGMENT_SIZE - 1, DEFAULT_SEGMENT_SIZE, DEFAULT_SEGMENT_SIZE + 1]
)
def test_round_trip_with_the_default_segment_size(size: int) -> None:
    data = os.urandom(size)
    out = io.BytesIO()
    written = encrypt_stream(io.BytesIO(data), out, KEY, associated_data=AD)
    assert written == ciphertext_size(size) == len(out.getvalue())
    out.seek(0)
    assert b"".join(iter_decrypt(out, KEY, associated_data=AD)) == data


chunk_sizes = st.lists(st.integers(1, 70), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=300),
    segment_size=st.integers(MIN_SEGMENT_SIZE, 48),
    writes=chunk_sizes,
    reads=chunk_sizes,
)
def test_round_trip_however_writes_and_reads_are_chunked(
    data: bytes, segment_size: int, writes: list[int], reads: list[int]
) -> None:
    blob = encrypt(data, segment_size=segment_size, writes=writes)
    assert len(blob) == ciphertext_size(len(data), segment_size)
    assert decrypt(blob, reads=reads) == data


@settings(max_examples=100, deadline=None)
@given(
    data=st.binary(max_size=300),
    segment_size=st.integers(MIN_SEGMENT_SIZE, 48),
    read_size=st.integers(1, 400),
)
def test_stream_helpers_agree_with_the_incremental_api(
    data: bytes, segment_size: int, read_size: int
) -> None:
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, KEY, associated_data=AD, segment_size=segment_size)
    blob = out.getvalue()
    assert decrypt(blob, reads=[7]) == data
    pieces = list(iter_decrypt(io.BytesIO(blob), KEY, associated_data=AD, read_size=read_size))
    assert b"".join(pieces) == data
    # One piece per segment: plaintext is released segment by segment.
    assert len(pieces) == max(1, -(-len(data) // segment_size))


class TrickleReader(io.RawIOBase):
    """A source that returns at most three bytes per read, like a slow socket."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        return self._data.read(min(size, 3) if size >= 0 else 3)


def test_short_reads_from_the_source_are_completed() -> None:
    data = os.urandom(5 * SEG + 3)
    out = io.BytesIO()
    encrypt_stream(TrickleReader(data), out, KEY, associated_data=AD, segment_size=SEG)  # type: ignore[arg-type]
    assert decrypt(out.getvalue()) == data
    released = iter_decrypt(TrickleReader(out.getvalue()), KEY, associated_data=AD)  # type: ignore[arg-type]
    assert b"".join(released) == data


def test_large_updates_span_many_segments_in_one_call() -> None:
    data = os.urandom(10 * DEFAULT_SEGMENT_SIZE + 123)
    blob = encrypt(data, segment_size=DEFAULT_SEGMENT_SIZE, writes=[4 * DEFAULT_SEGMENT_SIZE])
    assert decrypt(blob, reads=[3 * DEFAULT_SEGMENT_SIZE + 1]) == data


def test_the_header_and_segments_follow_the_documented_layout() -> None:
    data = os.urandom(2 * SEG + 5)
    blob = encrypt(data)
    header = blob[:HEADER_SIZE]
    magic, version, segment_size, salt, prefix = struct.unpack(">4sBI16s7s", header[:32])
    assert (magic, version, segment_size) == (b"BSE1", 1, SEG)
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=64,
        salt=salt,
        info=b"bastion BSE1 v1 segment subkey and commitment\x00" + header[:32] + AD,
    ).derive(KEY)
    assert header[32:] == okm[32:]
    aead = AESGCM(okm[:32])
    body = blob[HEADER_SIZE:]
    step = SEG + TAG_SIZE
    segments = [body[i : i + step] for i in range(0, len(body), step)]
    plain = [
        aead.decrypt(prefix + struct.pack(">IB", index, index == len(segments) - 1), seg, header)
        for index, seg in enumerate(segments)
    ]
    assert b"".join(plain) == data


def test_every_encryption_uses_a_fresh_salt_and_nonce_prefix() -> None:
    data = b"same plaintext, same key"
    first, second = encrypt(data), encrypt(data)
    assert first[9:32] != second[9:32]
    assert first[HEADER_SIZE:] != second[HEADER_SIZE:]


def test_sizes_are_exact_and_impossible_sizes_are_refused() -> None:
    possible = {ciphertext_size(n, SEG): n for n in range(10 * SEG)}
    for size in range(max(possible)):
        if size in possible:
            assert plaintext_size(size, SEG) == possible[size]
        else:
            with pytest.raises(IntegrityError, match="truncated or extended"):
                plaintext_size(size, SEG)
    assert ciphertext_size(0) == HEADER_SIZE + TAG_SIZE
    assert ciphertext_size(3 << 20) == HEADER_SIZE + (3 << 20) + 3 * TAG_SIZE


def test_new_data_keys_are_random_32_byte_keys() -> None:
    keys = {new_data_key() for _ in range(8)}
    assert len(keys) == 8
    assert all(len(key) == 32 for key in keys)


@pytest.mark.parametrize("key", [b"", b"k" * 16, b"k" * 33, bytearray(32)])
def test_a_data_key_must_be_32_bytes(key: bytes) -> None:
    with pytest.raises(UsageError, match="32 bytes"):
        SegmentEncryptor(key)
    with pytest.raises(UsageError, match="32 bytes"):
        SegmentDecryptor(key)
    with pytest.raises(UsageError, match="32 bytes"):
        iter_decrypt(io.BytesIO(), key)


@pytest.mark.parametrize("segment_size", [0, MIN_SEGMENT_SIZE - 1, MAX_SEGMENT_SIZE + 1])
def test_segment_size_out_of_range_is_a_usage_error(segment_size: int) -> None:
    with pytest.raises(UsageError, match="segment_size"):
        SegmentEncryptor(KEY, segment_size=segment_size)
    with pytest.raises(UsageError, match="segment_size"):
        ciphertext_size(10, segment_size)


def test_associated_data_must_be_bytes() -> None:
    with pytest.raises(UsageError, match="associated_data"):
        SegmentEncryptor(KEY, associated_data="artifact-1")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="associated_data"):
        SegmentDecryptor(KEY, associated_data=5)  # type: ignore[arg-type]


def test_a_finalized_encryptor_or_decryptor_refuses_more_work() -> None:
    encryptor = SegmentEncryptor(KEY, segment_size=SEG)
    blob = encryptor.header() + encryptor.update(b"x" * 40) + encryptor.finalize()
    with pytest.raises(UsageError, match="finalized"):
        encryptor.update(b"more")
    with pytest.raises(UsageError, match="finalized"):
        encryptor.finalize()
    decryptor = SegmentDecryptor(KEY)
    assert decryptor.update(blob) + decryptor.finalize() == b"x" * 40
    with pytest.raises(UsageError, match="finalized"):
        decryptor.update(b"")


def test_reprs_show_no_key_material() -> None:
    encryptor, decryptor = SegmentEncryptor(KEY), SegmentDecryptor(KEY)
    for text in (repr(encryptor), repr(decryptor)):
        assert KEY.hex() not in text
        assert repr(KEY)[2:-1] not in text
