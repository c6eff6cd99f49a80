"""Containers are read as their loaders read them, and their tricks are reported."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import pickle
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path

import pytest

from bastion.scanning import Limits, ScanReport, Severity, scan
from bastion.scanning._detect import TORCH_MAGIC
from tests.unit.scanning.crafted import (
    BENIGN_PICKLE,
    EVIL_PICKLE,
    make_tar,
    make_zip,
    npy,
    set_local_flags,
    tar_file,
    torch_zip,
)


def scan_bytes(tmp_path: Path, data: bytes, name: str = "model.bin", **limits: int) -> ScanReport:
    path = tmp_path / name
    path.write_bytes(data)
    return scan(path, limits=Limits(**limits))


def rules(report: ScanReport) -> set[str]:
    return {f.rule_id for f in report.findings}


def dangerous(report: ScanReport) -> list[str | None]:
    return [f.member for f in report.findings if f.rule_id.startswith("pickle.global")]


def test_benign_torch_zip_is_clean(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, torch_zip(BENIGN_PICKLE, extra={"archive/data/0": b"\0" * 64}))
    assert report.findings == []
    assert ("archive/data.pkl", "pytorch-zip") in {(s.member, s.format) for s in report.scanned}


def test_torch_zip_pickle_is_audited_whatever_the_folder(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, torch_zip(EVIL_PICKLE))
    assert dangerous(report) == ["archive/data.pkl"]
    assert report.max_severity == Severity.CRITICAL


def test_torchscript_is_reported(tmp_path: Path) -> None:
    blob = torch_zip(BENIGN_PICKLE, extra={"archive/constants.pkl": BENIGN_PICKLE})
    assert "torch.torchscript" in rules(scan_bytes(tmp_path, blob))


def test_local_name_differing_from_central_is_high(tmp_path: Path) -> None:
    blob = torch_zip(EVIL_PICKLE)
    first = blob.index(b"archive/data.pkl")  # the local header comes first
    blob = blob[:first] + b"archive/xxxx.pkl" + blob[first + 16 :]
    report = scan_bytes(tmp_path, blob)
    assert "zip.name-mismatch" in rules(report)
    assert dangerous(report) == ["archive/data.pkl"]  # still read where torch reads


def test_crc_mismatch_is_reported_and_the_member_still_scanned(tmp_path: Path) -> None:
    blob = torch_zip(BENIGN_PICKLE)
    at = blob.index(BENIGN_PICKLE)
    tampered = EVIL_PICKLE[: len(BENIGN_PICKLE)]
    blob = blob[:at] + tampered + blob[at + len(tampered) :]
    report = scan_bytes(tmp_path, blob)
    crc = [f for f in report.findings if f.rule_id == "zip.crc-mismatch"]
    assert [f.severity for f in crc] == [Severity.HIGH]
    assert any(
        f.member == "archive/data.pkl" and f.rule_id != "zip.crc-mismatch" for f in report.findings
    )


def test_flag_bits_only_in_the_local_header(tmp_path: Path) -> None:
    blob = set_local_flags(make_zip({"a.txt": b"hello"}), 0x60)
    assert "zip.header-mismatch" in rules(scan_bytes(tmp_path, blob))


def test_duplicate_names_are_reported_and_every_entry_scanned(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with zipfile.ZipFile(buf, "w") as archive:
            archive.writestr("archive/data.pkl", EVIL_PICKLE)
            archive.writestr("archive/data.pkl", BENIGN_PICKLE)
    report = scan_bytes(tmp_path, buf.getvalue())
    assert "zip.duplicate-name" in rules(report)
    assert dangerous(report) == ["archive/data.pkl"]


@pytest.mark.parametrize(
    ("name", "rule"),
    [
        ("../evil.txt", "zip.path-traversal"),
        ("a/../../evil.txt", "zip.path-traversal"),
        ("/etc/evil.txt", "zip.absolute-path"),
        ("C:/evil.txt", "zip.absolute-path"),
    ],
)
def test_member_names_that_escape(tmp_path: Path, name: str, rule: str) -> None:
    report = scan_bytes(tmp_path, make_zip({name: b"text"}))
    assert [f.severity for f in report.findings if f.rule_id == rule] == [Severity.HIGH]


def test_symlink_member(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo("link")
        info.create_system = 3
        info.external_attr = 0o120777 << 16
        archive.writestr(info, "/etc/passwd")
    assert "zip.symlink" in rules(scan_bytes(tmp_path, buf.getvalue()))


def test_zip_bomb_by_ratio_is_a_limit(tmp_path: Path) -> None:
    blob = make_zip({"zeros.bin": b"\0" * (1 << 20)}, compression=zipfile.ZIP_DEFLATED)
    report = scan_bytes(tmp_path, blob, max_ratio=10)
    assert "scan.limit" in rules(report)


def test_total_unpacked_bytes_is_a_limit(tmp_path: Path) -> None:
    blob = make_zip({"a.txt": b"a" * 5000, "b.txt": b"b" * 5000}, compression=zipfile.ZIP_DEFLATED)
    report = scan_bytes(tmp_path, blob, max_unpacked_bytes=6000)
    assert [f.member for f in report.findings if f.rule_id == "scan.limit"] == ["b.txt"]


def test_deflated_members_are_scanned(tmp_path: Path) -> None:
    blob = make_zip({"payload": EVIL_PICKLE}, compression=zipfile.ZIP_DEFLATED)
    assert dangerous(scan_bytes(tmp_path, blob)) == ["payload"]


def test_nested_archives_are_scanned_to_the_depth_limit(tmp_path: Path) -> None:
    inner = torch_zip(EVIL_PICKLE)
    outer = make_zip({"inner.pt": inner})
    report = scan_bytes(tmp_path, make_zip({"outer.zip": outer}))
    assert dangerous(report) == ["outer.zip/inner.pt/archive/data.pkl"]
    limited = scan_bytes(tmp_path, make_zip({"outer.zip": outer}), max_nesting=1)
    assert dangerous(limited) == []
    assert "scan.limit" in rules(limited)


@pytest.mark.parametrize(
    ("wrap", "label"),
    [
        (gzip.compress, "<gzip>"),
        (bz2.compress, "<bzip2>"),
        (lzma.compress, "<xz>"),
        (zlib.compress, "<zlib>"),
    ],
)
def test_compressed_pickles_are_scanned(tmp_path: Path, wrap: object, label: str) -> None:
    assert callable(wrap)
    report = scan_bytes(tmp_path, wrap(EVIL_PICKLE), name="model.pkl")
    assert dangerous(report) == [label]


def test_truncated_gzip_is_incomplete_but_scanned(tmp_path: Path) -> None:
    blob = gzip.compress(EVIL_PICKLE + b"\0" * 10_000)[:-30]
    report = scan_bytes(tmp_path, blob)
    assert "scan.incomplete" in rules(report)
    assert dangerous(report) == ["<gzip>"]


def test_tar_traversal_and_links(tmp_path: Path) -> None:
    link = tarfile.TarInfo("link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    hard = tarfile.TarInfo("hard")
    hard.type = tarfile.LNKTYPE
    hard.linkname = "x"
    fifo = tarfile.TarInfo("fifo")
    fifo.type = tarfile.FIFOTYPE
    escape, content = tar_file("../up.pkl", EVIL_PICKLE)
    blob = make_tar([link, hard, fifo, escape], {"../up.pkl": content})
    report = scan_bytes(tmp_path, blob)
    assert {"tar.link", "tar.special-member", "tar.path-traversal"} <= rules(report)
    assert dangerous(report) == ["../up.pkl"]


def test_tar_gz_is_unwrapped(tmp_path: Path) -> None:
    info, content = tar_file("model/data.pkl", EVIL_PICKLE)
    blob = gzip.compress(make_tar([info], {info.name: content}))
    assert dangerous(scan_bytes(tmp_path, blob)) == ["<gzip>/model/data.pkl"]


def test_legacy_torch_tar_storages_member_is_audited(tmp_path: Path) -> None:
    members = [
        tar_file(n, c)
        for n, c in [
            ("sys_info", pickle.dumps({"little_endian": True}, protocol=2)),
            ("pickle", BENIGN_PICKLE),
            ("storages", EVIL_PICKLE),
            ("tensors", pickle.dumps(0, protocol=2)),
        ]
    ]
    blob = make_tar([m for m, _ in members], {m.name: c for m, c in members})
    report = scan_bytes(tmp_path, blob)
    assert dangerous(report) == ["storages"]
    assert {s.format for s in report.scanned} == {"pytorch-tar"}


def test_legacy_stacked_torch_file_scans_five_pickles(tmp_path: Path) -> None:
    streams = [TORCH_MAGIC, 1001, {"little_endian": True}]
    blob = b"".join(pickle.dumps(s, protocol=2) for s in streams)
    blob += EVIL_PICKLE + pickle.dumps(["0"], protocol=2) + b"\x05\x00\x00\x00raw storage bytes"
    report = scan_bytes(tmp_path, blob, name="model.pt")
    assert dangerous(report) == [None]
    assert "scan.incomplete" not in rules(report)


def test_npy_object_array_payload_is_audited(tmp_path: Path) -> None:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    report = scan_bytes(tmp_path, npy(header, EVIL_PICKLE))
    assert "numpy.object-array" in rules(report)
    assert report.max_severity == Severity.CRITICAL


def test_npz_object_member_is_audited(tmp_path: Path) -> None:
    header = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }"
    blob = make_zip({"a.npy": npy(header, EVIL_PICKLE)}, compression=zipfile.ZIP_DEFLATED)
    assert dangerous(scan_bytes(tmp_path, blob)) == ["a.npy"]


def test_npy_data_length_is_checked(tmp_path: Path) -> None:
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"
    assert scan_bytes(tmp_path, npy(header, b"\0" * 24)).findings == []
    report = scan_bytes(tmp_path, npy(header, b"\0" * 24 + EVIL_PICKLE))
    assert rules(report) == {"numpy.size-mismatch"}


def test_npy_header_that_is_code_is_not_run(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, npy("__import__('os').system('true')", b""))
    assert rules(report) == {"scan.incomplete"}


@pytest.mark.parametrize(
    "blob",
    [
        npy("{'descr': '<f4\\C', 'fortran_order': False, 'shape': (2, 3), }", b"\0" * 24),
        b"S'a\\Cb'\np0\n.",  # a protocol 0 pickle: STRING with an invalid escape
        b"(S'a\\Cb'\nios\nsystem\n.",  # INST: detected as a pickle, audited
        b"i\\C\n\\C\n.",  # no valid pickle, but its first opcode's argument warns
    ],
)
def test_an_invalid_escape_is_read_as_loaders_read_it_whatever_the_warning_filters(
    tmp_path: Path, blob: bytes
) -> None:
    """Python only warns about ``\\C`` in a quoted string, and pickle and numpy go on;
    the scanner's verdict must not depend on whether the host makes warnings errors."""
    found = {}
    for action in ("error", "ignore"):
        with warnings.catch_warnings():
            warnings.simplefilter(action)
            report = scan_bytes(tmp_path, blob)
        found[action] = [(f.rule_id, f.message) for f in report.findings]
        assert not any("Warning" in message for _, message in found[action]), found[action]
    assert found["error"] == found["ignore"]


def test_real_numpy_and_torch_files_are_clean(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.float32).reshape(3, 4))
    np.savez_compressed(tmp_path / "b.npz", x=np.ones(5), y=np.zeros((2, 2), dtype=np.int8))
    torch = pytest.importorskip("torch")
    state = torch.nn.Linear(3, 2).state_dict()
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    report = scan(tmp_path)
    assert report.findings == []
    assert {s.format for s in report.scanned if s.member is None} >= {
        "numpy",
        "npz",
        "pytorch-zip",
        "pytorch-legacy",
    }


def test_keras_archive_config_is_audited(tmp_path: Path) -> None:
    blob = make_zip({"config.json": b'{"class_name": "Lambda"}', "metadata.json": b"{}"})
    report = scan_bytes(tmp_path, blob, name="model.keras")
    assert [(f.rule_id, f.severity, f.member) for f in report.findings] == [
        ("keras.lambda", Severity.HIGH, "config.json")
    ]
