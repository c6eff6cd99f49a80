"""ONNX external data checked against the real folder (scanner-threats.md §D.37).

Models are real: built with ``onnx.helper`` and written by ``onnx.save_model(...,
save_as_external_data=True)``; hostile variants then move, link or rename the data
file, or rewrite a tensor's ``location``. ``onnx.load`` (which reads nothing but
the model and its data) confirms what the real loader makes of each layout.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from bastion.scanning import ScanReport, Severity, scan
from tests.unit.scanning.crafted import EVIL_PICKLE, make_zip

DATA = "weights.data"


def _model() -> onnx.ModelProto:
    weights = [
        numpy_helper.from_array(np.arange(256, dtype=np.float32), "w1"),
        numpy_helper.from_array(np.full(64, 0.5, dtype=np.float32), "w2"),
    ]
    outputs = [
        helper.make_tensor_value_info("y1", TensorProto.FLOAT, [256]),
        helper.make_tensor_value_info("y2", TensorProto.FLOAT, [64]),
    ]
    nodes = [helper.make_node("Identity", [f"w{i}"], [f"y{i}"]) for i in (1, 2)]
    graph = helper.make_graph(nodes, "g", [], outputs, initializer=weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def save(folder: Path, name: str = "model.onnx") -> Path:
    """A real model whose two initializers live in ``folder/weights.data``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    onnx.save_model(_model(), path, save_as_external_data=True, location=DATA, size_threshold=0)
    assert (folder / DATA).is_file()
    return path


def relocate(path: Path, location: str) -> None:
    """Point every external tensor of the model at ``path`` to ``location``."""
    model = onnx.load_model(path, load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    path.write_bytes(model.SerializeToString())


def onnx_refuses(path: Path) -> str:
    with pytest.raises(Exception) as caught:  # noqa: PT011 - onnx raises several types
        onnx.load(path)
    return str(caught.value)


def external(report: ScanReport) -> list[tuple[str, Severity]]:
    return sorted(
        (f.rule_id, f.severity) for f in report.findings if f.rule_id.startswith("onnx.external")
    )


# --- a well-formed model ---------------------------------------------------------------


def test_real_model_with_its_data_is_info_only(tmp_path: Path) -> None:
    path = save(tmp_path)
    onnx.checker.check_model(onnx.load(path))  # the real loader reads it
    report = scan(path)
    assert [(f.rule_id, f.severity) for f in report.findings] == [
        ("onnx.external-data", Severity.INFO)
    ]
    assert DATA in report.findings[0].message


def test_folder_scan_reports_the_data_file_as_external_data(tmp_path: Path) -> None:
    save(tmp_path)
    report = scan(tmp_path)
    assert [(f.path, f.rule_id, f.severity) for f in report.findings] == [
        ("model.onnx", "onnx.external-data", Severity.INFO)
    ]
    assert {(s.path, s.format) for s in report.scanned} == {
        ("model.onnx", "onnx"),
        (DATA, "onnx-external-data"),
    }


def test_a_data_file_that_is_a_pickle_is_still_audited(tmp_path: Path) -> None:
    save(tmp_path)
    (tmp_path / DATA).write_bytes(EVIL_PICKLE)
    report = scan(tmp_path)
    assert ("pickle.global.dangerous", DATA) in {(f.rule_id, f.path) for f in report.findings}


def test_an_unreferenced_unknown_file_stays_unknown(tmp_path: Path) -> None:
    save(tmp_path)
    (tmp_path / "other.data").write_bytes((tmp_path / DATA).read_bytes())
    report = scan(tmp_path)
    assert ("scan.unknown-format", "other.data") in {(f.rule_id, f.path) for f in report.findings}


def test_data_in_a_subfolder_is_fine(tmp_path: Path) -> None:
    path = save(tmp_path)
    (tmp_path / "blobs").mkdir()
    (tmp_path / DATA).rename(tmp_path / "blobs" / DATA)
    relocate(path, f"./blobs/{DATA}")
    onnx.load(path)
    assert external(scan(path)) == [("onnx.external-data", Severity.INFO)]


# --- layouts the loaders refuse or that read something else ---------------------------


def test_missing_data_file(tmp_path: Path) -> None:
    path = save(tmp_path)
    (tmp_path / DATA).unlink()
    assert "not regular file" in onnx_refuses(path)
    assert external(scan(path)) == [("onnx.external-data-missing", Severity.MEDIUM)]


def test_missing_folder_on_the_way(tmp_path: Path) -> None:
    path = save(tmp_path)
    relocate(path, f"nowhere/{DATA}")
    assert external(scan(path)) == [("onnx.external-data-missing", Severity.MEDIUM)]


def test_a_file_where_a_folder_is_expected(tmp_path: Path) -> None:
    path = save(tmp_path)
    relocate(path, f"{DATA}/inner")
    assert external(scan(path)) == [("onnx.external-data-missing", Severity.MEDIUM)]


def test_symlink_out_of_the_folder_is_high(tmp_path: Path) -> None:
    path = save(tmp_path / "model")
    secret = tmp_path / "secret.txt"
    (tmp_path / "model" / DATA).rename(secret)
    (tmp_path / "model" / DATA).symlink_to(secret)
    assert "symbolic link" in onnx_refuses(path)
    report = scan(path)
    assert external(report) == [("onnx.external-data", Severity.HIGH)]
    assert "out of the model's folder" in report.findings[0].message


def test_symlinked_folder_on_the_way_is_high(tmp_path: Path) -> None:
    path = save(tmp_path / "model")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "model" / DATA).rename(tmp_path / "elsewhere" / DATA)
    (tmp_path / "model" / "sub").symlink_to(tmp_path / "elsewhere")
    relocate(path, f"sub/{DATA}")
    assert external(scan(path)) == [("onnx.external-data", Severity.HIGH)]


def test_symlink_inside_the_folder_is_medium(tmp_path: Path) -> None:
    path = save(tmp_path)
    (tmp_path / DATA).rename(tmp_path / "real.data")
    (tmp_path / DATA).symlink_to("real.data")
    assert "symbolic link" in onnx_refuses(path)
    report = scan(path)
    assert external(report) == [("onnx.external-data", Severity.MEDIUM)]
    assert "loaders disagree" in report.findings[0].message


def test_hard_link_is_high(tmp_path: Path) -> None:
    path = save(tmp_path / "model")
    os.link(tmp_path / "model" / DATA, tmp_path / "outside.data")
    assert "hard links" in onnx_refuses(path)
    report = scan(path)
    assert external(report) == [("onnx.external-data", Severity.HIGH)]
    assert "2 hard links" in report.findings[0].message


def test_fifo_is_high_and_never_opened(tmp_path: Path) -> None:
    path = save(tmp_path)
    (tmp_path / DATA).unlink()
    os.mkfifo(tmp_path / DATA)
    report = scan(path)  # opening the FIFO would block: the check only lstat()s it
    assert external(report) == [("onnx.external-data", Severity.HIGH)]
    assert "not a regular file" in report.findings[0].message


def test_folder_as_location_is_high(tmp_path: Path) -> None:
    path = save(tmp_path)
    (tmp_path / "dir").mkdir()
    relocate(path, "dir")
    assert external(scan(path)) == [("onnx.external-data", Severity.HIGH)]


@pytest.mark.parametrize("location", ["../outside.data", "/etc/hostname", "sub/../../x"])
def test_traversal_strings_are_high_even_if_the_file_exists(tmp_path: Path, location: str) -> None:
    path = save(tmp_path / "model")
    (tmp_path / "outside.data").write_bytes((tmp_path / "model" / DATA).read_bytes())
    relocate(path, location)
    onnx_refuses(path)
    report = scan(path)
    assert external(report) == [("onnx.external-data", Severity.HIGH)]
    assert "CVE-2024-27318" in report.findings[0].message


# --- containers: only the strings are checked ------------------------------------------


def test_inside_a_zip_only_the_string_is_checked(tmp_path: Path) -> None:
    # The data file is not in the archive; a member has no folder on disk to check.
    path = save(tmp_path / "src")
    archive = tmp_path / "model.zip"
    archive.write_bytes(make_zip({"m/model.onnx": path.read_bytes()}))
    assert external(scan(archive)) == [("onnx.external-data", Severity.INFO)]
    relocate(path, "../../etc/passwd")
    archive.write_bytes(make_zip({"m/model.onnx": path.read_bytes()}))
    assert external(scan(archive)) == [("onnx.external-data", Severity.HIGH)]


# --- any location: a finding, never an exception --------------------------------------

_LOCATIONS = st.lists(
    st.sampled_from(["", ".", "..", DATA, "dir", "link", "fifo", "nope", "a\\b", "x\x00y", "é"]),
    min_size=1,
    max_size=4,
).map("/".join) | st.text(max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(location=_LOCATIONS)
def test_any_location_gives_one_finding_and_no_error(location: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "model"
        path = save(folder)
        (folder / "dir").mkdir()
        (folder / "link").symlink_to(folder / DATA)
        os.mkfifo(folder / "fifo")
        relocate(path, location)
        report = scan(path)
        found = external(report)
        assert len(found) == 1
        assert not [f for f in report.findings if f.rule_id == "scan.incomplete"]
        _, severity = found[0]
        if severity == Severity.INFO:
            # Only a plain, singly linked regular file inside the folder passes.
            target = folder.joinpath(*[p for p in location.split("/") if p not in ("", ".")])
            assert not target.is_symlink()
            assert target.is_file()
            assert target.resolve().is_relative_to(folder.resolve())
            assert target.stat().st_nlink == 1
