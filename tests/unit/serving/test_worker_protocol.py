"""The frames between the gateway and a model worker: round trips, and malformed input."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bastion.errors import InputError
from bastion.serving._tensors import Datatype
from bastion.serving._worker_protocol import (
    ErrorCode,
    FrameDecoder,
    FrameKind,
    datatype_of,
    decode_error,
    decode_infer,
    decode_tensors,
    encode_error,
    encode_frame,
    encode_infer,
    encode_result,
)

LIMIT = 1 << 20


def _array(datatype: Datatype, shape: tuple[int, ...]) -> st.SearchStrategy[np.ndarray[Any, Any]]:
    if datatype is Datatype.BYTES:
        count = int(np.prod(shape))
        return st.lists(st.binary(max_size=12), min_size=count, max_size=count).map(
            lambda items: _objects(items, shape)
        )
    return hnp.arrays(datatype.numpy_dtype, shape)


def _objects(items: list[bytes], shape: tuple[int, ...]) -> np.ndarray[Any, Any]:
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


@st.composite
def tensors(draw: st.DrawFn) -> dict[str, np.ndarray[Any, Any]]:
    names = draw(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=4, unique=True))
    found = {}
    for name in names:
        datatype = draw(st.sampled_from(list(Datatype)))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4))
        found[name] = draw(_array(datatype, shape))
    return found


def _same(sent: dict[str, np.ndarray[Any, Any]], got: dict[str, np.ndarray[Any, Any]]) -> None:
    assert list(got) == list(sent)
    for name, array in sent.items():
        assert got[name].shape == array.shape
        assert datatype_of(got[name]) is datatype_of(array)
        if array.dtype.kind == "O":
            assert got[name].tolist() == array.tolist()
        else:
            assert got[name].tobytes() == array.tobytes()  # bit for bit, NaN included


def _one_frame(data: bytes) -> Any:
    (frame,) = FrameDecoder(LIMIT).feed(data)
    return frame


@settings(deadline=None)
@given(tensors(), st.integers(0, 2**64 - 1))
def test_result_frames_round_trip_every_datatype(sent: Any, request_id: int) -> None:
    frame = _one_frame(encode_result(request_id, sent))
    assert (frame.kind, frame.request_id) == (FrameKind.RESULT, request_id)
    _same(sent, decode_tensors(frame.payload))


@settings(deadline=None)
@given(tensors(), st.lists(st.text(min_size=1, max_size=10), max_size=4))
def test_infer_frames_round_trip_inputs_and_output_names(sent: Any, outputs: list[str]) -> None:
    frame = _one_frame(encode_infer(7, sent, outputs))
    names, got = decode_infer(frame.payload)
    assert names == tuple(outputs)
    _same(sent, got)


def test_frames_are_aligned_so_arrays_are_read_in_place() -> None:
    sent = {"a": np.arange(3, dtype=np.uint8), "b": np.arange(6, dtype=np.float64).reshape(2, 3)}
    data = encode_result(1, sent)
    assert len(data) % 8 == 0
    got = decode_tensors(_one_frame(data).payload)
    assert got["b"].flags.aligned
    assert not got["b"].flags.writeable


def test_non_contiguous_and_large_arrays_are_sent_in_row_major_order() -> None:
    wide = np.arange(40_000, dtype=np.float32).reshape(200, 200)
    sent = {"t": wide.T, "big": wide}
    got = decode_tensors(_one_frame(encode_result(1, sent)).payload)
    assert np.array_equal(got["t"], wide.T)
    assert np.array_equal(got["big"], wide)


def test_strings_are_sent_as_utf8_bytes() -> None:
    got = decode_tensors(
        _one_frame(encode_result(1, {"s": np.array(["é", "b"], dtype=object)})).payload
    )
    assert got["s"].tolist() == ["é".encode(), b"b"]


@settings(deadline=None)
@given(st.binary(), st.integers(1, 2**64 - 1), st.sampled_from(list(FrameKind)))
def test_any_payload_survives_framing_exactly(
    payload: bytes, request_id: int, kind: FrameKind
) -> None:
    frame = _one_frame(encode_frame(kind, request_id, [payload]))
    assert (frame.kind, frame.request_id, bytes(frame.payload)) == (kind, request_id, payload)


@settings(deadline=None)
@given(st.lists(tensors(), min_size=1, max_size=4), st.data())
def test_frames_split_at_any_points_decode_the_same(
    batches: list[Any], data: st.DataObject
) -> None:
    stream = b"".join(encode_result(index, sent) for index, sent in enumerate(batches))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = FrameDecoder(LIMIT)
    frames = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        frames += decoder.feed(stream[start:end])
    assert [frame.request_id for frame in frames] == list(range(len(batches)))
    assert decoder.buffered == 0
    for frame, sent in zip(frames, batches, strict=True):
        _same(sent, decode_tensors(frame.payload))


def test_errors_carry_a_code_and_a_bounded_text() -> None:
    frame = _one_frame(encode_error(3, ErrorCode.INPUT, "bad shape " + "x" * 5000))
    code, text = decode_error(frame.payload)
    assert code is ErrorCode.INPUT
    assert text.startswith("bad shape")
    assert len(text) <= 1024


def test_a_frame_over_the_limit_is_refused_from_its_header() -> None:
    decoder = FrameDecoder(1024)
    header = encode_frame(FrameKind.LOAD, 0, [bytes(2048)])[:16]
    with pytest.raises(InputError, match="limit is 1024"):
        decoder.feed(header)
    with pytest.raises(InputError):  # the stream cannot be trusted any more
        decoder.feed(encode_frame(FrameKind.LOAD, 0, [b"ok"]))


def test_unsendable_dtypes_are_refused() -> None:
    with pytest.raises(InputError, match="complex128"):
        encode_result(1, {"c": np.zeros(2, dtype=np.complex128)})
    with pytest.raises(InputError, match="cannot be sent"):
        datatype_of(np.zeros(2, dtype=">f4"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(16, 4096))
def test_arbitrary_bytes_only_raise_the_protocol_error_and_stay_bounded(
    chunks: list[bytes], limit: int
) -> None:
    decoder = FrameDecoder(limit)
    for chunk in chunks:
        try:
            frames = decoder.feed(chunk)
        except InputError:
            return
        assert decoder.buffered <= limit + 4 + len(chunk)
        for frame in frames:
            for decode in (decode_tensors, decode_error, decode_infer):
                with contextlib.suppress(InputError):
                    decode(frame.payload)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_payloads_only_raise_the_protocol_error(payload: bytes) -> None:
    for decode in (decode_tensors, decode_error, decode_infer):
        with contextlib.suppress(InputError):
            decode(memoryview(payload))


@settings(deadline=None)
@given(
    st.integers(0, 255),
    st.integers(0, 20),
    st.lists(st.integers(0, 2**64 - 1), min_size=20, max_size=20),
    st.integers(0, 2**64 - 1),
)
def test_hostile_tensor_headers_allocate_nothing_large(
    code: int, rank: int, dims: list[int], size: int
) -> None:
    head = struct.pack(
        f"<H6xBBH4xQ{min(rank, 16)}Q", 1, code, rank, 1, size, *dims[: min(rank, 16)]
    )
    payload = head + b"n" + bytes(7) + bytes(64)
    with contextlib.suppress(InputError):
        decode_tensors(memoryview(payload))


@settings(max_examples=300, deadline=None)
@given(tensors(), st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=6))
def test_corrupted_valid_frames_only_raise_the_protocol_error(
    sent: Any, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(encode_infer(1, sent, ["out"]))
    for position, value in flips:
        data[position % len(data)] = value
    try:
        frames = FrameDecoder(LIMIT).feed(bytes(data))
    except InputError:
        return
    for frame in frames:
        with contextlib.suppress(InputError):
            decode_infer(frame.payload)
