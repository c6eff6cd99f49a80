"""``SegmentReader`` on damaged streams: refused at open, or at the damaged segment, for good.

Damage that changes the stream's length or its last segment (truncation, extension,
dropped or duplicated segments) is refused when the reader is built. Damage to a
segment before the last is found when that segment is read: the other segments
still read until then, and nothing reads after it.
"""

from __future__ import annotations

import io
import os

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from bastion.crypto import SegmentReader
from bastion.crypto._segments import HEADER_SIZE, TAG_SIZE
from bastion.errors import IntegrityError
from tests.unit.crypto.damaged_streams import AD, COUNT, KEY, OTHER_KEY, PLAIN, SEG, STEP, encrypt

BLOB = encrypt()


def split(blob: bytes) -> tuple[bytes, list[bytes]]:
    body = blob[HEADER_SIZE:]
    return blob[:HEADER_SIZE], [body[i : i + STEP] for i in range(0, len(body), STEP)]


def open_reader(blob: bytes, *, key: bytes = KEY, ad: bytes = AD) -> SegmentReader:
    return SegmentReader(io.BytesIO(blob), key, associated_data=ad)


def read_segment(reader: SegmentReader, index: int) -> bytes:
    reader.seek(index * SEG)
    return reader.read(SEG)


def refused_at_open(blob: bytes, *, key: bytes = KEY, ad: bytes = AD) -> IntegrityError:
    source = io.BytesIO(blob)
    with pytest.raises(IntegrityError) as caught:
        SegmentReader(source, key, associated_data=ad)
    assert source.closed
    return caught.value


def assert_stays_failed(reader: SegmentReader) -> None:
    assert reader.failed
    for call in (
        lambda: read_segment(reader, 0),
        lambda: reader.read(),
        lambda: reader.read1(1),
        lambda: reader.readinto(bytearray(4)),
    ):
        with pytest.raises(IntegrityError, match="already failed"):
            call()


def test_the_intact_stream_reads_back() -> None:
    with open_reader(BLOB) as reader:
        assert [read_segment(reader, i) for i in range(COUNT)] == [
            PLAIN[i * SEG : (i + 1) * SEG] for i in range(COUNT)
        ]


@given(position=st.integers(HEADER_SIZE, len(BLOB) - 1), bit=st.integers(0, 7))
@example(position=HEADER_SIZE, bit=0)
@example(position=len(BLOB) - 1, bit=7)
def test_a_flipped_bit_fails_its_segment_only(position: int, bit: int) -> None:
    damaged = bytearray(BLOB)
    damaged[position] ^= 1 << bit
    index = (position - HEADER_SIZE) // STEP
    if index == COUNT - 1:
        assert "the last segment" in refused_at_open(bytes(damaged)).message
        return
    with open_reader(bytes(damaged)) as reader:
        for other in range(COUNT):
            if other != index:
                assert read_segment(reader, other) == PLAIN[other * SEG : (other + 1) * SEG]
        assert not reader.failed
        # A read that starts in a good segment and runs into the damaged one releases nothing.
        reader.seek(max(0, index * SEG - 3))
        with pytest.raises(IntegrityError, match=f"segment {index} failed authentication"):
            reader.read(2 * SEG)
        assert_stays_failed(reader)


@given(position=st.integers(0, HEADER_SIZE - 1), bit=st.integers(0, 7))
def test_a_tampered_header_is_refused_at_open(position: int, bit: int) -> None:
    damaged = bytearray(BLOB)
    damaged[position] ^= 1 << bit
    refused_at_open(bytes(damaged))


def test_swapped_segments_fail_when_read() -> None:
    header, parts = split(BLOB)
    parts[1], parts[3] = parts[3], parts[1]
    with open_reader(header + b"".join(parts)) as reader:
        assert read_segment(reader, 0) == PLAIN[:SEG]
        with pytest.raises(IntegrityError, match="segment 1 failed"):
            read_segment(reader, 1)
        assert_stays_failed(reader)


def test_a_segment_swapped_into_the_last_place_is_refused_at_open() -> None:
    header, parts = split(encrypt(PLAIN[: 4 * SEG]))
    parts[1], parts[3] = parts[3], parts[1]
    refused_at_open(header + b"".join(parts))


def test_a_segment_from_another_stream_fails_when_read() -> None:
    header, parts = split(BLOB)
    _, foreign = split(encrypt())
    parts[2] = foreign[2]
    reader = open_reader(header + b"".join(parts))
    with reader, pytest.raises(IntegrityError, match="segment 2 failed"):
        read_segment(reader, 2)


@pytest.mark.parametrize("cut", range(len(BLOB)))
def test_every_truncation_is_refused_at_open(cut: int) -> None:
    refused_at_open(BLOB[:cut])


def test_truncation_at_a_segment_boundary_is_refused_by_the_last_flag() -> None:
    error = refused_at_open(BLOB[: HEADER_SIZE + 3 * STEP])
    assert "the last segment failed authentication" in error.message


@pytest.mark.parametrize("extra", [b"\x00", os.urandom(TAG_SIZE), os.urandom(STEP), BLOB[-STEP:]])
def test_appended_bytes_are_refused_at_open(extra: bytes) -> None:
    refused_at_open(BLOB + extra)


def test_dropped_or_duplicated_segments_are_refused_at_open() -> None:
    header, parts = split(BLOB)
    refused_at_open(header + b"".join(parts[:2] + parts[3:]))
    refused_at_open(header + b"".join(parts[:3] + parts[2:]))


def test_the_wrong_key_or_associated_data_is_refused_at_open() -> None:
    assert "wrong data key" in refused_at_open(BLOB, key=OTHER_KEY).message
    assert "wrong associated data" in refused_at_open(BLOB, ad=b"artifact-0002").message


def test_a_source_that_shrinks_after_open_fails_when_read() -> None:
    source = io.BytesIO(BLOB)
    with SegmentReader(source, KEY, associated_data=AD) as reader:
        source.truncate(HEADER_SIZE + 2 * STEP + 5)
        assert read_segment(reader, 1) == PLAIN[SEG : 2 * SEG]
        with pytest.raises(IntegrityError, match="segment 2 failed"):
            read_segment(reader, 2)
        assert_stays_failed(reader)
