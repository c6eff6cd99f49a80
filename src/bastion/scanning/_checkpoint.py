"""Reading a PyTorch checkpoint's structure and storages without unpickling it.

Two layouts are read: the zip archive of ``torch.save`` (``<folder>/data.pkl``,
raw storages in ``<folder>/data/<key>``), and the stacked pre-1.6 layout of
``_use_new_zipfile_serialization=False`` (magic number, protocol and
system-information pickles, the object pickle, a pickle of storage keys, then
for each key an 8-byte element count and the raw bytes). Both are interpreted
by the restricted machine of :mod:`bastion.scanning._rebuild`. Anything else,
big-endian data included, is refused.
"""

from __future__ import annotations

import io
import lzma
import struct
import tarfile
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import IO, BinaryIO

from bastion.errors import InputError
from bastion.scanning._limits import Limits
from bastion.scanning._rebuild import rebuild
from bastion.scanning._streams import CHUNK
from bastion.scanning._tensor_refs import ITEMSIZES, StorageRef

__all__ = ["Checkpoint", "read_checkpoint"]

_MAGIC = 0x1950A86A20F9469CFC6C
_PROTOCOL = 1001
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    RuntimeError,  # an encrypted member
    NotImplementedError,  # an unknown compression method
    OSError,  # bz2 errors too
    EOFError,
    ValueError,
    zlib.error,
    lzma.LZMAError,
)


@dataclass
class Checkpoint:
    """A checkpoint's rebuilt structure, and where each storage's bytes are."""

    format: str
    root: object
    storages: dict[str, StorageRef]
    _file: BinaryIO
    _archive: zipfile.ZipFile | None = None
    _prefix: str = ""
    _offsets: dict[str, tuple[int, int]] = field(default_factory=dict)

    def storage_size(self, key: str) -> int | None:
        """Bytes the checkpoint holds for storage ``key``, or None if it has none."""
        if self._archive is None:
            return self._offsets[key][1] if key in self._offsets else None
        try:
            return self._archive.getinfo(f"{self._prefix}/data/{key}").file_size
        except KeyError:
            return None

    def copy(self, key: str, offset: int, nbytes: int, out: BinaryIO) -> None:
        """Copy ``nbytes`` bytes of storage ``key`` from byte ``offset`` into ``out``."""
        try:
            if self._archive is None:
                self._file.seek(self._offsets[key][0] + offset)
                _copy(self._file, nbytes, out)
            else:
                with self._archive.open(f"{self._prefix}/data/{key}") as member:
                    member.seek(offset)
                    _copy(member, nbytes, out)
        except _ZIP_ERRORS as exc:
            raise InputError(f"cannot read storage {key!r} of the checkpoint: {exc}") from exc


def _copy(src: IO[bytes], nbytes: int, out: BinaryIO) -> None:
    left = nbytes
    while left:
        chunk = src.read(min(left, CHUNK))
        if not chunk:
            raise InputError("the checkpoint ends inside a storage (truncated)")
        out.write(chunk)
        left -= len(chunk)


def read_checkpoint(f: BinaryIO, limits: Limits) -> Checkpoint:
    """The structure of the checkpoint in ``f`` (which must stay open while it is used)."""
    head = f.read(16)
    f.seek(0)
    if head.startswith(b"PK\x03\x04"):
        return _read_zip(f, limits)
    if head.startswith(b"\x80") and head[2:3] == b"\x8a":
        return _read_legacy(f, limits)
    if len(head) >= 9 and head[8:9] == b"{":
        raise InputError("refusing to convert: the file is already safetensors")
    if _is_tar(f):
        raise InputError(
            "refusing to convert: the pre-0.4 PyTorch tar format is not supported; "
            "load and re-save it with a current PyTorch in a sandbox"
        )
    raise InputError(
        "refusing to convert: not a PyTorch checkpoint (neither a torch.save zip archive "
        "nor the pre-1.6 legacy format)"
    )


def _is_tar(f: BinaryIO) -> bool:
    try:
        with tarfile.open(fileobj=f, mode="r:"):
            return True
    except (tarfile.TarError, OSError, ValueError, EOFError):
        return False
    finally:
        f.seek(0)


def _read_zip(f: BinaryIO, limits: Limits) -> Checkpoint:
    try:
        archive = zipfile.ZipFile(f)
        names = [i.filename for i in archive.infolist()]
    except _ZIP_ERRORS as exc:
        raise InputError(f"refusing to convert: unreadable zip archive ({exc})") from exc
    if not names or "/" not in names[0]:
        raise InputError("refusing to convert: the zip archive is not a torch.save checkpoint")
    duplicates = sorted(n for n, count in Counter(names).items() if count > 1)
    if duplicates:
        raise InputError(
            f"refusing to convert: the archive has several members named {duplicates[0]!r}; "
            "loaders disagree on which one they read"
        )
    prefix = names[0].split("/", 1)[0]  # torch takes the folder of the first member
    if f"{prefix}/data.pkl" not in names:
        raise InputError(
            f"refusing to convert: the zip archive has no {prefix}/data.pkl "
            "(not a torch.save checkpoint)"
        )
    if f"{prefix}/constants.pkl" in names or any(n.startswith(f"{prefix}/code/") for n in names):
        raise InputError(
            "refusing to convert: this is a TorchScript archive, which holds code, not a "
            "tensor checkpoint"
        )
    try:
        if f"{prefix}/byteorder" in names:
            order = archive.read(f"{prefix}/byteorder")
            if order != b"little":
                raise InputError(
                    f"refusing to convert: the checkpoint's byte order is {order[:16]!r}; "
                    "only little-endian checkpoints are converted"
                )
        info = archive.getinfo(f"{prefix}/data.pkl")
        if info.file_size > limits.max_inline_bytes:
            raise InputError(
                f"refusing to convert: {prefix}/data.pkl is {info.file_size} bytes "
                f"(the limit is {limits.max_inline_bytes})"
            )
        pickle = archive.read(info)
    except _ZIP_ERRORS as exc:
        raise InputError(f"refusing to convert: unreadable zip archive ({exc})") from exc
    storages: dict[str, StorageRef] = {}
    root = rebuild(io.BytesIO(pickle), limits, storages)
    return Checkpoint("pytorch-zip", root, storages, f, archive, prefix)


def _read_legacy(f: BinaryIO, limits: Limits) -> Checkpoint:
    none: dict[str, StorageRef] = {}
    if rebuild(f, limits, none) != _MAGIC:
        raise InputError("refusing to convert: not a PyTorch checkpoint (wrong magic number)")
    if rebuild(f, limits, none) != _PROTOCOL:
        raise InputError("refusing to convert: unknown legacy PyTorch protocol version")
    sys_info = rebuild(f, limits, none)
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise InputError(
            "refusing to convert: the checkpoint was written big-endian, or says nothing "
            "of its byte order; only little-endian checkpoints are converted"
        )
    if none:
        raise InputError("refusing to convert: a legacy header names a storage")
    storages: dict[str, StorageRef] = {}
    root = rebuild(f, limits, storages)
    keys = rebuild(f, limits, none)
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or none:
        raise InputError("refusing to convert: the legacy storage key list is malformed")
    position = f.tell()
    size = f.seek(0, io.SEEK_END)
    offsets: dict[str, tuple[int, int]] = {}
    for key in keys:
        if key not in storages or key in offsets:
            raise InputError(f"refusing to convert: legacy storage key {key!r} is not expected")
        ref = storages[key]
        f.seek(position)
        raw = f.read(8)
        if len(raw) != 8:
            raise InputError("the checkpoint ends inside a storage (truncated)")
        (count,) = struct.unpack("<q", raw)
        nbytes = ref.numel * ITEMSIZES[ref.dtype]
        if count != ref.numel or position + 8 + nbytes > size:
            raise InputError(f"refusing to convert: legacy storage {key!r} has the wrong size")
        offsets[key] = (position + 8, nbytes)
        position += 8 + nbytes
    return Checkpoint("pytorch-legacy", root, storages, f, _offsets=offsets)
