"""The members of a legacy PyTorch tar archive, which interleave pickles with raw bytes.

``torch.load`` reads ``storages`` as a count pickle, then per storage a pickle
``(key, location, storage_type)``, an 8-byte element count and the raw
elements; ``tensors`` as a count pickle, then per tensor a pickle and a fixed
binary record; ``pickle`` and ``sys_info`` are single pickles. Every pickle
that torch would unpickle is audited.
"""

from __future__ import annotations

import io
import struct
from typing import BinaryIO

from bastion.scanning._context import ScanContext

__all__ = ["scan_torch_tar_member"]

_FORMAT = "pytorch-tar"
#: Bytes per element of the storage types torch wrote (bool/uint8 ... complex128).
_ELEMENT_SIZES = (1, 2, 4, 8, 16)


def scan_torch_tar_member(
    ctx: ScanContext, data: BinaryIO, name: str, member: str, depth: int
) -> None:
    if name in ("pickle", "sys_info"):
        ctx.pickle(data, member, _FORMAT, depth=depth)
        return
    size = data.seek(0, io.SEEK_END)
    data.seek(0)
    before = len(ctx.findings)
    ctx.pickle(data, member, _FORMAT, depth=depth, streams=1)  # the count
    while data.tell() < size and not _failed(ctx, before):
        ctx.pickle(data, member, _FORMAT, depth=depth, streams=1)
        if _failed(ctx, before):
            return
        skipped = _skip_storage(data, size) if name == "storages" else _skip_tensor(data)
        if not skipped:
            ctx.incomplete(
                f"cannot find where the next record of {name!r} starts; the rest is not scanned",
                format=_FORMAT,
                member=member,
            )
            return


def _failed(ctx: ScanContext, since: int) -> bool:
    return any(f.rule_id == "scan.incomplete" for f in ctx.findings[since:])


def _skip_tensor(data: BinaryIO) -> bool:
    head = data.read(8)
    if len(head) < 8:
        return False
    ndim: int = struct.unpack("<i", head[:4])[0]
    if not 0 <= ndim <= 64:
        return False
    skip = 16 * ndim + 8  # sizes, strides, storage offset
    return len(data.read(skip)) == skip


def _skip_storage(data: BinaryIO, size: int) -> bool:
    """Skip one storage's raw bytes; its element size is only known to the unpickled type.

    Accept the only element size after which the archive ends or another
    protocol-2 pickle starts; if several fit, the record is ambiguous.
    """
    raw = data.read(8)
    if len(raw) < 8:
        return False
    (count,) = struct.unpack("<q", raw)
    start = data.tell()
    fits = []
    for width in _ELEMENT_SIZES:
        end = start + count * width
        if end == size:
            fits.append(end)
        elif 0 <= end < size:
            data.seek(end)
            if data.read(2) == b"\x80\x02":
                fits.append(end)
    if len(set(fits)) != 1:
        return False
    data.seek(fits[0])
    return True
