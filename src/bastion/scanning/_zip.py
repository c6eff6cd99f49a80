"""Zip archives, read as PyTorch reads them, and checked for the tricks that fool other readers.

PyTorch finds members through the central directory, reads each local header
only to skip to the data, and never checks a CRC. Python's ``zipfile`` checks
CRCs and refuses some flags. Bastion reads every entry's bytes where the loader
would, scans them whatever their CRC, and reports every disagreement between
the two headers (CVE-2025-1944, CVE-2025-1945, CVE-2025-10156).
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import BinaryIO

from bastion.scanning._compressed import decompress
from bastion.scanning._context import ScanContext, join_member
from bastion.scanning._detect import classify_zip
from bastion.scanning._names import check_member_name
from bastion.scanning._report import Severity
from bastion.scanning._streams import SeekableSlice, as_binary, read_chunks

__all__ = ["scan_zip"]

_LOCAL = struct.Struct("<4s5HI2I2H")
_CODECS = {
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "zip-lzma",
}
#: Names of the other methods of APPNOTE 4.4.5, for the finding that says one is not read.
_METHOD_NAMES = {
    1: "Shrink",
    2: "Reduce",
    3: "Reduce",
    4: "Reduce",
    5: "Reduce",
    6: "Implode",
    9: "Deflate64",
    10: "PKWARE Implode",
    18: "IBM TERSE",
    19: "IBM LZ77",
    20: "Zstandard (old id)",
    93: "Zstandard",
    94: "MP3",
    95: "XZ",
    96: "JPEG",
    97: "WavPack",
    98: "PPMd",
    99: "AE-x encryption",
}
_S_IFMT, _S_IFLNK = 0o170000, 0o120000


@dataclass(frozen=True, slots=True)
class _Local:
    name: str
    flags: int
    method: int
    data_offset: int


def scan_zip(ctx: ScanContext, stream: BinaryIO, member: str | None, depth: int) -> None:
    try:
        archive = zipfile.ZipFile(stream)
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        NotImplementedError,  # "zip file version 63.0": a central directory zipfile refuses
        OSError,
        ValueError,
        EOFError,
    ) as exc:
        ctx.incomplete(f"unreadable zip archive ({exc}); not scanned", format="zip", member=member)
        return
    infos = archive.infolist()
    if len(infos) > ctx.limits.max_members:
        ctx.limit(
            f"zip has {len(infos)} members; only the first {ctx.limits.max_members} are scanned",
            format="zip",
            member=member,
        )
        infos = infos[: ctx.limits.max_members]
    kind = classify_zip(i.filename for i in infos)
    ctx.mark_scanned(kind, member)
    counts = Counter(i.filename for i in infos)
    for name, n in counts.items():
        if n > 1:
            ctx.add(
                "zip.duplicate-name",
                Severity.MEDIUM,
                f"{n} entries are named {name!r}; loaders disagree on which one they read "
                "(every entry was scanned)",
                format=kind,
                member=join_member(member, name),
            )
    for info in infos:
        _entry(ctx, stream, info, kind, member, depth)
    if kind == "pytorch-zip" and any(_is_torchscript(i.filename) for i in infos):
        ctx.add(
            "torch.torchscript",
            Severity.MEDIUM,
            "TorchScript archive: torch.jit.load runs the code it contains on load",
            format=kind,
            member=member,
        )


def _is_torchscript(name: str) -> bool:
    parts = name.split("/")
    return parts[-1] == "constants.pkl" or "code" in parts[:-1]


def _entry(
    ctx: ScanContext,
    stream: BinaryIO,
    info: zipfile.ZipInfo,
    kind: str,
    parent: str | None,
    depth: int,
) -> None:
    member = join_member(parent, info.filename)
    check_member_name(ctx, info.filename, kind, member, "zip")
    if info.create_system == 3 and (info.external_attr >> 16) & _S_IFMT == _S_IFLNK:
        ctx.add(
            "zip.symlink",
            Severity.HIGH,
            "member is a symbolic link; extracting it can write or read outside the folder",
            format=kind,
            member=member,
        )
        return
    local = _read_local(stream, info)
    if local is None:
        ctx.incomplete(
            "no local header where the central directory points", format=kind, member=member
        )
        return
    _compare_headers(ctx, info, local, kind, member)
    if info.is_dir() and info.file_size == 0:
        return
    if (local.flags | info.flag_bits) & 0x1:
        ctx.add(
            "zip.encrypted",
            Severity.MEDIUM,
            "member is encrypted and cannot be scanned",
            format=kind,
            member=member,
        )
        return
    if (kind == "keras" and info.filename == "model.weights.h5") or (
        kind == "pytorch-zip" and _is_raw_storage(info.filename)
    ):
        return  # raw weights: Keras reads only datasets from it, torch reads raw bytes
    data = _open(ctx, stream, info, local, kind, member)
    if data is None:
        return
    with data:
        if kind == "pytorch-zip" and info.filename.endswith("pkl"):
            ctx.pickle(
                data, member, "pytorch-zip", depth=depth + 1
            )  # torch unpickles these by name
        elif kind == "keras" and info.filename == "config.json":
            from bastion.scanning._keras import scan_keras_config

            scan_keras_config(ctx, data, member)
        else:
            ctx.nested(data, member, depth + 1)


def _is_raw_storage(name: str) -> bool:
    # <folder>/data/<key>: tensor bytes, which torch reads raw and never unpickles.
    parts = name.split("/")
    return len(parts) == 3 and parts[1] == "data"


def _read_local(stream: BinaryIO, info: zipfile.ZipInfo) -> _Local | None:
    if info.header_offset < 0:  # a central directory offset before the archive's start
        return None
    stream.seek(info.header_offset)
    raw = stream.read(_LOCAL.size)
    if len(raw) < _LOCAL.size:
        return None
    sig, _, flags, method, _, _, _, _, _, name_len, extra_len = _LOCAL.unpack(raw)
    if sig != b"PK\x03\x04":
        return None
    name_bytes = stream.read(name_len)
    name = name_bytes.decode("utf-8" if flags & 0x800 else "cp437", "replace")
    offset = info.header_offset + _LOCAL.size + name_len + extra_len
    return _Local(name=name, flags=flags, method=method, data_offset=offset)


def _compare_headers(
    ctx: ScanContext, info: zipfile.ZipInfo, local: _Local, kind: str, member: str
) -> None:
    if local.name != info.orig_filename:
        ctx.add(
            "zip.name-mismatch",
            Severity.HIGH,
            f"local header names this member {local.name!r} but the central directory "
            f"{info.orig_filename!r}; scanners and loaders may read different members "
            "(CVE-2025-1944)",
            format=kind,
            member=member,
        )
    if local.flags != info.flag_bits or local.method != info.compress_type:
        ctx.add(
            "zip.header-mismatch",
            Severity.HIGH,
            f"local header (flags {local.flags:#x}, method {local.method}) disagrees with the "
            f"central directory (flags {info.flag_bits:#x}, method {info.compress_type}) "
            "(CVE-2025-1945)",
            format=kind,
            member=member,
        )


def _open(
    ctx: ScanContext,
    stream: BinaryIO,
    info: zipfile.ZipInfo,
    local: _Local,
    kind: str,
    member: str,
) -> BinaryIO | None:
    """The member's bytes as the loader would read them: stored in place, else spooled."""
    raw = as_binary(SeekableSlice(stream, local.data_offset, info.compress_size))
    crc = 0
    if info.compress_type == zipfile.ZIP_STORED:
        for chunk in read_chunks(raw):
            crc = zlib.crc32(chunk, crc)
        raw.seek(0)
        data: BinaryIO | None = raw
    elif info.compress_type in _CODECS:

        def update(chunk: bytes) -> None:
            nonlocal crc
            crc = zlib.crc32(chunk, crc)

        codec = _CODECS[info.compress_type]
        data = decompress(
            ctx, raw, info.compress_size, codec, member, update, declared_size=info.file_size
        )
        raw.close()
        if data is None:
            return None
    else:
        method = _METHOD_NAMES.get(info.compress_type, "unknown")
        ctx.incomplete(
            f"compression method {info.compress_type} ({method}) cannot be decompressed by "
            "Bastion; the member was not scanned (repack it stored, deflate, bzip2 or LZMA)",
            format=kind,
            member=member,
        )
        return None
    if crc != info.CRC:
        ctx.add(
            "zip.crc-mismatch",
            Severity.HIGH,
            "member's CRC does not match its bytes: Python's zipfile refuses it but PyTorch "
            "loads it (CVE-2025-10156); scanned as stored",
            format=kind,
            member=member,
        )
    return data
