"""TensorFlow tensor bundles: the ``variables.index`` of a SavedModel or a checkpoint.

The index is an SSTable in LevelDB's table format, which TensorFlow keeps its own copy of:
data blocks of prefix-compressed entries (shared and unshared key lengths, value length,
as varints) closed by restart points (uint32 offsets of entries that share nothing, then
their count); each block followed by a compression byte and a CRC-32C; an index block whose
values are the data blocks' handles (varint offset, varint size); a metaindex block; and a
48-byte footer holding the metaindex and index handles and ending in the magic number
``0xdb4775248b80fb57``. Key ``""`` holds a ``BundleHeaderProto`` (num_shards 1, endianness 2,
version 3); every other key names a tensor and holds a ``BundleEntryProto`` (dtype 1, shape
2, shard_id 3, offset 4, size 5, crc32c 6, slices 7) whose bytes lie in the data shard
``<prefix>.data-<shard_id:05d>-of-<num_shards:05d>`` beside ``<prefix>.index``.

Every handle is checked against the file before it is read; blocks, keys and entries are
bounded; restart points must fall on entries that share nothing and keys must strictly
increase, so the entries read here in order are those TensorFlow's seeks find. TensorFlow
writes the index uncompressed, so a compressed block is not read. Block checksums are not
verified (TensorFlow refuses a block whose checksum is wrong). Tensor bytes are never read:
each shard the header declares is checked to be a plain file beside the index that holds
every entry's byte range, and is then recorded in ``ScanContext.raw_data``, so that a folder
scan lists it as ``tf-tensor-bundle-data`` rather than as an unknown format.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from bastion.scanning._context import ScanContext
from bastion.scanning._neighbours import Neighbours, lexists
from bastion.scanning._protobuf import I32, LEN, VARINT, ProtobufError, ProtobufReader
from bastion.scanning._report import Severity

__all__ = ["DATA_FORMAT", "FOOTER_SIZE", "FORMAT", "is_table_footer", "scan_tf_bundle"]

FORMAT = "tf-tensor-bundle"
DATA_FORMAT = "tf-tensor-bundle-data"
FOOTER_SIZE = 48
_MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
_TRAILER = 5
"""Compression type byte and masked CRC-32C after every block."""
_MAX_BLOCK = 64 << 20
_MAX_ENTRIES = 2_000_000
_MAX_KEY = 64 << 10
_MAX_KEY_BYTES = 256 << 20
"""Key bytes rebuilt from prefix compression, over the whole table."""
_MAX_SHARDS = 100_000
_SHOWN = 20
_U64 = 1 << 64


def is_table_footer(tail: bytes) -> bool:
    """Whether ``tail``, the last bytes of a file, ends in the table magic number."""
    return len(tail) >= FOOTER_SIZE and tail.endswith(_MAGIC)


class _Malformed(ValueError):
    pass


class _Refused(ValueError):
    """A well-formed table that this reader does not read (compressed, over a limit)."""

    def __init__(self, message: str, rule: str) -> None:
        super().__init__(message)
        self.rule = rule


def _varint(data: bytes, at: int, end: int, bits: int) -> tuple[int, int]:
    value = shift = 0
    while at < end and shift < bits:
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at += 1
        if not byte & 0x80:
            if value >> bits:
                raise _Malformed(f"varint over {bits} bits at offset {at}")
            return value, at
        shift += 7
    raise _Malformed(f"truncated or overlong varint at offset {at}")


class _Table:
    """The entries of an SSTable of ``size`` bytes at ``start`` in ``stream``, in key order."""

    def __init__(self, stream: BinaryIO, start: int, size: int) -> None:
        self._stream, self._start, self._size = stream, start, size
        self._key_bytes = 0
        self.entries = 0

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        footer = self._read(self._size - FOOTER_SIZE, FOOTER_SIZE)
        if not footer.endswith(_MAGIC):
            raise _Malformed("no table magic number at the end")
        _metaindex, at = self._handle(footer, 0, FOOTER_SIZE - 8)
        index, _ = self._handle(footer, at, FOOTER_SIZE - 8)
        previous: bytes | None = None
        last_separator: bytes | None = None
        for separator, value in self._block_items(self._block(index)):
            if last_separator is not None and separator <= last_separator:
                raise _Malformed("index block keys are not in increasing order")
            last_separator = separator
            handle, used = self._handle(value, 0, len(value))
            if used != len(value):
                raise _Malformed("index entry holds more than a block handle")
            for key, item in self._block_items(self._block(handle)):
                if previous is not None and key <= previous:
                    raise _Malformed(f"key {_shown(key)} is not after {_shown(previous)}")
                if key > separator:
                    raise _Malformed(f"key {_shown(key)} lies after its block's index key")
                previous = key
                yield key, item

    def _handle(self, data: bytes, at: int, end: int) -> tuple[tuple[int, int], int]:
        offset, at = _varint(data, at, end, 64)
        size, at = _varint(data, at, end, 64)
        if offset + size + _TRAILER > self._size - FOOTER_SIZE:
            raise _Malformed(f"block at {offset} of {size} bytes lies outside the table")
        return (offset, size), at

    def _block(self, handle: tuple[int, int]) -> bytes:
        offset, size = handle
        if size > _MAX_BLOCK:
            raise _Refused(f"a block of {size} bytes is over the {_MAX_BLOCK} limit", "limit")
        data = self._read(offset, size + _TRAILER)
        if data[size] != 0:
            raise _Refused(
                f"block at {offset} is compressed (type {data[size]}); TensorFlow writes "
                "bundle indexes uncompressed, so it was not read",
                "incomplete",
            )
        return data[:size]

    def _read(self, offset: int, size: int) -> bytes:
        self._stream.seek(self._start + offset)
        data = self._stream.read(size)
        if len(data) != size:
            raise _Malformed("file ended early")
        return data

    def _block_items(self, block: bytes) -> Iterator[tuple[bytes, bytes]]:
        if len(block) < 4:
            raise _Malformed("block shorter than its restart count")
        restarts = int.from_bytes(block[-4:], "little")
        if restarts > (len(block) - 4) // 4:
            raise _Malformed(f"{restarts} restart points do not fit in the block")
        end = len(block) - 4 - 4 * restarts

        def restart(i: int) -> int:
            return int.from_bytes(block[end + 4 * i : end + 4 * i + 4], "little")

        if end and not restarts:
            raise _Malformed("a block holds entries but no restart point")
        at, next_restart, key = 0, 0, b""
        while at < end:
            due = restart(next_restart) if next_restart < restarts else end
            if due < at or (at == 0 and due != 0):
                raise _Malformed(f"restart points do not match the entries (offset {at})")
            shared, at_ = _varint(block, at, end, 32)
            unshared, at_ = _varint(block, at_, end, 32)
            length, at_ = _varint(block, at_, end, 32)
            if due == at:
                if shared:
                    raise _Malformed(f"entry at restart point {at} shares a prefix")
                next_restart += 1
            if shared > len(key) or unshared + length > end - at_:
                raise _Malformed(f"entry at offset {at} runs past its block")
            key = key[:shared] + block[at_ : at_ + unshared]
            at = at_ + unshared + length
            self._count(key)
            yield key, block[at_ + unshared : at]
        if next_restart != restarts and end:  # an empty block keeps one restart, at 0
            raise _Malformed("a restart point lies past the block's entries")

    def _count(self, key: bytes) -> None:
        self.entries += 1
        self._key_bytes += len(key)
        if self.entries > _MAX_ENTRIES or self._key_bytes > _MAX_KEY_BYTES:
            raise _Refused(f"over {_MAX_ENTRIES} entries or {_MAX_KEY_BYTES} key bytes", "limit")
        if len(key) > _MAX_KEY:
            raise _Refused(f"a key of over {_MAX_KEY} bytes", "limit")


@dataclass(slots=True)
class _Bundle:
    num_shards: int = 0
    tensors: int = 0
    needs: dict[int, tuple[int, str]] = field(default_factory=dict)
    """Shard id -> (bytes it must hold, the tensor that needs the most)."""
    bad_shards: list[str] = field(default_factory=list)


def _fields(value: bytes) -> Iterator[tuple[int, int, int]]:
    """(number, wire type, value or payload offset) of a message's fields."""
    reader = ProtobufReader(io.BytesIO(value), 0, len(value))
    for f in reader.fields(0, len(value)):
        yield f.number, f.wire, f.value


def _signed(value: int) -> int:
    return value - _U64 if value >= _U64 >> 1 else value


def _read_bundle(table: _Table) -> _Bundle:
    bundle = _Bundle()
    items = table.items()
    first = next(items, None)
    if first is None or first[0] != b"":
        raise _Malformed("the first entry is not the bundle header (key '')")
    for number, wire, raw in _fields(first[1]):
        if number <= 3 and wire != (LEN if number == 3 else VARINT):
            raise _Malformed(f"header field {number} has wire type {wire}")
        if number == 1:
            bundle.num_shards = _signed(raw)
    for key, value in items:
        bundle.tensors += 1
        shard = offset = size = 0
        for number, wire, raw in _fields(value):
            expected = LEN if number in (2, 7) else I32 if number == 6 else VARINT
            if number <= 7 and wire != expected:
                raise _Malformed(f"entry {_shown(key)}: field {number} has wire type {wire}")
            if number == 3:
                shard = _signed(raw)
            elif number == 4:
                offset = _signed(raw)
            elif number == 5:
                size = _signed(raw)
        name = key.decode("utf-8", "backslashreplace")
        if not 0 <= shard < bundle.num_shards or offset < 0 or size < 0:
            if len(bundle.bad_shards) <= _SHOWN:
                bundle.bad_shards.append(
                    f"tensor {name[:100]!r} names shard {shard} of {bundle.num_shards}, "
                    f"bytes {offset} to {offset + size}"
                )
            continue
        if size and offset + size > bundle.needs.get(shard, (0, ""))[0]:
            bundle.needs[shard] = (offset + size, name)
    return bundle


def scan_tf_bundle(ctx: ScanContext, stream: BinaryIO, member: str | None) -> None:
    """Read the bundle index in ``stream``; check the data shards beside it (on disk, or
    in the scanned tree: ``ctx.neighbours``)."""
    start = stream.tell()
    size = stream.seek(0, io.SEEK_END) - start
    table = _Table(stream, start, size)
    try:
        bundle = _read_bundle(table)
    except (_Malformed, ProtobufError) as exc:
        ctx.incomplete(
            f"malformed tensor-bundle index ({exc}); not scanned", format=FORMAT, member=member
        )
        return
    except _Refused as exc:
        if exc.rule == "limit":
            ctx.limit(f"tensor-bundle index: {exc}; not scanned", format=FORMAT, member=member)
        else:
            ctx.incomplete(f"tensor-bundle index: {exc}", format=FORMAT, member=member)
        return
    ctx.mark_scanned(FORMAT, member)
    for problem in bundle.bad_shards[:_SHOWN]:
        _data_finding(ctx, "tf-bundle.data-range", f"{problem}, outside the bundle", member)
    if member is None and ctx.fs_path is not None and ctx.fs_path.endswith(".index"):
        _check_shards(ctx, bundle, ctx.fs_path[: -len(".index")])


def _check_shards(ctx: ScanContext, bundle: _Bundle, prefix: str) -> None:
    """Check each declared shard beside the index; claim those that hold what it needs."""
    if bundle.num_shards > _MAX_SHARDS:
        ctx.limit(
            f"the index declares {bundle.num_shards} data shards; none was checked",
            format=FORMAT,
            member=None,
        )
        return
    shown = 0
    for shard in range(bundle.num_shards):
        path = f"{prefix}.data-{shard:05d}-of-{bundle.num_shards:05d}"
        need, tensor = bundle.needs.get(shard, (0, ""))
        if not need and not lexists(ctx.neighbours, path):
            continue  # declared, but no tensor reads it
        problem = _shard_problem(ctx.neighbours, path, need, tensor)
        if problem is None:
            ctx.raw_data[ctx.neighbours.realpath(path)] = DATA_FORMAT
        elif shown < _SHOWN:
            shown += 1
            name = os.path.basename(path)
            _data_finding(ctx, problem[0], f"data shard {name!r} {problem[1]}", None)


def _shard_problem(
    neighbours: Neighbours, path: str, need: int, tensor: str
) -> tuple[str, str] | None:
    try:
        st = neighbours.lstat(path)
    except FileNotFoundError:
        return "tf-bundle.data-file", "is missing: the model does not load as shipped"
    except OSError as exc:
        return "tf-bundle.data-file", f"cannot be checked ({exc.strerror})"
    if not stat.S_ISREG(st.st_mode):
        return "tf-bundle.data-file", "is not a regular file (a link, folder or device)"
    if st.st_nlink > 1:
        return "tf-bundle.data-file", f"has {st.st_nlink} hard links: its bytes may be another's"
    if need > st.st_size:
        return (
            "tf-bundle.data-range",
            f"has {st.st_size} bytes, but tensor {tensor[:100]!r} reads up to byte {need}",
        )
    return None


def _data_finding(ctx: ScanContext, rule: str, message: str, member: str | None) -> None:
    ctx.add(rule, Severity.MEDIUM, message, format=FORMAT, member=member)


def _shown(key: bytes) -> str:
    return repr(key[:100].decode("utf-8", "backslashreplace"))
