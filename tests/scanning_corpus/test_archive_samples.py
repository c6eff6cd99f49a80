"""The archive samples (``_archive_samples.py``) hold what they claim, and the scanner
finds each payload where it is: inside the 7z member, behind the lz4 frame, in the
torch zip inside the tar.gz, in the one malicious shard of a sharded folder.

Static checks only: members are read with py7zr, tarfile and zipfile; nothing is loaded.
"""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import pytest

from bastion.scanning import Severity, scan
from tests.scanning_corpus._archive_samples import SHARD_INDEX, shard_name
from tests.scanning_corpus.generate import Sample

DANGEROUS = "pickle.global.dangerous"


def _sevenzip_members(path: Path) -> dict[str, bytes]:
    import py7zr
    from py7zr.io import BytesIOFactory

    factory = BytesIOFactory(64 << 20)
    with py7zr.SevenZipFile(path) as archive:
        names = archive.getnames()
        archive.extractall(factory=factory)  # noqa: S202 - into memory, no files
    return {name: factory.get(name).read() for name in names}


def _dangerous_members(path: Path) -> set[str | None]:
    return {f.member for f in scan(path).findings if f.rule_id == DANGEROUS}


def test_torch_zip_in_7z(corpus_by_name: dict[str, Sample]) -> None:
    sample = corpus_by_name["nullifai_torch_zip_in_7z.7z"]
    (inner,) = _sevenzip_members(sample.path).values()
    with zipfile.ZipFile(io.BytesIO(inner)) as archive:
        assert "archive/data.pkl" in archive.namelist()
    assert _dangerous_members(sample.path) == {"pytorch_model.bin/archive/data.pkl"}


def test_pickle_in_7z_under_a_text_name(corpus_by_name: dict[str, Sample]) -> None:
    sample = corpus_by_name["pickle_in_7z_harmless_name.7z"]
    members = _sevenzip_members(sample.path)
    assert list(members) == ["tokenizer/vocab.txt"]
    assert members["tokenizer/vocab.txt"][:1] == b"\x80"
    assert _dangerous_members(sample.path) == {"tokenizer/vocab.txt"}


def test_lz4_joblib(corpus_by_name: dict[str, Sample]) -> None:
    for name in ("joblib_lz4_payload.joblib.lz4", "sklearn_pipeline.joblib.lz4"):
        assert corpus_by_name[name].path.read_bytes()[:4] == b"\x04\x22\x4d\x18"
    assert _dangerous_members(corpus_by_name["joblib_lz4_payload.joblib.lz4"].path) == {"<lz4>"}


def test_torch_zip_in_tar_gz(corpus_by_name: dict[str, Sample]) -> None:
    sample = corpus_by_name["torch_zip_in_tar_gz.tar.gz"]
    with tarfile.open(sample.path, "r:gz") as tar:
        (info,) = tar.getmembers()
        stream = tar.extractfile(info)
        assert stream is not None
        assert zipfile.is_zipfile(io.BytesIO(stream.read()))
    assert _dangerous_members(sample.path) == {"<gzip>/model/pytorch_model.bin/archive/data.pkl"}


@pytest.mark.parametrize(
    ("name", "evil"),
    [(f"hf_sharded_torch/{shard_name(2)}", True), (f"hf_sharded_clean/{shard_name(2)}", False)],
)
def test_sharded_folder(name: str, evil: bool, corpus_by_name: dict[str, Sample]) -> None:
    folder = corpus_by_name[name].path.parent
    index = json.loads((folder / SHARD_INDEX).read_text())
    assert set(index["weight_map"].values()) == {shard_name(1), shard_name(2)}
    assert {p.name for p in folder.iterdir()} == {SHARD_INDEX, shard_name(1), shard_name(2)}
    report = scan(folder)
    assert {s.path for s in report.scanned} >= {SHARD_INDEX, shard_name(1), shard_name(2)}
    flagged = {f.path for f in report.findings if f.severity >= Severity.HIGH}
    assert flagged == ({shard_name(2)} if evil else set())
    if not evil:
        assert report.findings == []
