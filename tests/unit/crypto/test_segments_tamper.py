"""Every way of damaging a BSE1 stream is detected, and nothing of a damaged segment leaks.

Each case decrypts the damaged stream both incrementally and through
``iter_decrypt`` and checks three things: an :class:`IntegrityError` is raised;
the plaintext released before it is exactly the good segments in front of the
damage (so they were released, and nothing of the damaged one was); and a
decryptor that failed stays failed.
"""

from __future__ import annotations

import io
import os
import tracemalloc

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bastion.crypto import SegmentDecryptor, iter_decrypt
from bastion.crypto._segments import HEADER_SIZE, TAG_SIZE
from bastion.errors import IntegrityError
from tests.unit.crypto.damaged_streams import AD, KEY, OTHER_KEY, PLAIN, SEG, STEP, encrypt

BLOB = encrypt()


def segments(blob: bytes) -> list[bytes]:
    body = blob[HEADER_SIZE:]
    return [body[i : i + STEP] for i in range(0, len(body), STEP)]


def join(header: bytes, parts: list[bytes]) -> bytes:
    return header + b"".join(parts)


def released_incrementally(
    blob: bytes, *, piece: int = 5, key: bytes = KEY, ad: bytes = AD
) -> tuple[bytes, IntegrityError | None]:
    decryptor = SegmentDecryptor(key, associated_data=ad)
    released = []
    try:
        for offset in range(0, len(blob), piece):
            released.append(decryptor.update(blob[offset : offset + piece]))
        released.append(decryptor.finalize())
    except IntegrityError as exc:
        if "already failed" not in exc.message:
            with pytest.raises(IntegrityError, match="already failed"):
                decryptor.update(b"")
        with pytest.raises(IntegrityError, match="already failed"):
            decryptor.finalize()
        return b"".join(released), exc
    return b"".join(released), None


def released_by_iterator(
    blob: bytes, *, read_size: int = 1, key: bytes = KEY, ad: bytes = AD
) -> tuple[bytes, IntegrityError | None]:
    released = []
    try:
        for piece in iter_decrypt(io.BytesIO(blob), key, associated_data=ad, read_size=read_size):
            released.append(piece)
    except IntegrityError as exc:
        return b"".join(released), exc
    return b"".join(released), None


def assert_detected(blob: bytes, good_segments: int, **kwargs: bytes) -> None:
    """Decrypting ``blob`` fails after releasing exactly its first ``good_segments``."""
    expected = PLAIN[: good_segments * SEG]
    for piece in (1, 7, STEP, len(blob) + 1):
        released, error = released_incrementally(blob, piece=piece, **kwargs)
        assert error is not None, f"damage not detected (pieces of {piece})"
        assert released == expected
    for read_size in (1, 3 * STEP, 1 << 20):
        released, error = released_by_iterator(blob, read_size=read_size, **kwargs)
        assert error is not None, f"damage not detected (reads of {read_size})"
        assert released == expected


def test_the_undamaged_stream_decrypts() -> None:
    assert released_incrementally(BLOB) == (PLAIN, None)
    assert released_by_iterator(BLOB) == (PLAIN, None)


@pytest.mark.parametrize("position", range(0, len(BLOB), 3))
def test_a_flipped_bit_anywhere_is_detected(position: int) -> None:
    damaged = bytearray(BLOB)
    damaged[position] ^= 0x10
    good = 0 if position < HEADER_SIZE else (position - HEADER_SIZE) // STEP
    assert_detected(bytes(damaged), good)


@pytest.mark.parametrize("length", range(len(BLOB)))
def test_truncation_anywhere_is_detected(length: int) -> None:
    body = length - HEADER_SIZE
    good = (body - 1) // STEP if body > STEP else 0
    assert_detected(BLOB[:length], good)


def test_a_missing_last_segment_is_detected() -> None:
    parts = segments(BLOB)
    assert_detected(join(BLOB[:HEADER_SIZE], parts[:-1]), len(parts) - 2)


@pytest.mark.parametrize(("first", "second"), [(0, 1), (1, 3), (2, 5), (4, 5)])
def test_reordered_segments_are_detected(first: int, second: int) -> None:
    parts = segments(BLOB)
    parts[first], parts[second] = parts[second], parts[first]
    assert_detected(join(BLOB[:HEADER_SIZE], parts), first)


@pytest.mark.parametrize("index", range(6))
def test_a_duplicated_segment_is_detected(index: int) -> None:
    parts = segments(BLOB)
    parts.insert(index, parts[index])
    assert_detected(join(BLOB[:HEADER_SIZE], parts), index + 1 if index < 5 else 5)


@pytest.mark.parametrize("index", range(5))
def test_a_dropped_segment_is_detected(index: int) -> None:
    parts = segments(BLOB)
    del parts[index]
    assert_detected(join(BLOB[:HEADER_SIZE], parts), index)


@pytest.mark.parametrize("tail", [b"\x00", os.urandom(TAG_SIZE), os.urandom(STEP)])
def test_trailing_bytes_are_detected(tail: bytes) -> None:
    assert_detected(BLOB + tail, 5)


def test_the_last_segment_repeated_after_itself_is_detected() -> None:
    assert_detected(BLOB + segments(BLOB)[-1], 5)


def test_the_wrong_key_is_detected_at_the_header() -> None:
    assert_detected(BLOB, 0, key=OTHER_KEY)


@pytest.mark.parametrize("ad", [b"", b"artifact-0002", AD + b"\x00", AD[:-1]])
def test_wrong_associated_data_is_detected_at_the_header(ad: bytes) -> None:
    assert_detected(BLOB, 0, ad=ad)


def test_a_blob_swapped_between_artifacts_is_detected() -> None:
    other = encrypt(ad=b"artifact-0002")
    assert_detected(other, 0)


def test_a_header_from_another_stream_is_detected() -> None:
    other = encrypt()
    assert_detected(other[:HEADER_SIZE] + BLOB[HEADER_SIZE:], 0)


@pytest.mark.parametrize("index", [0, 2, 5])
def test_a_segment_from_another_stream_under_the_same_key_is_detected(index: int) -> None:
    parts, foreign = segments(BLOB), segments(encrypt())
    parts[index] = foreign[index]
    assert_detected(join(BLOB[:HEADER_SIZE], parts), index)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, b"XSE1", "magic"),
        (4, b"\x02", "version 2"),
        (5, b"\xff\xff\xff\xff", "segment size"),
        (5, b"\x00\x00\x00\x20", "does not authenticate"),
        (9, b"\x00" * 16, "does not authenticate"),
    ],
)
def test_header_fields_are_checked(offset: int, value: bytes, message: str) -> None:
    damaged = BLOB[:offset] + value + BLOB[offset + len(value) :]
    released, error = released_incrementally(damaged)
    assert released == b""
    assert error is not None
    assert message in error.message


def test_an_empty_or_header_only_stream_is_truncated() -> None:
    for blob in (b"", BLOB[:10], BLOB[:HEADER_SIZE]):
        released, error = released_incrementally(blob)
        assert released == b""
        assert error is not None
        assert "truncated" in error.message


def test_a_huge_declared_segment_size_is_refused_before_any_allocation() -> None:
    damaged = BLOB[:5] + (1 << 31).to_bytes(4, "big") + BLOB[9:]
    tracemalloc.start()
    try:
        _, error = released_incrementally(damaged, piece=len(damaged))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert error is not None
    assert peak < 1 << 20


@st.composite
def mutations(draw: st.DrawFn) -> bytes:
    """BLOB with bytes flipped, inserted or deleted."""
    damaged = bytearray(BLOB)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "insert", "delete"]))
        position = draw(st.integers(0, len(damaged) - (kind != "insert")))
        if kind == "flip":
            damaged[position] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            damaged[position:position] = draw(st.binary(min_size=1, max_size=40))
        else:
            del damaged[position : position + draw(st.integers(1, 40))]
    return bytes(damaged)


def first_difference(damaged: bytes) -> int:
    return next((i for i, (a, b) in enumerate(zip(damaged, BLOB, strict=False)) if a != b), -1)


@settings(max_examples=300, deadline=None)
@given(damaged=mutations(), piece=st.integers(1, 80))
@example(damaged=BLOB[:-1] + bytes([BLOB[-1] ^ 1]), piece=1)
def test_mutated_streams_fail_cleanly_and_release_only_good_segments(
    damaged: bytes, piece: int
) -> None:
    released, error = released_incrementally(damaged, piece=piece)
    if damaged == BLOB:
        assert (released, error) == (PLAIN, None)
        return
    assert error is not None
    first = first_difference(damaged)
    if first < 0:  # one is a prefix of the other
        first = min(len(damaged), len(BLOB))
    # Only whole segments before the first damaged byte can have been released.
    good_segments = max(0, first - HEADER_SIZE) // STEP
    assert released == PLAIN[: len(released)]
    assert len(released) <= good_segments * SEG
    assert len(released) % SEG == 0


@settings(max_examples=200, deadline=None)
@given(noise=st.binary(max_size=600), piece=st.integers(1, 100))
@example(noise=BLOB[:HEADER_SIZE] + os.urandom(100), piece=7)
def test_random_bytes_give_an_integrity_error_never_a_crash(noise: bytes, piece: int) -> None:
    released, error = released_incrementally(noise, piece=piece)
    assert released == b""
    assert isinstance(error, IntegrityError)
    released, error = released_by_iterator(noise, read_size=piece)
    assert released == b""
    assert isinstance(error, IntegrityError)
