"""``scan_tree``: a folder that is not on disk, scanned as ``scan`` scans one that is.

Parity is checked on the folders the other scanning tests build (real ONNX models with
external data, tensor bundles, pickles, archives): a tree that reads the same folder
must give the same report. The virtual folder's ``lstat`` is checked against a real
folder holding the same files.
"""

from __future__ import annotations

import errno
import io
import os
import pickle
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import InputError, IntegrityError, ModelTreeError
from bastion.scanning import Limits, ScanReport, Tree, scan, scan_tree
from bastion.scanning._tree import _TreeNeighbours
from tests.unit.scanning.crafted import BENIGN_PICKLE, EVIL_PICKLE, make_zip, torch_zip
from tests.unit.scanning.test_onnx_external import DATA, relocate, save
from tests.unit.scanning.test_tf_bundle import TENSORS, floats, saved_model_folder, write_bundle


class DiskBackedTree:
    """The regular files below ``root``, as a tree."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def files(self) -> Mapping[str, int]:
        return {
            p.relative_to(self.root).as_posix(): p.stat().st_size
            for p in self.root.rglob("*")
            if p.is_file()
        }

    def open(self, name: str) -> BinaryIO:
        return (self.root / name).open("rb")


class MemoryTree:
    """Files held as bytes; ``failing`` names open with that exception instead."""

    def __init__(
        self, contents: Mapping[str, bytes], failing: Mapping[str, Exception] | None = None
    ) -> None:
        self.contents = contents
        self.failing = failing or {}

    def files(self) -> Mapping[str, int]:
        return {name: len(data) for name, data in self.contents.items()}

    def open(self, name: str) -> BinaryIO:
        if name in self.failing:
            raise self.failing[name]
        return io.BytesIO(self.contents[name])


def without_root(report: ScanReport) -> dict[str, Any]:
    body = report.to_dict()
    del body["root"]
    return body


def assert_parity(folder: Path) -> ScanReport:
    """``scan_tree`` over ``folder`` reports exactly what ``scan(folder)`` does."""
    tree_report = scan_tree(DiskBackedTree(folder))
    assert tree_report.root == "."
    assert without_root(tree_report) == without_root(scan(folder))
    return tree_report


# --- parity with a disk scan ---------------------------------------------------------------


def _onnx_with_data(root: Path) -> None:
    save(root)


def _onnx_data_missing(root: Path) -> None:
    save(root)
    (root / DATA).unlink()


def _onnx_data_in_a_subfolder(root: Path) -> None:
    path = save(root)
    (root / "blobs").mkdir()
    (root / DATA).rename(root / "blobs" / DATA)
    relocate(path, f"./blobs/{DATA}")


def _onnx_model_in_a_subfolder(root: Path) -> None:
    save(root / "onnx" / "deep")
    (root / "README.md").write_text("# model\n")


def _onnx_absolute_location(root: Path) -> None:
    relocate(save(root), "/etc/hostname")


def _onnx_traversal(root: Path) -> None:
    relocate(save(root / "m"), f"../{DATA}")
    (root / DATA).write_bytes(b"\x01" * 64)


def _onnx_missing_folder(root: Path) -> None:
    relocate(save(root), f"nowhere/{DATA}")


def _onnx_file_where_a_folder_is_expected(root: Path) -> None:
    relocate(save(root), f"{DATA}/inner")


def _onnx_folder_as_location(root: Path) -> None:
    relocate(save(root), "dir/")
    (root / "dir").mkdir()
    (root / "dir" / "x.txt").write_text("x")


def _onnx_data_is_a_pickle(root: Path) -> None:
    save(root)
    (root / DATA).write_bytes(EVIL_PICKLE)


def _saved_model(root: Path) -> None:
    saved_model_folder(root)


def _bundle_shard_missing(root: Path) -> None:
    write_bundle(root / "variables", TENSORS)
    (root / "variables" / "variables.data-00000-of-00001").unlink()


def _bundle_shard_too_short(root: Path) -> None:
    write_bundle(root / "variables", TENSORS)
    data = root / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-4])


def _bundle_three_shards_and_an_undeclared_one(root: Path) -> None:
    write_bundle(root, {f"t{i}": floats(i, i) for i in range(7)}, num_shards=3, prefix="ckpt")
    (root / "ckpt.data-00003-of-00004").write_bytes(floats(1.5) * 10)


def _bundle_index_renamed(root: Path) -> None:
    write_bundle(root / "variables", TENSORS)
    (root / "variables" / "variables.index").rename(root / "variables" / "variables.idx")


def _pickles_archives_and_unknowns(root: Path) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "a" / "b" / "c" / "weights.bin").write_bytes(EVIL_PICKLE)
    (root / "a" / "benign.pkl").write_bytes(BENIGN_PICKLE)
    (root / "model.pt").write_bytes(torch_zip(EVIL_PICKLE))
    (root / "bundle.zip").write_bytes(make_zip({"x/evil.pkl": EVIL_PICKLE, "y.txt": b"hi"}))
    (root / "model.safetensors").write_bytes(
        safetensors.numpy.save({"w": np.arange(8, dtype=np.float32)})
    )
    (root / "blob").write_bytes(bytes(range(256)))
    (root / "empty").write_bytes(b"")
    (root / "config.json").write_text('{"a": 1}')
    (root / "caf\u00e9 \u00fc.bin").write_bytes(EVIL_PICKLE)


LAYOUTS: list[Callable[[Path], None]] = [
    _onnx_with_data,
    _onnx_data_missing,
    _onnx_data_in_a_subfolder,
    _onnx_model_in_a_subfolder,
    _onnx_absolute_location,
    _onnx_traversal,
    _onnx_missing_folder,
    _onnx_file_where_a_folder_is_expected,
    _onnx_folder_as_location,
    _onnx_data_is_a_pickle,
    _saved_model,
    _bundle_shard_missing,
    _bundle_shard_too_short,
    _bundle_three_shards_and_an_undeclared_one,
    _bundle_index_renamed,
    _pickles_archives_and_unknowns,
]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda f: f.__name__.strip("_"))
def test_a_tree_reports_what_the_folder_scan_reports(
    tmp_path: Path, layout: Callable[[Path], None]
) -> None:
    root = tmp_path / "model"
    root.mkdir()
    layout(root)
    report = assert_parity(root)
    assert report.findings or report.scanned


def test_parity_covers_the_folder_level_checks(tmp_path: Path) -> None:
    # The layouts above are only worth comparing if the checks that read the folder ran.
    root = tmp_path / "m"
    root.mkdir()
    _onnx_data_in_a_subfolder(root)
    report = assert_parity(root)
    assert {(s.path, s.format) for s in report.scanned} == {
        ("model.onnx", "onnx"),
        (f"blobs/{DATA}", "onnx-external-data"),
    }
    shard = tmp_path / "b"
    shard.mkdir()
    _bundle_shard_too_short(shard)
    rules = {(f.rule_id, f.path) for f in assert_parity(shard).findings}
    assert rules == {
        ("tf-bundle.data-range", "variables/variables.index"),
        ("scan.unknown-format", "variables/variables.data-00000-of-00001"),
    }


def test_in_memory_tree_claims_onnx_data_and_shards(tmp_path: Path) -> None:
    saved_model_folder(tmp_path / "sm")
    save(tmp_path / "sm" / "onnx")
    disk = DiskBackedTree(tmp_path / "sm")
    memory = MemoryTree({name: (tmp_path / "sm" / name).read_bytes() for name in disk.files()})
    report = scan_tree(memory)
    assert without_root(report) == without_root(scan(tmp_path / "sm"))
    formats = {s.path: s.format for s in report.scanned}
    assert formats[f"onnx/{DATA}"] == "onnx-external-data"
    assert formats["variables/variables.data-00000-of-00001"] == "tf-tensor-bundle-data"


# --- what differs: .git is scanned ---------------------------------------------------------


def test_git_folder_is_scanned_in_a_tree(tmp_path: Path) -> None:
    (tmp_path / ".git" / "objects").mkdir(parents=True)
    (tmp_path / ".git" / "evil.pkl").write_bytes(pickle.dumps(pickle.loads))
    (tmp_path / ".git" / "objects" / "blob").write_bytes(EVIL_PICKLE)
    (tmp_path / "config.json").write_text("{}")
    on_disk = scan(tmp_path)
    assert [(f.rule_id, f.path) for f in on_disk.findings] == [("scan.skipped", ".git")]
    report = scan_tree(DiskBackedTree(tmp_path))
    dangerous = {f.path for f in report.findings if f.rule_id == "pickle.global.dangerous"}
    assert dangerous == {".git/evil.pkl", ".git/objects/blob"}
    assert "scan.skipped" not in {f.rule_id for f in report.findings}
    assert without_root(report) == without_root(scan(tmp_path, include_git=True))


# --- files that cannot be opened -----------------------------------------------------------


def test_unopenable_files_are_incomplete_and_the_scan_goes_on() -> None:
    tree = MemoryTree(
        {"a.bin": b"", "b.pkl": EVIL_PICKLE, "c.bin": b"", "d.json": b"{}"},
        failing={
            "a.bin": PermissionError(errno.EACCES, os.strerror(errno.EACCES)),
            "c.bin": IntegrityError("segment 3 of blob 0a1b failed its MAC"),
        },
    )
    report = scan_tree(tree)
    incomplete = [(f.path, f.message, f.format) for f in report.unscanned]
    assert incomplete == [
        ("a.bin", f"cannot open ({os.strerror(errno.EACCES)}); not scanned", "unknown"),
        ("c.bin", "cannot open (integrity check failed); not scanned", "unknown"),
    ]
    assert "0a1b" not in str(report.to_dict())  # the integrity detail stays in the log
    assert ("pickle.global.dangerous", "b.pkl") in {(f.rule_id, f.path) for f in report.findings}
    assert [(s.path, s.format) for s in report.scanned] == [("b.pkl", "pickle"), ("d.json", "text")]


def test_os_error_without_strerror_is_named_by_its_type() -> None:
    report = scan_tree(MemoryTree({"x": b"1"}, failing={"x": OSError("detail")}))
    assert [f.message for f in report.unscanned] == ["cannot open (OSError); not scanned"]


def test_unopenable_onnx_data_is_still_reported_not_claimed(tmp_path: Path) -> None:
    save(tmp_path)
    contents = {name: (tmp_path / name).read_bytes() for name in ("model.onnx", DATA)}
    report = scan_tree(MemoryTree(contents, failing={DATA: OSError(errno.EIO, "I/O error")}))
    assert {(f.rule_id, f.path) for f in report.findings} == {
        ("onnx.external-data", "model.onnx"),
        ("scan.incomplete", DATA),
    }
    assert [s.path for s in report.scanned] == ["model.onnx"]


def test_a_stream_that_fails_while_read_is_incomplete() -> None:
    class Failing(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            raise IntegrityError("tampered")

    class Tampered(MemoryTree):
        def open(self, name: str) -> BinaryIO:
            return Failing(self.contents[name])

    report = scan_tree(Tampered({"m.pkl": EVIL_PICKLE}))
    assert [(f.rule_id, f.path) for f in report.findings] == [("scan.incomplete", "m.pkl")]


# --- names that are not a folder's -------------------------------------------------------

BAD_NAMES = [
    "",
    "/abs.pkl",
    "a//b",
    "a/",
    ".",
    "./a",
    "a/./b",
    "..",
    "../a",
    "a/../b",
    "a\\b",
    "a\x00b",
    "\udcff.bin",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_unclean_names_are_refused_before_any_scan(name: str) -> None:
    opened: list[str] = []

    class Watched(MemoryTree):
        def open(self, name: str) -> BinaryIO:
            opened.append(name)
            return super().open(name)

    with pytest.raises(ModelTreeError) as caught:
        scan_tree(Watched({"fine.pkl": EVIL_PICKLE, name: b"x"}))
    assert isinstance(caught.value, InputError)
    assert "tree file name" in str(caught.value)
    assert "relative path" in str(caught.value)
    assert opened == []


def test_a_name_that_is_both_file_and_folder_is_refused() -> None:
    with pytest.raises(ModelTreeError, match="both as a file and as the folder"):
        scan_tree(MemoryTree({"a/b": b"", "a/b/c.bin": b""}))


@pytest.mark.parametrize("size", [-1, True, 1.5, "3", None])
def test_sizes_must_be_byte_counts(size: object) -> None:
    class Sized(MemoryTree):
        def files(self) -> Mapping[str, int]:
            return {"x.bin": size}  # type: ignore[dict-item]

    with pytest.raises(ModelTreeError, match="not a byte count"):
        scan_tree(Sized({"x.bin": b""}))


def test_non_string_names_are_refused() -> None:
    class Bytes(MemoryTree):
        def files(self) -> Mapping[str, int]:
            return {b"x.bin": 1}  # type: ignore[dict-item]

    with pytest.raises(ModelTreeError, match="not a string"):
        scan_tree(Bytes({}))


def test_memory_tree_is_a_tree() -> None:
    tree: Tree = MemoryTree({})
    assert scan_tree(tree, limits=Limits()).to_dict()["findings"] == []


# --- the virtual folder answers as the disk would ----------------------------------------

_PART = st.sampled_from(["a", "b", "c.bin", "d", "x"])
_NAMES = st.lists(st.lists(_PART, min_size=1, max_size=3).map("/".join), max_size=6)
_QUERY = st.lists(st.sampled_from(["a", "b", "c.bin", "d", "x", "", "."]), max_size=5).map("/".join)


def _outcome(call: Callable[[], os.stat_result]) -> tuple[str, int] | str:
    try:
        st_ = call()
    except OSError as exc:
        return f"{type(exc).__name__}:{exc.strerror}"
    kind = "file" if st_.st_mode & 0o170000 == 0o100000 else "dir"
    return kind, (st_.st_size if kind == "file" else -1)


@settings(max_examples=150, deadline=None)
@given(names=_NAMES, query=_QUERY)
def test_tree_lstat_matches_a_real_folder(names: list[str], query: str) -> None:
    files = {name: len(name) for name in names}
    # A name may also be another's folder; a folder on disk cannot be both.
    if any(other.startswith(name + "/") for name in files for other in files):
        return
    with tempfile.TemporaryDirectory() as scratch:
        for name, size in files.items():
            path = Path(scratch, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"\0" * size)
        neighbours = _TreeNeighbours(files)
        on_disk = _outcome(lambda: os.lstat(scratch + "/" + query))
        assert _outcome(lambda: neighbours.lstat("/" + query)) == on_disk
        if not isinstance(on_disk, str):
            real = os.path.relpath(
                os.path.realpath(scratch + "/" + query), os.path.realpath(scratch)
            )
            expected = "/" if real == "." else "/" + real
            assert neighbours.realpath("/" + query) == expected


# --- any tree: a report or a clear refusal, never a crash --------------------------------

_SEEDS = [EVIL_PICKLE, BENIGN_PICKLE, torch_zip(BENIGN_PICKLE), b"", b"{}", bytes(range(64))]
_CLEAN_PART = st.sampled_from(["a", "b.bin", ".git", "model.onnx", "x y"]) | st.text(
    st.characters(codec="utf-8", exclude_characters="/\\\x00"),
    min_size=1,
    max_size=6,
).filter(lambda part: part not in (".", ".."))
_ANY_PART = _CLEAN_PART | st.sampled_from(["", ".", "..", "x\\y", "n\x00", "\udcff"]) | st.text()
_CLEAN_NAME = st.lists(_CLEAN_PART, min_size=1, max_size=3).map("/".join)
_ANY_NAME = st.lists(_ANY_PART, min_size=1, max_size=3).map("/".join)
_CONTENT = st.sampled_from(_SEEDS) | st.binary(max_size=300)


def _clean(names: list[str]) -> bool:
    for name in names:
        if "\\" in name or "\x00" in name or any(0xD800 <= ord(c) <= 0xDFFF for c in name):
            return False
        if any(part in ("", ".", "..") for part in name.split("/")):
            return False
    return not any(other.startswith(name + "/") for name in names for other in names)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    contents=st.dictionaries(_CLEAN_NAME, _CONTENT, max_size=6),
    extra=st.none() | st.tuples(_ANY_NAME, _CONTENT),
)
def test_any_tree_gives_a_report_or_a_clear_error(
    contents: dict[str, bytes], extra: tuple[str, bytes] | None
) -> None:
    if extra is not None:
        contents[extra[0]] = extra[1]
    tree = MemoryTree(contents)
    limits = Limits(max_unpacked_bytes=1 << 20)
    if not _clean(list(contents)):
        with pytest.raises(ModelTreeError) as caught:
            scan_tree(tree, limits=limits)
        message = str(caught.value)
        assert "tree" in message
        assert "relative path" in message or "both as a file and as the folder" in message
        return
    report = scan_tree(tree, limits=limits)
    # Fail closed: every file is scanned or has a finding, named as the tree names it.
    seen = {s.path for s in report.scanned} | {f.path for f in report.findings}
    assert seen == set(contents)
    with tempfile.TemporaryDirectory() as scratch:
        for name, data in contents.items():
            path = Path(scratch, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        on_disk = scan(scratch, limits=limits, include_git=True)
    assert without_root(report) == without_root(on_disk)
