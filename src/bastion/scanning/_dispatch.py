"""Routing a stream to the reader for its format, detected from its bytes.

Formats that Bastion recognises but cannot scan yet, and bytes it does not
recognise at all, are findings: a scan fails closed.
"""

from __future__ import annotations

import io
from typing import BinaryIO

from bastion.scanning._context import ScanContext
from bastion.scanning._detect import HEAD_SIZE, UNSUPPORTED, detect
from bastion.scanning._report import Severity

__all__ = ["dispatch"]

_COMPRESSED = frozenset({"gzip", "bzip2", "xz", "zlib", "lz4"})

_UNSUPPORTED_WHY: dict[str, str] = {}


def dispatch(ctx: ScanContext, stream: BinaryIO, member: str | None, depth: int) -> None:
    """Scan ``stream`` (positioned at its start) according to its content."""
    start = stream.tell()
    head = stream.read(HEAD_SIZE)
    size = stream.seek(0, io.SEEK_END) - start
    stream.seek(start)
    fmt = detect(head, size)
    if fmt == "unknown" and _ends_like_table(stream, start, size):
        fmt = "tf-tensor-bundle"
    _by_format(ctx, stream, member, depth, fmt)
    if fmt != "hdf5":
        _hdf5_after_user_block(ctx, stream, member, start, size)


def _ends_like_table(stream: BinaryIO, start: int, size: int) -> bool:
    """An SSTable (a TensorFlow tensor-bundle index) is known by the magic number at
    the end of its footer, which a head of a large file does not reach."""
    from bastion.scanning._tf_bundle import FOOTER_SIZE, is_table_footer

    if size < FOOTER_SIZE:
        return False
    stream.seek(start + size - FOOTER_SIZE)
    tail = stream.read(FOOTER_SIZE)
    stream.seek(start)
    return is_table_footer(tail)


_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _hdf5_after_user_block(
    ctx: ScanContext, stream: BinaryIO, member: str | None, start: int, size: int
) -> None:
    """libhdf5 also finds a file's superblock at 512, 1024, 2048, ... bytes (after a
    "user block"), so any file can also be an HDF5 model that h5py and Keras open."""
    offset = 512
    while offset + len(_HDF5_SIGNATURE) <= size:
        stream.seek(start + offset)
        if stream.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
            from bastion.scanning._keras_h5 import scan_hdf5

            ctx.add(
                "hdf5.user-block",
                Severity.MEDIUM,
                f"an HDF5 file starts {offset} bytes in, after a user block: HDF5 readers "
                "(h5py, Keras) open this file as HDF5 whatever its first bytes say",
                format="hdf5",
                member=member,
                offset=offset,
            )
            stream.seek(start + offset)
            scan_hdf5(ctx, stream, member)
            break
        offset *= 2
    stream.seek(start)


def _by_format(
    ctx: ScanContext, stream: BinaryIO, member: str | None, depth: int, fmt: str
) -> None:
    if fmt in ("empty", "text", "sentencepiece"):
        ctx.mark_scanned(fmt, member)
    elif fmt == "pickle":
        ctx.pickle(stream, member, "pickle", depth=depth)
    elif fmt == "pytorch-legacy":
        # magic number, protocol, sys_info, the object, storage keys; raw storages follow.
        ctx.pickle(stream, member, "pytorch-legacy", depth=depth, streams=5)
    elif fmt == "zip":
        from bastion.scanning._zip import scan_zip

        scan_zip(ctx, stream, member, depth)
    elif fmt == "tar":
        from bastion.scanning._tar import scan_tar

        scan_tar(ctx, stream, member, depth)
    elif fmt == "npy":
        from bastion.scanning._npy import scan_npy

        scan_npy(ctx, stream, member, "numpy", depth)
    elif fmt in _COMPRESSED:
        from bastion.scanning._compressed import scan_compressed

        scan_compressed(ctx, stream, member, depth, fmt)
    elif fmt == "safetensors":
        from bastion.scanning._safetensors import scan_safetensors

        scan_safetensors(ctx, stream, member)
    elif fmt == "gguf":
        from bastion.scanning._gguf import scan_gguf

        scan_gguf(ctx, stream, member)
    elif fmt == "onnx":
        from bastion.scanning._onnx import scan_onnx

        scan_onnx(ctx, stream, member)
    elif fmt in ("savedmodel", "savedmodel-text", "tf-fingerprint", "keras-metadata"):
        from bastion.scanning._savedmodel import scan_tensorflow

        scan_tensorflow(ctx, stream, member, fmt)
    elif fmt == "tf-tensor-bundle":
        from bastion.scanning._tf_bundle import scan_tf_bundle

        scan_tf_bundle(ctx, stream, member)
    elif fmt == "hdf5":
        from bastion.scanning._keras_h5 import scan_hdf5

        scan_hdf5(ctx, stream, member)
    elif fmt == "7z":
        from bastion.scanning._sevenzip import scan_sevenzip

        scan_sevenzip(ctx, stream, member, depth)
    elif fmt in UNSUPPORTED:
        unsupported(ctx, fmt, member, _UNSUPPORTED_WHY[fmt])
    else:
        ctx.add(
            "scan.unknown-format",
            Severity.MEDIUM,
            "unrecognised binary format; it was not scanned and could hide code",
            format="unknown",
            member=member,
        )


def unsupported(ctx: ScanContext, fmt: str, member: str | None, why: str) -> None:
    ctx.add("scan.unsupported-format", Severity.MEDIUM, why, format=fmt, member=member)
