"""Tensor data in both OIP encodings: JSON lists and the binary tensor data extension.

Decoding checks every element against the declared datatype (integers in range, booleans
for BOOL, finite numbers for FP, UTF-8 strings for BYTES) and returns a numpy array of the
declared shape. In binary, data is little-endian and row-major; a BOOL element is one byte
(0 or 1) and a BYTES element a 4-byte little-endian length followed by that many bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from bastion.errors import InputError
from bastion.serving._tensors import Datatype

__all__ = [
    "element_count",
    "tensor_from_binary",
    "tensor_from_json",
    "tensor_to_binary",
    "tensor_to_json_data",
]

_LENGTH_PREFIX = struct.Struct("<I")
_BOOL = frozenset({bool})
_INT = frozenset({int})
_NUMBER = frozenset({int, float})
_INT_RANGE = {
    datatype: (int(np.iinfo(datatype.numpy_dtype).min), int(np.iinfo(datatype.numpy_dtype).max))
    for datatype in Datatype
    if datatype.is_integer
}
#: The largest finite value of each float dtype.
_FLOAT_MAX = {
    datatype.numpy_dtype: float(np.finfo(datatype.numpy_dtype).max)
    for datatype in Datatype
    if datatype.is_float
}


def element_count(shape: Sequence[int]) -> int:
    """The number of elements in a tensor of ``shape`` (1 for a scalar)."""
    return math.prod(shape)


def _show(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def _flatten(data: object, shape: Sequence[int], what: str) -> list[Any]:
    """The elements of ``data`` in row-major order: a flat list, or lists nested as ``shape``."""
    if not isinstance(data, list):
        raise InputError(f"{what}: 'data' must be a list of values")
    count = element_count(shape)
    if len(shape) < 2 or not data or not isinstance(data[0], list):
        if len(data) != count:
            raise InputError(f"{what}: shape {_show(shape)} needs {count} values, got {len(data)}")
        return data
    flat: list[Any] = []
    pending: list[tuple[list[Any], int]] = [(data, 0)]
    while pending:  # an explicit stack: nesting depth was bounded by the JSON reader
        node, level = pending.pop()
        if len(node) != shape[level]:
            raise InputError(
                f"{what}: nested 'data' does not match shape {_show(shape)} "
                f"(a list at depth {level} has {len(node)} items, expected {shape[level]})"
            )
        if level == len(shape) - 1:
            flat.extend(node)
            continue
        if not all(isinstance(child, list) for child in node):
            raise InputError(f"{what}: nested 'data' must nest lists to depth {len(shape)}")
        pending.extend((child, level + 1) for child in reversed(node))
    return flat


def _bad_element(what: str, index: int, expected: str) -> InputError:
    return InputError(f"{what}: element {index} is not {expected}")


def _refuse_non_finite(array: np.ndarray[Any, Any], datatype: Datatype, what: str) -> None:
    if np.isfinite(array).all():
        return
    bad = int(np.flatnonzero(~np.isfinite(array))[0])
    raise InputError(
        f"{what}: element {bad} is NaN, infinite or out of range for "
        f"{datatype.value}; send finite numbers"
    )


def _finite_floats(flat: list[Any], datatype: Datatype, what: str) -> np.ndarray[Any, Any]:
    """``flat`` (ints and floats) as an array of ``datatype``, refusing what is not finite.

    The sum of the magnitudes is at least the largest magnitude, and NaN or infinite if any
    element is: when it fits the datatype, every element converts without overflow, so the
    ``np.errstate`` and the scan for non-finite values (which cost more than converting a
    small tensor) are skipped.
    """
    try:
        wide = np.array(flat, dtype=np.float64)
    except OverflowError as exc:
        raise InputError(f"{what}: a number is too large for {datatype.value}") from exc
    dtype = datatype.numpy_dtype
    if sum(map(abs, flat), 0.0) <= _FLOAT_MAX[dtype]:
        return wide if dtype == wide.dtype else wide.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        array = wide.astype(dtype)
    _refuse_non_finite(array, datatype, what)
    return array


def _convert(
    datatype: Datatype, flat: list[Any], what: str, max_bytes_element: int
) -> np.ndarray[Any, Any]:
    # Each check first tests the whole list at C speed (the types present, the extremes);
    # only a list that fails it is walked in Python, to name the first bad element.
    if datatype is Datatype.BOOL:
        if not set(map(type, flat)) <= _BOOL:
            for index, value in enumerate(flat):
                if type(value) is not bool:
                    raise _bad_element(what, index, "a boolean (true or false)")
        return np.array(flat, dtype=np.bool_)
    if datatype.is_integer:
        low, high = _INT_RANGE[datatype]
        if not (
            set(map(type, flat)) <= _INT and (not flat or low <= min(flat) <= max(flat) <= high)
        ):
            for index, value in enumerate(flat):
                if type(value) is not int or not low <= value <= high:
                    raise _bad_element(what, index, f"an integer in [{low}, {high}]")
        return np.array(flat, dtype=datatype.numpy_dtype)
    if datatype.is_float:
        if not set(map(type, flat)) <= _NUMBER:
            for index, value in enumerate(flat):
                if type(value) is not int and type(value) is not float:
                    raise _bad_element(what, index, "a number")
        return _finite_floats(flat, datatype, what)
    array = np.empty(len(flat), dtype=object)
    for index, value in enumerate(flat):
        if type(value) is not str:
            raise _bad_element(what, index, "a string")
        try:
            encoded = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise _bad_element(what, index, "valid Unicode text") from exc
        if len(encoded) > max_bytes_element:
            raise InputError(
                f"{what}: element {index} is {len(encoded)} bytes; the limit is "
                f"{max_bytes_element} bytes per BYTES element"
            )
        array[index] = encoded
    return array


def tensor_from_json(
    datatype: Datatype,
    shape: Sequence[int],
    data: object,
    *,
    max_bytes_element: int,
    what: str,
) -> np.ndarray[Any, Any]:
    """A tensor of ``shape`` from JSON ``data`` (flat, or nested exactly as ``shape``)."""
    flat = _flatten(data, shape, what)
    return _convert(datatype, flat, what, max_bytes_element).reshape(tuple(shape))


def _bytes_elements(raw: bytes, count: int, what: str, max_bytes_element: int) -> list[bytes]:
    elements: list[bytes] = []
    position = 0
    for index in range(count):
        if position + _LENGTH_PREFIX.size > len(raw):
            raise InputError(f"{what}: binary data ends before element {index}'s length")
        (length,) = _LENGTH_PREFIX.unpack_from(raw, position)
        position += _LENGTH_PREFIX.size
        if length > max_bytes_element:
            raise InputError(
                f"{what}: element {index} is {length} bytes; the limit is "
                f"{max_bytes_element} bytes per BYTES element"
            )
        if position + length > len(raw):
            raise InputError(f"{what}: binary data ends inside element {index}")
        elements.append(raw[position : position + length])
        position += length
    if position != len(raw):
        raise InputError(
            f"{what}: {len(raw) - position} bytes of binary data follow the last of "
            f"{count} elements; binary_data_size must cover exactly the tensor"
        )
    return elements


def tensor_from_binary(
    datatype: Datatype,
    shape: Sequence[int],
    raw: bytes,
    *,
    max_bytes_element: int,
    what: str,
) -> np.ndarray[Any, Any]:
    """A tensor of ``shape`` from its bytes in the binary tensor data extension."""
    count = element_count(shape)
    if datatype is Datatype.BYTES:
        array = np.empty(count, dtype=object)
        for index, element in enumerate(_bytes_elements(raw, count, what, max_bytes_element)):
            array[index] = element
        return array.reshape(tuple(shape))
    itemsize = datatype.numpy_dtype.itemsize
    if len(raw) != count * itemsize:
        raise InputError(
            f"{what}: shape {_show(shape)} of {datatype.value} needs {count * itemsize} "
            f"bytes of binary data, got {len(raw)}"
        )
    if datatype is Datatype.BOOL:
        codes = np.frombuffer(raw, dtype=np.uint8)
        bad = np.flatnonzero(codes > 1)
        if bad.size:
            raise _bad_element(what, int(bad[0]), "a boolean byte (0 or 1)")
        return codes.astype(np.bool_).reshape(tuple(shape))
    array = np.frombuffer(raw, dtype=datatype.numpy_dtype).copy()
    if datatype.is_float:
        _refuse_non_finite(array, datatype, what)
    return array.reshape(tuple(shape))


def tensor_to_binary(datatype: Datatype, array: np.ndarray[Any, Any]) -> bytes:
    """``array`` (already of ``datatype``'s dtype) in the binary tensor data extension."""
    if datatype is Datatype.BYTES:
        return b"".join(
            _LENGTH_PREFIX.pack(len(element)) + element for element in array.reshape(-1)
        )
    return np.ascontiguousarray(array, dtype=datatype.numpy_dtype).tobytes()


def tensor_to_json_data(datatype: Datatype, array: np.ndarray[Any, Any]) -> list[Any]:
    """``array``'s elements as a flat, row-major JSON list (BYTES as UTF-8 strings).

    Raises UnicodeDecodeError for a BYTES element that is not UTF-8; the caller decides
    what that means.
    """
    flat = array.reshape(-1)
    if datatype is Datatype.BYTES:
        return [element.decode("utf-8") for element in flat]
    values: list[Any] = flat.tolist()
    return values
