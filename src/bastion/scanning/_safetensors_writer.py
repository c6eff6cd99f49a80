"""Writing a safetensors file, whole or not at all.

The format: an 8-byte little-endian header length, a JSON header naming each
tensor's dtype, shape and ``[begin, end)`` byte range in the data that
follows (plus an optional ``__metadata__`` of strings), padded with spaces to
a multiple of 8, then the data. The file is written under a temporary name in
the destination's folder and moved into place only when complete.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bastion.errors import InputError

__all__ = ["PlannedTensor", "write_safetensors"]

#: The safetensors reader refuses larger headers.
_MAX_HEADER = 100_000_000
#: Errors from os.link meaning "this file system has no hard links", not "it exists".
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS}


@dataclass(frozen=True, slots=True)
class PlannedTensor:
    """One tensor to write: its name, safetensors dtype, shape and size in bytes."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def write_safetensors(
    dst: Path,
    tensors: Sequence[PlannedTensor],
    copy: Callable[[PlannedTensor, BinaryIO], None],
    *,
    metadata: dict[str, str],
    force: bool,
) -> int:
    """Write ``tensors`` (in this order) to ``dst``; ``copy`` writes each one's bytes.

    Returns the size of the file. Without ``force``, an existing ``dst`` is
    never replaced, even one created while the file was being written.
    """
    header_bytes = _header(tensors, metadata)
    tmp = dst.parent / f".{dst.name}.{secrets.token_hex(8)}.tmp"
    # O_EXCL: never write through an existing file or link; mode 0o666 less the umask.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(len(header_bytes).to_bytes(8, "little"))
            out.write(header_bytes)
            for tensor in tensors:
                start = out.tell()
                copy(tensor, out)
                if out.tell() - start != tensor.nbytes:
                    raise AssertionError(f"{tensor.name}: wrote the wrong number of bytes")
            size = out.tell()
            out.flush()
            os.fsync(out.fileno())
        _place(tmp, dst, force)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return size


def _header(tensors: Sequence[PlannedTensor], metadata: dict[str, str]) -> bytes:
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": t.dtype,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    if len(raw) > _MAX_HEADER:
        raise InputError(
            f"refusing to convert: the safetensors header would be {len(raw)} bytes "
            f"(readers accept at most {_MAX_HEADER}); the checkpoint has too many tensors"
        )
    return raw


def _place(tmp: Path, dst: Path, force: bool) -> None:
    if force:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)  # fails if dst exists: no check-then-replace race
    except FileExistsError:
        raise InputError(f"{dst} already exists; pass --force to replace it") from None
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        if dst.exists():
            raise InputError(f"{dst} already exists; pass --force to replace it") from None
        os.replace(tmp, dst)
        return
    tmp.unlink()
