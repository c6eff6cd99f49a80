"""The folder walk, paths in reports, and the promise that no input crashes a scan."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import PathNotFoundError
from bastion.scanning import Limits, ScanReport, Severity, scan
from bastion.scanning._report import SCHEMA_VERSION
from tests.unit.scanning.crafted import BENIGN_PICKLE, EVIL_PICKLE, make_zip, torch_zip


def test_missing_path_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(PathNotFoundError):
        scan(tmp_path / "absent")


def test_paths_are_relative_to_the_root(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "weights.bin").write_bytes(EVIL_PICKLE)
    (tmp_path / "config.json").write_text('{"a": 1}')
    report = scan(tmp_path)
    assert {f.path for f in report.findings} == {"sub/weights.bin"}
    assert sorted(s.path for s in report.scanned) == ["config.json", "sub/weights.bin"]
    single = scan(tmp_path / "sub" / "weights.bin")
    assert {f.path for f in single.findings} == {"weights.bin"}


def test_symlinks_are_reported_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside.pkl"
    outside.write_bytes(EVIL_PICKLE)
    model = tmp_path / "model"
    model.mkdir()
    (model / "link.pkl").symlink_to(outside)
    report = scan(model)
    assert [(f.rule_id, f.path) for f in report.findings] == [("scan.symlink", "link.pkl")]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_special_files_are_reported_not_read(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    report = scan(tmp_path)
    assert [(f.rule_id, f.path) for f in report.findings] == [("scan.special-file", "pipe")]


def test_unknown_binary_fails_closed(tmp_path: Path) -> None:
    (tmp_path / "blob").write_bytes(bytes(range(256)))
    assert [f.rule_id for f in scan(tmp_path).findings] == ["scan.unknown-format"]


def test_recognised_but_unreadable_containers_are_findings(tmp_path: Path) -> None:
    (tmp_path / "m.7z").write_bytes(b"7z\xbc\xaf\x27\x1c" + b"\0" * 26)
    (tmp_path / "m.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    report = scan(tmp_path)
    assert {(f.rule_id, f.format) for f in report.findings} == {
        ("scan.incomplete", "7z"),
        ("scan.incomplete", "hdf5"),
    }


def test_extension_does_not_matter(tmp_path: Path) -> None:
    for name in ("model.safetensors", "weights.npy", "x.txt", "noext"):
        (tmp_path / name).write_bytes(EVIL_PICKLE)
    report = scan(tmp_path)
    dangerous = {f.path for f in report.findings if f.rule_id.startswith("pickle.global")}
    assert dangerous == {"model.safetensors", "weights.npy", "x.txt", "noext"}


def test_pickle_followed_by_a_zip_is_read_as_the_pickle(tmp_path: Path) -> None:
    (tmp_path / "polyglot.pkl").write_bytes(EVIL_PICKLE + make_zip({"a.txt": b"benign"}))
    report = scan(tmp_path)
    assert any(f.rule_id.startswith("pickle.global") for f in report.findings)


def test_report_dict_has_the_documented_shape(tmp_path: Path) -> None:
    (tmp_path / "m.pt").write_bytes(torch_zip(EVIL_PICKLE))
    body = scan(tmp_path).to_dict()
    assert body["schema_version"] == SCHEMA_VERSION == 1
    assert set(body) == {"schema_version", "root", "max_severity", "findings", "scanned"}
    first = body["findings"][0]
    assert set(first) == {
        "rule_id",
        "severity",
        "message",
        "path",
        "member",
        "format",
        "offset",
        "config_path",
    }
    assert (first["path"], first["member"], first["format"]) == (
        "m.pt",
        "archive/data.pkl",
        "pytorch-zip",
    )


def _assert_reports(report: ScanReport) -> None:
    assert isinstance(report, ScanReport)
    report.to_dict()


_SEEDS = [
    EVIL_PICKLE,
    BENIGN_PICKLE,
    torch_zip(BENIGN_PICKLE),
    make_zip({"a.npy": b"\x93NUMPY\x01\x00\x10\x00{'descr': '|O'}  \n" + BENIGN_PICKLE}),
]


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    seed=st.sampled_from(_SEEDS),
    edits=st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 4096),
)
def test_mutated_inputs_always_yield_a_report(
    tmp_path: Path, seed: bytes, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(seed)
    for at, value in edits:
        if data:
            data[at % len(data)] = value
    path = tmp_path / "fuzz.bin"
    path.write_bytes(bytes(data[: max(cut, len(data) // 2)]))
    _assert_reports(scan(path, limits=Limits(max_unpacked_bytes=1 << 20)))


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=2048))
def test_random_bytes_always_yield_a_report(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "random.bin"
    path.write_bytes(data)
    _assert_reports(scan(path, limits=Limits(max_unpacked_bytes=1 << 20)))


def test_git_metadata_is_left_out_unless_asked_for(tmp_path: Path) -> None:
    import pickle as _pickle
    import zlib

    (tmp_path / "config.json").write_text("{}")
    objects = tmp_path / ".git" / "objects" / "ab"
    objects.mkdir(parents=True)
    (objects / "cdef").write_bytes(zlib.compress(b"blob 3\x00abc"))
    (tmp_path / ".git" / "evil.pkl").write_bytes(_pickle.dumps(_pickle.loads))
    report = scan(tmp_path)
    assert [(f.rule_id, f.severity, f.path) for f in report.findings] == [
        ("scan.skipped", Severity.INFO, ".git")
    ]
    included = {f.rule_id for f in scan(tmp_path, include_git=True).findings}
    assert "pickle.global.dangerous" in included


def test_a_folder_named_as_a_file_is_reported_not_raised(tmp_path: Path) -> None:
    from bastion.scanning._scan import _scan_file

    report = ScanReport(root=str(tmp_path))
    (tmp_path / "was_a_file").mkdir()
    _scan_file(report, "was_a_file", str(tmp_path / "was_a_file"), 0, Limits())
    assert [f.rule_id for f in report.findings] == ["scan.special-file"]
