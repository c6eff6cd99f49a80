"""A minimal reader of the protobuf wire format, for auditing ONNX files in place.

It decodes tags, varints and length-delimited fields straight from a seekable
stream: nothing is decoded that the caller does not ask for, and every length
is checked against the enclosing message before it is used, so a hostile file
can neither make it read past its bounds nor hold more than one field in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["LEN", "VARINT", "Field", "ProtobufError", "ProtobufReader"]

VARINT, I64, LEN, I32 = 0, 1, 2, 5


class ProtobufError(ValueError):
    """The bytes are not a well-formed protobuf message."""


@dataclass(frozen=True, slots=True)
class Field:
    """One field: for ``VARINT`` and fixed fields ``value`` is the number; for ``LEN``
    it is the payload's offset and ``length`` its size."""

    number: int
    wire: int
    value: int
    length: int = 0

    @property
    def end(self) -> int:
        return self.value + self.length


class ProtobufReader:
    """Reads fields of messages that lie in ``stream`` (offsets relative to ``start``)."""

    def __init__(self, stream: BinaryIO, start: int, size: int) -> None:
        self._stream, self._start, self.size = stream, start, size

    def fields(self, start: int, end: int) -> Iterator[Field]:
        """The fields of the message occupying bytes ``start`` to ``end``."""
        if not 0 <= start <= end <= self.size:
            raise ProtobufError(f"message at {start}-{end} lies outside the {self.size} bytes")
        at = start
        while at < end:
            tag, at = self._varint(at, end)
            number, wire = tag >> 3, tag & 7
            if number == 0:
                raise ProtobufError(f"field number 0 at offset {at}")
            if wire == VARINT:
                value, at = self._varint(at, end)
                yield Field(number, wire, value)
            elif wire in (I64, I32):
                at += 8 if wire == I64 else 4
                if at > end:
                    raise ProtobufError("fixed-width field runs past its message")
                yield Field(number, wire, 0)
            elif wire == LEN:
                length, at = self._varint(at, end)
                if length > end - at:
                    raise ProtobufError(f"field {number} of {length} bytes runs past its message")
                yield Field(number, wire, at, length)
                at += length
            else:
                raise ProtobufError(f"unsupported wire type {wire} for field {number}")

    def payload(self, field: Field, limit: int) -> bytes:
        """A length-delimited field's bytes, at most ``limit`` of them (the rest are cut)."""
        if field.wire != LEN:
            raise ProtobufError(f"field {field.number} is not length-delimited")
        self._stream.seek(self._start + field.value)
        data = self._stream.read(min(field.length, limit))
        if len(data) != min(field.length, limit):
            raise ProtobufError("file ended early")
        return data

    def text(self, field: Field, limit: int = 4096) -> str:
        return self.payload(field, limit).decode("utf-8", "backslashreplace")

    def _varint(self, at: int, end: int) -> tuple[int, int]:
        self._stream.seek(self._start + at)
        data = self._stream.read(min(10, end - at))
        value = 0
        for i, byte in enumerate(data):
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                return value, at + i + 1
        raise ProtobufError(f"truncated or overlong varint at offset {at}")
