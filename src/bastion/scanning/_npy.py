"""numpy ``.npy`` files: a literal header, then raw data or, for object arrays, a pickle.

The header is a Python dict literal; it is read with ``ast.literal_eval`` (which
evaluates literals only, never code) after bounding its size. An object dtype
means ``np.load(..., allow_pickle=True)`` unpickles the payload, so it is audited
as a pickle.
"""

from __future__ import annotations

import ast
import io
import math
import re
import struct
from typing import Any, BinaryIO

from bastion.scanning._context import ScanContext
from bastion.scanning._lenient import as_loaders_read
from bastion.scanning._report import Severity
from bastion.scanning._streams import SeekableSlice, as_binary

__all__ = ["scan_npy"]

#: numpy itself refuses headers over 10,000 bytes unless told otherwise.
MAX_HEADER = 64 << 10

_SIMPLE = re.compile(r"^[<>|=]?([a-zA-Z])(\d*)(\[\w+\])?$")
_UNIT = {"U": 4}


def scan_npy(ctx: ScanContext, stream: BinaryIO, member: str | None, fmt: str, depth: int) -> None:
    prefix = stream.read(8)
    major = prefix[6] if len(prefix) == 8 else 0
    if major not in (1, 2, 3):
        ctx.incomplete(f"unknown .npy version {major}; not scanned", format=fmt, member=member)
        return
    layout = "<H" if major == 1 else "<I"
    (length,) = struct.unpack(layout, stream.read(struct.calcsize(layout)))
    if length > MAX_HEADER:
        ctx.limit(f".npy header of {length} bytes is too large", format=fmt, member=member)
        return
    header = _parse_header(stream.read(length), major)
    if header is None:
        ctx.incomplete(
            ".npy header is not a valid literal dict; not scanned", format=fmt, member=member
        )
        return
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END) - start
    descr, shape = header["descr"], header["shape"]
    if _has_object(descr):
        ctx.add(
            "numpy.object-array",
            Severity.INFO,
            "object array: loading it needs allow_pickle=True; its pickle was audited",
            format=fmt,
            member=member,
        )
        with as_binary(SeekableSlice(stream, start, size)) as payload:
            ctx.pickle(payload, member, fmt, depth=depth)
        return
    ctx.mark_scanned(fmt, member)
    itemsize = _itemsize(descr)
    if itemsize is not None and math.prod(shape) * itemsize != size:
        ctx.add(
            "numpy.size-mismatch",
            Severity.MEDIUM,
            f"array data is {size} bytes but its header describes "
            f"{math.prod(shape) * itemsize}; extra bytes may hide a payload",
            format=fmt,
            member=member,
            offset=start,
        )


def _parse_header(raw: bytes, major: int) -> dict[str, Any] | None:
    try:
        text = raw.decode("utf-8" if major == 3 else "latin-1")
        with as_loaders_read():
            value = ast.literal_eval(text)
    except (ValueError, SyntaxError, UnicodeDecodeError, RecursionError, MemoryError, TypeError):
        return None
    if not isinstance(value, dict) or set(value) != {"descr", "fortran_order", "shape"}:
        return None
    shape = value["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        return None
    return value


def _has_object(descr: object, depth: int = 0) -> bool:
    """Whether the dtype holds Python objects (anything unrecognised counts as yes)."""
    if isinstance(descr, str):
        match = _SIMPLE.match(descr)
        return match is None or match.group(1) == "O"
    if not isinstance(descr, list) or depth > 32:
        return True
    for field in descr:
        if not isinstance(field, tuple) or len(field) not in (2, 3):
            return True
        if _has_object(field[1], depth + 1):
            return True
    return False


def _itemsize(descr: object) -> int | None:
    """Bytes per item of a simple dtype; ``None`` where it is not worth computing."""
    if not isinstance(descr, str):
        return None
    match = _SIMPLE.match(descr)
    if match is None or not match.group(2):
        return None
    kind, digits = match.group(1), match.group(2)
    if kind in ("M", "m"):
        return 8
    return int(digits) * _UNIT.get(kind, 1)
