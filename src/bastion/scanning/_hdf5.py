"""A bounded reader of the HDF5 structures that hold a file's root-group attributes.

Keras legacy ``.h5`` models keep their architecture as JSON in the root group's
``model_config`` attribute. h5py (libhdf5) is not safe on hostile input inside the
scanner's process, so this module reads only what is needed, in pure Python, as the
HDF5 File Format Specification (version 3) lays it out:

- the superblock, versions 0 to 3, at the start of the file;
- the root group's object header, versions 1 and 2, with its continuation blocks;
- attribute messages, versions 1 to 3, whose values are fixed-length strings or
  variable-length strings kept in global heap collections.

Every address and length taken from the file is checked against the file's size and
against the limits below before anything is read, and every loop is bounded. What
lies outside this subset (attributes kept in dense storage, shared messages) is listed
in :attr:`RootAttributes.unread`, never skipped silently. Checksums are not verified:
libhdf5 refuses a block whose checksum fails, so reading it anyway reads a superset.
Where libhdf5's reading is lenient or surprising, the comments say how it is matched.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import BinaryIO

__all__ = [
    "MAX_VALUE",
    "SIGNATURE",
    "Attribute",
    "Hdf5Error",
    "Hdf5LimitError",
    "RootAttributes",
    "read_root_attributes",
]

SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: The largest string value (one attribute element) read into memory.
MAX_VALUE = 64 << 20
_MAX_CHUNKS = 256
"""Object header chunks (the first and its continuation blocks)."""
_MAX_CHUNK = 16 << 20
_MAX_HEADER = 64 << 20
"""Bytes of object header read, all chunks together."""
_MAX_MESSAGES = 1 << 16
_MAX_COLLECTION = MAX_VALUE + (1 << 20)
_MAX_HEAP = 256 << 20
"""Bytes of global heap collections and objects read, all together."""
_MAX_VALUES = 1 << 16
"""String values read, all attributes together."""
_MAX_RANK = 32  # H5S_MAX_RANK

_NIL, _ATTRIBUTE, _CONTINUATION, _ATTRIBUTE_INFO = 0x00, 0x0C, 0x10, 0x15
_SHARED_MESSAGE = 0x02  # message flag: the message itself is stored elsewhere
_STRING, _VLEN = 3, 9  # datatype classes
_VLEN_STRING = 1


class Hdf5Error(ValueError):
    """The bytes are not HDF5 as the specification lays it out (or the file is cut short)."""


class Hdf5LimitError(Hdf5Error):
    """Reading the root attributes needs more than a limit of this module allows."""


@dataclass(frozen=True, slots=True)
class Attribute:
    """One attribute of the root group.

    ``strings`` holds each element's bytes for string types (fixed-length elements
    with their trailing NULs removed, as numpy does; variable-length ones as stored);
    it is empty for every other datatype, whose values are not read. ``copies`` holds
    (element, bytes) for the heap objects that libhdf5 would pass over because a later
    object in the same collection has the same index: other readers may not.
    """

    name: str
    is_string: bool
    strings: tuple[bytes, ...] = ()
    copies: tuple[tuple[int, bytes], ...] = ()


@dataclass(slots=True)
class RootAttributes:
    """The root group's attributes, and what could not be read, each with its reason."""

    superblock: int
    attributes: list[Attribute] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)


def read_root_attributes(stream: BinaryIO) -> RootAttributes:
    """Read the attributes of the root group of the HDF5 file in ``stream``.

    The stream is read from its current position, which must be the superblock's.
    Raises :class:`Hdf5Error` (:class:`Hdf5LimitError` for a limit) when the structure
    cannot be read; the caller reports that as a finding.
    """
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END) - start
    return _Reader(stream, start, size).root()


def _uint(data: bytes, at: int, n: int) -> int:
    if at < 0 or at + n > len(data):
        raise Hdf5Error(f"a {n}-byte field at {at} runs past its {len(data)}-byte structure")
    return int.from_bytes(data[at : at + n], "little")


def _align8(n: int) -> int:
    return (n + 7) & ~7


class _Reader:
    def __init__(self, stream: BinaryIO, start: int, size: int) -> None:
        self.stream, self.start, self.size = stream, start, size
        self.offsets = self.lengths = 8
        self.header_bytes = self.heap_bytes = self.values = 0
        self.collections: dict[int, dict[int, list[tuple[int, int]]]] = {}

    def read(self, addr: int, n: int, what: str) -> bytes:
        if addr < 0 or n < 0 or addr + n > self.size:
            raise Hdf5Error(
                f"{what} at offset {addr} ({n} bytes) lies past the end of the "
                f"{self.size}-byte file"
            )
        self.stream.seek(self.start + addr)
        data = self.stream.read(n)
        if len(data) != n:
            raise Hdf5Error(f"the file ended early while reading {what}")
        return data

    def undefined(self, addr: int) -> bool:
        return addr == (1 << (8 * self.offsets)) - 1

    # --- superblock ----------------------------------------------------------------

    def root(self) -> RootAttributes:
        head = self.read(0, 16, "superblock")
        if head[:8] != SIGNATURE:
            raise Hdf5Error("no HDF5 signature at the start of the file")
        version = head[8]
        if version in (0, 1):
            self.sizes(head[13], head[14])
            # base, free-space, end-of-file and driver addresses, then the root group's
            # symbol table entry: link name offset, object header address, ...
            at = 24 + (4 if version == 1 else 0)
            body = self.read(at, 6 * self.offsets, "superblock")
            root_at = 5
        elif version in (2, 3):
            self.sizes(head[9], head[10])
            # base, superblock extension, end-of-file and root object header addresses.
            body = self.read(12, 4 * self.offsets, "superblock")
            root_at = 3
        else:
            raise Hdf5Error(f"superblock version {version} is not one of 0-3")
        base, eof = _uint(body, 0, self.offsets), _uint(body, 2 * self.offsets, self.offsets)
        result = RootAttributes(superblock=version)
        # libhdf5 takes the superblock's own offset (0 here) as the base address, and
        # shifts the end-of-file address by the difference; a file shorter than that
        # end is refused as truncated.
        if eof - base > self.size:
            result.unread.append(
                f"the file is truncated: its superblock says it ends at byte {eof - base}, "
                f"but it has {self.size} bytes"
            )
        self.object_header(_uint(body, root_at * self.offsets, self.offsets), result)
        return result

    def sizes(self, offsets: int, lengths: int) -> None:
        if offsets not in (2, 4, 8, 16, 32) or lengths not in (2, 4, 8, 16, 32):
            raise Hdf5Error(f"sizes of offsets ({offsets}) and lengths ({lengths}) are invalid")
        self.offsets, self.lengths = offsets, lengths

    # --- object header -------------------------------------------------------------

    def object_header(self, addr: int, out: RootAttributes) -> None:
        """Every message of the object header at ``addr``, chunk by chunk."""
        if self.read(addr, 4, "the root object header") == b"OHDR":
            v2 = True
            pre = self.read(addr, 6, "the root object header")
            flags = pre[5]
            if pre[4] != 2:
                raise Hdf5Error(f"object header version {pre[4]} is not 2")
            at = addr + 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
            width = 1 << (flags & 0x03)
            first = (at + width, _uint(self.read(at, width, "object header size"), 0, width))
        else:
            v2, flags = False, 0
            pre = self.read(addr, 16, "the root object header")
            if pre[0] != 1:
                raise Hdf5Error(f"object header version {pre[0]} is not 1 or 2")
            first = (addr + 16, _uint(pre, 8, 4))
        chunks, seen, messages = [first], {addr}, 0
        while chunks:
            if len(seen) > _MAX_CHUNKS:
                raise Hdf5LimitError(f"the root object header has over {_MAX_CHUNKS} chunks")
            at, length = chunks.pop(0)
            if length > _MAX_CHUNK or self.header_bytes + length > _MAX_HEADER:
                raise Hdf5LimitError(f"object header chunk of {length} bytes is over the limit")
            self.header_bytes += length
            chunk = self.read(at, length, "an object header chunk")
            for kind, mflags, data in _messages(chunk, v2=v2, order=bool(flags & 0x04)):
                messages += 1
                if messages > _MAX_MESSAGES:
                    raise Hdf5LimitError(f"over {_MAX_MESSAGES} object header messages")
                if kind == _CONTINUATION:
                    chunks.append(self.continuation(data, v2, seen))
                elif kind == _ATTRIBUTE and mflags & _SHARED_MESSAGE:
                    out.unread.append("an attribute is a shared message, kept outside the header")
                elif kind == _ATTRIBUTE:
                    out.attributes.append(self.attribute(data, out))
                elif kind == _ATTRIBUTE_INFO:
                    self.attribute_info(data, out)

    def continuation(self, data: bytes, v2: bool, seen: set[int]) -> tuple[int, int]:
        addr = _uint(data, 0, self.offsets)
        length = _uint(data, self.offsets, self.lengths)
        if addr in seen:
            raise Hdf5Error(f"object header continuation loops back to offset {addr}")
        seen.add(addr)
        if not v2:
            return addr, length
        if length < 8 or self.read(addr, 4, "a continuation block") != b"OCHK":
            raise Hdf5Error(f"no continuation block (OCHK) at offset {addr}")
        return addr + 4, length - 8  # signature and checksum

    def attribute_info(self, data: bytes, out: RootAttributes) -> None:
        flags = _uint(data, 1, 1)
        heap = _uint(data, 2 + (2 if flags & 0x01 else 0), self.offsets)
        if not self.undefined(heap):
            out.unread.append(
                "attributes are kept in dense storage (a fractal heap), which is not read"
            )

    # --- attribute message ---------------------------------------------------------

    def attribute(self, data: bytes, out: RootAttributes) -> Attribute:
        version = _uint(data, 0, 1)
        if version not in (1, 2, 3):
            raise Hdf5Error(f"attribute message version {version} is not 1, 2 or 3")
        flags = _uint(data, 1, 1) if version > 1 else 0
        name_size, type_size, space_size = (_uint(data, at, 2) for at in (2, 4, 6))
        pad = _align8 if version == 1 else (lambda n: n)
        at = 9 if version == 3 else 8
        if name_size == 0:
            raise Hdf5Error("attribute with an empty name field")
        # libhdf5 copies the name up to its first NUL (strndup of name_size - 1 bytes).
        raw_name = data[at : at + name_size - 1].split(b"\x00", 1)[0]
        name = raw_name.decode("utf-8", "replace")
        shown = repr(name[:100])
        at += pad(name_size)
        dtype = data[at : at + type_size]
        at += pad(type_size)
        space = data[at : at + space_size]
        at += pad(space_size)
        if at > len(data):
            raise Hdf5Error(f"attribute {shown} is longer than its message")
        if flags & 0x03:
            out.unread.append(f"attribute {shown} has a shared datatype or dataspace")
            return Attribute(name, is_string=False)
        kind = self.datatype(dtype)
        if kind is None:
            return Attribute(name, is_string=False)
        count = self.elements(space)
        width = kind if kind > 0 else 8 + self.offsets  # vlen: length, collection, index
        if count * width > len(data) - at:
            raise Hdf5Error(f"attribute {shown} holds less data than its dataspace needs")
        self.values += count
        if self.values > _MAX_VALUES:
            raise Hdf5LimitError(f"over {_MAX_VALUES} string values in root attributes")
        cells = [data[at + i * width : at + (i + 1) * width] for i in range(count)]
        if kind > 0:
            return Attribute(name, True, tuple(cell.rstrip(b"\x00") for cell in cells))
        read = [self.vlen(cell) for cell in cells]
        copies = tuple((i, value) for i, values in enumerate(read) for value in values[:-1])
        return Attribute(name, True, tuple(values[-1] for values in read), copies)

    def datatype(self, dtype: bytes) -> int | None:
        """Bytes per element of a fixed string, 0 for a variable-length string, else None."""
        cls, bits, size = _uint(dtype, 0, 1) & 0x0F, _uint(dtype, 1, 3), _uint(dtype, 4, 4)
        if cls == _STRING:
            if size == 0:
                raise Hdf5Error("fixed-length string datatype of size 0")
            return size
        if cls == _VLEN and bits & 0x0F == _VLEN_STRING:
            return 0
        return None

    def elements(self, space: bytes) -> int:
        version, rank, flags = _uint(space, 0, 1), _uint(space, 1, 1), _uint(space, 2, 1)
        if version == 1:
            kind, at = (0 if rank == 0 else 1), 8
        elif version == 2:
            kind, at = _uint(space, 3, 1), 4
        else:
            raise Hdf5Error(f"dataspace message version {version} is not 1 or 2")
        if kind == 2:  # null: no elements
            return 0
        if kind == 0:  # scalar
            return 1
        if kind != 1 or rank > _MAX_RANK or rank == 0:
            raise Hdf5Error(f"dataspace of type {kind} and rank {rank} is invalid")
        count = 1
        for i in range(rank):
            count *= _uint(space, at + i * self.lengths, self.lengths)
            count = min(count, _MAX_VALUES + 1)  # more than that fails the data check
        if flags & 0x01:  # maximum dimensions follow; they must be present
            _uint(space, at + (2 * rank - 1) * self.lengths, self.lengths)
        return count

    # --- global heap ---------------------------------------------------------------

    def vlen(self, cell: bytes) -> list[bytes]:
        """The stored bytes of one variable-length string: each copy of its heap object."""
        length = _uint(cell, 0, 4)
        addr, index = _uint(cell, 4, self.offsets), _uint(cell, 4 + self.offsets, 4)
        if addr == 0:  # libhdf5 reads nothing for address 0 (an empty or null string)
            return [b""]
        if length > MAX_VALUE:
            raise Hdf5LimitError(f"a string of {length} bytes is larger than {MAX_VALUE}")
        objects = self.collection(addr).get(index)
        if not objects:
            raise Hdf5Error(f"no object {index} in the global heap collection at {addr}")
        found = []
        for begin, size in objects:
            if size > MAX_VALUE:
                raise Hdf5LimitError(f"a heap object of {size} bytes is larger than {MAX_VALUE}")
            self.heap_bytes += size
            if self.heap_bytes > _MAX_HEAP:
                raise Hdf5LimitError(f"strings total over {_MAX_HEAP} bytes")
            found.append(self.read(begin, size, "a global heap object"))
        return found

    def collection(self, addr: int) -> dict[int, list[tuple[int, int]]]:
        """Index -> (offset, size) of each object in the collection at ``addr``.

        libhdf5 lets a later object with the same index replace an earlier one; every
        one of them is kept here, so each is read.
        """
        if addr in self.collections:
            return self.collections[addr]
        head = self.read(addr, 8 + self.lengths, "a global heap collection")
        if head[:4] != b"GCOL" or head[4] != 1:
            raise Hdf5Error(f"no global heap collection (GCOL version 1) at offset {addr}")
        size = _uint(head, 8, self.lengths)
        if size > _MAX_COLLECTION or self.heap_bytes + size > _MAX_HEAP:
            raise Hdf5LimitError(f"global heap collection of {size} bytes is over the limit")
        self.heap_bytes += size
        body = self.read(addr, size, "a global heap collection")
        objects: dict[int, list[tuple[int, int]]] = {}
        # The collection's header and each object's (index, reference count, reserved,
        # size) are padded to 8 bytes, and so is each object's data.
        header = at = _align8(8 + self.lengths)
        while at + header <= size:
            index, length = _uint(body, at, 2), _uint(body, at + 8, self.lengths)
            need = length if index == 0 else header + _align8(length)
            if need <= 0 or at + need > size or (index and at + header + length > size):
                raise Hdf5Error(f"global heap object at offset {addr + at} overruns its collection")
            if index:
                objects.setdefault(index, []).append((addr + at + header, length))
            at += need
        self.collections[addr] = objects
        return objects


def _messages(chunk: bytes, *, v2: bool, order: bool) -> list[tuple[int, int, bytes]]:
    """(type, flags, data) of each message in one object header chunk."""
    found = []
    header = (6 if order else 4) if v2 else 8
    at = 0
    while at + header <= len(chunk):
        if v2:
            kind, size, flags = chunk[at], _uint(chunk, at + 1, 2), chunk[at + 3]
        else:
            kind, size, flags = _uint(chunk, at, 2), _uint(chunk, at + 2, 2), chunk[at + 4]
            if size % 8:
                raise Hdf5Error(f"version 1 header message of {size} bytes is not 8-aligned")
        at += header
        if at + size > len(chunk):
            raise Hdf5Error(f"header message of type {kind} runs past its chunk")
        if kind != _NIL:
            found.append((kind, flags, chunk[at : at + size]))
        at += size
    return found
