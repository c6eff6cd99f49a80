"""Messages between the gateway and a model worker: length-prefixed binary frames.

A frame is a 16-byte header (all little-endian: body length u32, counting every byte after
itself; kind u8; padding length u8; two zero bytes; request id u64), then the payload and
0-7 zero bytes of padding, so that every frame is a multiple of 8 bytes long. Payloads:

- ``LOAD`` (gateway to worker, once): the model file's bytes.
- ``READY`` (worker, once): UTF-8 JSON with the model's signature and the protections applied.
- ``INFER``: the names of the outputs wanted, then the input tensors.
- ``RESULT``: the output tensors. ``ERROR``: an :class:`ErrorCode` byte and a short UTF-8 text.

A names block is a count (u16, six zero bytes), then each name as a u16 length and its UTF-8
bytes, padded to 8. A tensors block is a count (u16, six zero bytes), then each tensor:
datatype code (u8), rank (u8), name length (u16), four zero bytes, data length (u64), the
dimensions (u64 each), the name padded to 8 and the data padded to 8; BYTES data is each
element as a u32 length then its bytes. Data starts at a multiple of 8 within the frame, so
arrays read in place are aligned. Malformed input raises :class:`InputError` and nothing
else; a decoder never buffers more than one frame of ``max_frame_bytes``.
"""

from __future__ import annotations

import enum
import functools
import math
import struct
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from bastion.errors import InputError
from bastion.serving._tensors import MAX_RANK, Datatype

__all__ = [
    "READ_SIZE",
    "ErrorCode",
    "Frame",
    "FrameDecoder",
    "FrameKind",
    "datatype_of",
    "decode_error",
    "decode_infer",
    "decode_tensors",
    "encode_error",
    "encode_frame",
    "encode_infer",
    "encode_result",
]

_HEADER = struct.Struct("<IBBxxQ")
_LENGTH = struct.Struct("<I")
#: Bytes counted by the length field before the payload: kind, padding, reserved, id.
_AFTER_LENGTH = _HEADER.size - 4
_COUNT = struct.Struct("<H6x")
_NAME_LENGTH = struct.Struct("<H")
_ELEMENT_LENGTH = struct.Struct("<I")
_ERROR = struct.Struct("<B")
_ZEROS = bytes(8)
#: Longest error text sent, in bytes.
MAX_ERROR_BYTES = 1024
#: The most either side reads from its pipe at once. ``os.read`` allocates the size asked
#: before it reads: a 1 MiB buffer is mapped and unmapped on every call (25 µs a read here,
#: against 1.4 µs for 64 KiB). Big frames take several reads.
READ_SIZE = 1 << 16
#: Arrays up to this size are copied out with ``tobytes``; larger ones are sent in place.
_SMALL_ARRAY_BYTES = 1 << 16


class FrameKind(enum.IntEnum):
    """What a frame carries."""

    LOAD = 1
    READY = 2
    INFER = 3
    RESULT = 4
    ERROR = 5


class ErrorCode(enum.IntEnum):
    """Why a worker answered ERROR: the caller's input, the model file, or a fault."""

    INPUT = 1
    LOAD = 2
    INTERNAL = 3


class Frame(NamedTuple):
    """One decoded frame; ``payload`` excludes the header and the padding."""

    kind: FrameKind
    request_id: int
    payload: memoryview


_KINDS = {kind.value: kind for kind in FrameKind}
_CODES: dict[Datatype, int] = {datatype: code for code, datatype in enumerate(Datatype, 1)}
_DATATYPES: dict[int, Datatype] = {code: datatype for datatype, code in _CODES.items()}
_DTYPES: dict[int, np.dtype[Any]] = {
    code: datatype.numpy_dtype for datatype, code in _CODES.items() if datatype.itemsize
}
_CODE_OF_DTYPE: dict[np.dtype[Any], int] = {dtype: code for code, dtype in _DTYPES.items()}
_BYTES_CODE = _CODES[Datatype.BYTES]
_BOOL_CODE = _CODES[Datatype.BOOL]
#: A tensor's header and dimensions, by rank: code, rank, name length, data length, dims.
_TENSOR_HEADS = tuple(struct.Struct(f"<BBH4xQ{rank}Q") for rank in range(MAX_RANK + 1))


def _padding(length: int) -> int:
    return -length % 8


def _refuse(what: str) -> InputError:
    return InputError(f"worker protocol: {what}")


def datatype_of(array: np.ndarray[Any, Any]) -> Datatype:
    """The datatype of ``array``'s dtype: object arrays are BYTES; InputError for others."""
    if array.dtype.kind == "O":
        return Datatype.BYTES
    code = _CODE_OF_DTYPE.get(array.dtype)
    if code is None:
        raise _refuse(f"arrays of dtype {array.dtype} cannot be sent; use a tensor datatype")
    return _DATATYPES[code]


def encode_frame(kind: FrameKind, request_id: int, parts: Sequence[Any]) -> bytes:
    """A whole frame of ``kind`` whose payload is ``parts`` (bytes-like) joined."""
    size = sum(map(len, parts))
    pad = -size % 8
    header = _HEADER.pack(_AFTER_LENGTH + size + pad, kind, pad, request_id)
    return b"".join((header, *parts, _ZEROS[:pad]))


@functools.lru_cache(maxsize=4096)
def _name(name: str) -> tuple[int, bytes]:
    encoded = name.encode("utf-8")
    return len(encoded), encoded + _ZEROS[: _padding(len(encoded))]


def _bytes_data(array: np.ndarray[Any, Any]) -> bytes:
    pieces: list[bytes] = []
    for element in array.reshape(-1):
        raw = element.encode("utf-8") if isinstance(element, str) else bytes(element)
        pieces += (_ELEMENT_LENGTH.pack(len(raw)), raw)
    return b"".join(pieces)


def _append_tensors(parts: list[Any], tensors: Mapping[str, np.ndarray[Any, Any]]) -> None:
    parts.append(_COUNT.pack(len(tensors)))
    for name, array in tensors.items():
        name_length, name_padded = _name(name)
        data: Any
        if array.dtype.kind == "O":
            code, data = _BYTES_CODE, _bytes_data(array)
        else:
            code = _CODE_OF_DTYPE.get(array.dtype, 0)
            if not code:
                raise _refuse(f"arrays of dtype {array.dtype} cannot be sent")
            if array.nbytes <= _SMALL_ARRAY_BYTES:
                data = array.tobytes()
            else:
                data = np.ascontiguousarray(array).reshape(-1).data.cast("B")
        size = len(data)
        parts += (
            _TENSOR_HEADS[array.ndim].pack(code, array.ndim, name_length, size, *array.shape),
            name_padded,
            data,
            _ZEROS[: -size % 8],
        )


def encode_infer(
    request_id: int, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]
) -> bytes:
    """An INFER frame asking for ``outputs`` of ``inputs``."""
    parts: list[Any] = [_COUNT.pack(len(outputs))]
    names = b"".join(_NAME_LENGTH.pack(len(raw)) + raw for raw in map(str.encode, outputs))
    parts += (names, _ZEROS[: _padding(len(names))])
    _append_tensors(parts, inputs)
    return encode_frame(FrameKind.INFER, request_id, parts)


def encode_result(request_id: int, outputs: Mapping[str, np.ndarray[Any, Any]]) -> bytes:
    """A RESULT frame carrying ``outputs``."""
    parts: list[Any] = []
    _append_tensors(parts, outputs)
    return encode_frame(FrameKind.RESULT, request_id, parts)


def encode_error(request_id: int, code: ErrorCode, text: str) -> bytes:
    """An ERROR frame: ``code`` and ``text`` cut to :data:`MAX_ERROR_BYTES` bytes."""
    encoded = text.encode("utf-8")[:MAX_ERROR_BYTES]
    return encode_frame(FrameKind.ERROR, request_id, [_ERROR.pack(code), encoded])


def decode_error(payload: memoryview) -> tuple[ErrorCode, str]:
    """The code and text of an ERROR payload."""
    if len(payload) < 1 or payload[0] not in ErrorCode._value2member_map_:
        raise _refuse("an error frame without a known error code")
    return ErrorCode(payload[0]), bytes(payload[1:]).decode("utf-8", errors="replace")


def _text(payload: memoryview, start: int, end: int, what: str) -> str:
    if end > len(payload):
        raise _refuse(f"the payload ends inside {what}")
    try:
        return str(payload[start:end], "utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse(f"{what} is not UTF-8") from exc


def _decode_names(payload: memoryview) -> tuple[tuple[str, ...], int]:
    (count,) = _COUNT.unpack_from(payload, 0)
    position = _COUNT.size
    names = []
    for _ in range(count):
        (length,) = _NAME_LENGTH.unpack_from(payload, position)
        position += _NAME_LENGTH.size
        names.append(_text(payload, position, position + length, "an output name"))
        position += length
    return tuple(names), position + _padding(position)


def _decode_bytes(data: memoryview, count: int) -> np.ndarray[Any, Any]:
    if count * _ELEMENT_LENGTH.size > len(data):
        raise _refuse(f"{len(data)} bytes cannot hold {count} BYTES elements")
    array = np.empty(count, dtype=object)
    position = 0
    for index in range(count):
        (length,) = _ELEMENT_LENGTH.unpack_from(data, position)
        position += _ELEMENT_LENGTH.size + length
        if position > len(data):
            raise _refuse("the payload ends inside a BYTES element")
        array[index] = bytes(data[position - length : position])
    if position != len(data):
        raise _refuse("BYTES data longer than its elements")
    return array


def _decode_tensors(payload: memoryview, position: int) -> dict[str, np.ndarray[Any, Any]]:
    (count,) = _COUNT.unpack_from(payload, position)
    position += _COUNT.size
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    for _ in range(count):
        code, rank = payload[position], payload[position + 1]
        if rank > MAX_RANK:
            raise _refuse(f"a tensor of rank {rank}; at most {MAX_RANK} dimensions")
        head = _TENSOR_HEADS[rank].unpack_from(payload, position)
        position += _TENSOR_HEADS[rank].size
        name_length, size, shape = head[2], head[3], head[4:]
        name = _text(payload, position, position + name_length, "a tensor name")
        position += name_length + _padding(name_length)
        end = position + size
        if not name or end > len(payload) or name in tensors:
            raise _refuse("a tensor with no name, a repeated name or data past the payload")
        dtype = _DTYPES.get(code)
        if dtype is not None:
            elements = math.prod(shape)
            if elements * dtype.itemsize != size:
                raise _refuse(f"tensor {name!r}: {size} bytes do not fit shape {list(shape)}")
            array = np.frombuffer(payload, dtype, elements, position).reshape(shape)
            if code == _BOOL_CODE and payload[position:end].tobytes().translate(None, b"\0\1"):
                raise _refuse(f"tensor {name!r}: BOOL bytes must be 0 or 1")
        elif code == _BYTES_CODE:
            array = _decode_bytes(payload[position:end], math.prod(shape)).reshape(shape)
        else:
            raise _refuse(f"tensor {name!r} has unknown datatype code {code}")
        tensors[name] = array
        position = end + _padding(size)
    if position != len(payload):
        raise _refuse("bytes follow the last tensor")
    return tensors


def decode_tensors(payload: memoryview) -> dict[str, np.ndarray[Any, Any]]:
    """The tensors of a RESULT payload; arrays are read-only views of ``payload``."""
    try:
        return _decode_tensors(payload, 0)
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise _refuse(f"a malformed tensor ({exc})") from exc


def decode_infer(payload: memoryview) -> tuple[tuple[str, ...], dict[str, np.ndarray[Any, Any]]]:
    """The output names and input tensors of an INFER payload."""
    try:
        outputs, position = _decode_names(payload)
        return outputs, _decode_tensors(payload, position)
    except (struct.error, IndexError, ValueError, OverflowError) as exc:
        raise _refuse(f"a malformed name or tensor ({exc})") from exc


class FrameDecoder:
    """Splits a byte stream into frames, refusing any frame over ``max_frame_bytes``.

    After a refusal the stream cannot be trusted: every later :meth:`feed` refuses too.
    """

    def __init__(self, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._pending = bytearray()
        self._broken: InputError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete."""
        return len(self._pending)

    def _frame_at(self, view: memoryview, position: int) -> tuple[Frame | None, int]:
        if len(view) - position < _HEADER.size:
            return None, position
        length, kind, pad, request_id = _HEADER.unpack_from(view, position)
        if length > self.max_frame_bytes or length < _AFTER_LENGTH or (length + 4) % 8:
            raise _refuse(
                f"a frame of {length} bytes (the limit is {self.max_frame_bytes}, "
                "frames are multiples of 8 bytes)"
            )
        if kind not in _KINDS or pad > min(7, length - _AFTER_LENGTH):
            raise _refuse(f"a frame of unknown kind {kind} or padding {pad}")
        end = position + 4 + length
        if end > len(view):
            return None, position
        frame = Frame(_KINDS[kind], request_id, view[position + _HEADER.size : end - pad])
        return frame, end

    def feed(self, data: bytes) -> list[Frame]:
        """The frames completed by ``data``; InputError if the stream is malformed."""
        if self._broken is not None:
            raise InputError(self._broken.message)
        try:
            return self._split(data)
        except InputError as exc:
            self._broken = exc
            self._pending = bytearray()
            raise

    def _first_frame_size(self, buffer: bytes | bytearray, position: int) -> int:
        """Bytes needed for the frame at ``position``: its whole size once its length is known."""
        if len(buffer) - position < 4:
            return _HEADER.size
        length: int = _LENGTH.unpack_from(buffer, position)[0]
        if length > self.max_frame_bytes:
            raise _refuse(f"a frame of {length} bytes (the limit is {self.max_frame_bytes})")
        return max(_HEADER.size, 4 + length)

    def _split(self, data: bytes) -> list[Frame]:
        if self._pending:
            self._pending += data
            if len(self._pending) < self._first_frame_size(self._pending, 0):
                return []
            buffer = bytes(self._pending)  # copied once per frame that spans reads
        else:
            buffer = data
        view = memoryview(buffer)
        frames: list[Frame] = []
        position = 0
        while True:
            frame, position = self._frame_at(view, position)
            if frame is None:
                break
            frames.append(frame)
        self._first_frame_size(buffer, position)  # refuse an oversized length early
        self._pending = bytearray(view[position:])
        return frames
