"""Formats are told apart by content, never by file name."""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import pickle
import struct
import zlib

import pytest

from bastion.scanning._detect import TORCH_MAGIC, classify_zip, detect
from tests.unit.scanning.crafted import EVIL_PICKLE, make_zip, npy


def _detect(data: bytes) -> str:
    return detect(data[: 64 << 10], len(data))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "empty"),
        (pickle.dumps({"a": 1}, protocol=2), "pickle"),
        (pickle.dumps({"a": 1}, protocol=5), "pickle"),
        (pickle.dumps([1, 2], protocol=0), "pickle"),
        (pickle.dumps({"a": [1]}, protocol=1), "pickle"),
        (b"cos\nsystem\n(S'true'\ntR.", "pickle"),
        # A payload followed by garbage still runs (nullifAI): still a pickle.
        (b"cos\nsystem\n(S'true'\ntR\xff\xfe", "pickle"),
        (make_zip({"a.txt": b"x"}), "zip"),
        (gzip.compress(b"x"), "gzip"),
        (bz2.compress(b"x"), "bzip2"),
        (lzma.compress(b"x"), "xz"),
        (zlib.compress(EVIL_PICKLE), "zlib"),
        (b"\x04\x22\x4d\x18" + b"\x00" * 8, "lz4"),
        (b"7z\xbc\xaf\x27\x1c" + b"\x00" * 26, "7z"),
        (b"GGUF\x03\x00\x00\x00" + b"\x00" * 16, "gguf"),
        (b"\x89HDF\r\n\x1a\n" + b"\x00" * 16, "hdf5"),
        (npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", b"\0" * 4), "npy"),
        (struct.pack("<Q", 2) + b"{}", "safetensors"),
        (b"\x08\x07\x12\x07pytorch\x1a\x031.0:\x00", "onnx"),
        (b"\x0a\x0e\x0a\x05<unk>\x15\x00\x00\x00\x00\x18\x02" * 3, "sentencepiece"),
        (json.dumps({"hidden_size": 8}).encode(), "text"),
        (b"# Model card\n\nhello\n", "text"),
        ("vocabulaire été\n".encode(), "text"),
        (b"the\ncat\n", "text"),
        (bytes(range(256)) * 4, "unknown"),
    ],
)
def test_detects_by_content(data: bytes, expected: str) -> None:
    assert _detect(data) == expected


def test_tar_is_detected_by_its_ustar_magic() -> None:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo("x")
        archive.addfile(info, io.BytesIO(b""))
    assert _detect(buf.getvalue()) == "tar"


def test_legacy_torch_is_the_magic_number_pickle() -> None:
    stacked = pickle.dumps(TORCH_MAGIC, protocol=2) + pickle.dumps(1001, protocol=2)
    assert _detect(stacked) == "pytorch-legacy"
    assert _detect(pickle.dumps(TORCH_MAGIC + 1, protocol=2)) == "pickle"
    assert _detect(pickle.dumps((TORCH_MAGIC, 1), protocol=2)) == "pickle"


def test_text_cut_inside_a_multibyte_character_is_text() -> None:
    data = "é".encode() * 40_000  # the 64 KiB head ends mid-character
    assert _detect(data) == "text"


@pytest.mark.parametrize(
    ("names", "kind"),
    [
        (["model/data.pkl", "model/data/0", "model/version"], "pytorch-zip"),
        (["anything/constants.pkl", "anything/code/__torch__/m.py"], "pytorch-zip"),
        (["a.npy", "b.npy"], "npz"),
        (["config.json", "metadata.json", "model.weights.h5"], "keras"),
        (["readme.txt"], "zip"),
        ([], "zip"),
    ],
)
def test_classifies_zips_by_member_names(names: list[str], kind: str) -> None:
    assert classify_zip(names) == kind
