"""Generated hostile inputs for the container tests: built in memory, never loaded.

The pickles are only ever produced with ``pickle.dumps``; nothing here unpickles.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zipfile
from collections import OrderedDict


class Reduces:
    """Pickles as a call to ``os.system``; only ever dumped."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("true",))


EVIL_PICKLE = pickle.dumps(Reduces(), protocol=2)
BENIGN_PICKLE = pickle.dumps(OrderedDict(a=1), protocol=2)


def make_zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as archive:
        for name, data in members.items():
            info = zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0))
            info.compress_type = compression
            archive.writestr(info, data)
    return buf.getvalue()


def torch_zip(data_pkl: bytes, *, extra: dict[str, bytes] | None = None) -> bytes:
    members = {"archive/data.pkl": data_pkl, "archive/version": b"3\n"}
    members.update(extra or {})
    return make_zip(members)


def local_header_offsets(blob: bytes) -> list[int]:
    out, at = [], 0
    while (at := blob.find(b"PK\x03\x04", at)) != -1:
        out.append(at)
        at += 4
    return out


def set_local_flags(blob: bytes, flags: int) -> bytes:
    at = local_header_offsets(blob)[0]
    return blob[: at + 6] + struct.pack("<H", flags) + blob[at + 8 :]


def make_tar(members: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for info in members:
            content = data.get(info.name)
            if content is not None:
                info.size = len(content)
            archive.addfile(info, io.BytesIO(content) if content is not None else None)
    return buf.getvalue()


def tar_file(name: str, content: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(content)
    return info, content


def npy(header: str, payload: bytes) -> bytes:
    raw = header.encode("latin-1")
    pad = (64 - (10 + len(raw) + 1) % 64) % 64
    raw += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(raw)) + raw + payload
