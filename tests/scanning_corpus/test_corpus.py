"""The corpus is what it claims: malicious samples really run their payload under the
real loader, benign ones load in the loaders' restricted modes and run nothing, and
each container or opcode trick is really in the file.

Loading happens only in a subprocess (``_load.py``), in an empty working directory,
never in the test process. Samples whose loader is not installed with the project
(``NOT_INSTALLED``: TensorFlow) are not loaded; what can be checked without it is.
"""

from __future__ import annotations

import io
import json
import pickle
import pickletools
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.scanning_corpus._savedmodel_samples import SAVEDMODEL_MALICIOUS
from tests.scanning_corpus.generate import (
    BENIGN_NAMES,
    LOADERS,
    MALICIOUS_NAMES,
    NOT_INSTALLED,
    NOT_LOADED_HERE,
    Sample,
)

LOAD_SCRIPT = Path(__file__).with_name("_load.py")
#: The one malicious sample whose effect is a module attribute, not a marker file.
MODULE_PATCH = "build_module_dict_monkeypatch.pkl"
#: Malicious samples the current real loader refuses, with the error it raises.
LOADER_REFUSES = {
    "cve_2024_27318_onnx_external_data_traversal.onnx": "points outside the directory",
}
#: Payloads that run in a child process the loader does not wait for, or at exit.
SETTLE_SECONDS = 10.0

Outcome = dict[str, str | None]


def run_loaders(samples: list[Sample], *, safe: bool, workdir: Path, io_dir: Path) -> Outcome:
    """Load each sample with its real loader in one subprocess; name -> error or None."""
    request, result = io_dir / "request.json", io_dir / "result.json"
    items = [
        {"name": s.name, "path": str(s.path), "loader": s.loader, "safe": safe} for s in samples
    ]
    request.write_text(json.dumps(items))
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", str(LOAD_SCRIPT), str(request), str(result)],
        cwd=workdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    outcome: Outcome = json.loads(result.read_text())
    return outcome


def _wait_for(paths: list[Path]) -> None:
    deadline = time.monotonic() + SETTLE_SECONDS
    while not all(path.exists() for path in paths) and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture(scope="module")
def malicious_run(
    corpus: list[Sample], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Outcome, Path]:
    samples = [
        s
        for s in corpus
        if s.expects_detection and s.name != MODULE_PATCH and s.name not in NOT_LOADED_HERE
    ]
    workdir = tmp_path_factory.mktemp("malicious-workdir")
    outcome = run_loaders(
        samples, safe=False, workdir=workdir, io_dir=tmp_path_factory.mktemp("malicious-io")
    )
    _wait_for([s.marker for s in samples if s.marker is not None and s.loader_runs_payload])
    return outcome, workdir


@pytest.fixture(scope="module")
def benign_run(
    corpus: list[Sample], corpus_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Outcome, Path, set[Path]]:
    markers = corpus_root / "markers"
    before = set(markers.iterdir())
    workdir = tmp_path_factory.mktemp("benign-workdir")
    samples = [s for s in corpus if not s.expects_detection and s.name not in NOT_LOADED_HERE]
    outcome = run_loaders(
        samples, safe=True, workdir=workdir, io_dir=tmp_path_factory.mktemp("benign-io")
    )
    return outcome, workdir, set(markers.iterdir()) - before


def test_corpus_matches_its_tables(corpus: list[Sample]) -> None:
    assert [s.name for s in corpus] == [*BENIGN_NAMES, *MALICIOUS_NAMES]
    assert all(s.expects_detection == (s.name in MALICIOUS_NAMES) for s in corpus)
    assert all(s.path.is_file() and s.loader in LOADERS for s in corpus)
    assert all(
        (s.marker is None) == (not s.expects_detection) for s in corpus if s.name != MODULE_PATCH
    )
    assert {s.name for s in corpus if s.loader in NOT_INSTALLED} == NOT_LOADED_HERE
    assert all(s.loader_runs_payload for s in corpus if s.name in NOT_LOADED_HERE)


@pytest.mark.parametrize(
    "name", [n for n in MALICIOUS_NAMES if n != MODULE_PATCH and n not in NOT_LOADED_HERE]
)
def test_real_loader_runs_the_payload(
    name: str, corpus_by_name: dict[str, Sample], malicious_run: tuple[Outcome, Path]
) -> None:
    sample = corpus_by_name[name]
    outcome, _ = malicious_run
    assert sample.marker is not None
    if sample.loader_runs_payload:
        assert sample.marker.exists(), f"{sample.loader} did not run it: {outcome[name]}"
    elif name in LOADER_REFUSES:
        assert outcome[name] is not None
        assert LOADER_REFUSES[name] in outcome[name]
        assert not sample.marker.exists()
    else:
        # Documented differential (C.32): torch 2.13 reads the last of two data.pkl
        # entries, so the malicious first one loads cleanly and runs nothing.
        assert outcome[name] is None
        assert not sample.marker.exists()


def test_payloads_touch_nothing_but_their_markers(
    corpus_root: Path, corpus: list[Sample], malicious_run: tuple[Outcome, Path]
) -> None:
    _, workdir = malicious_run
    assert list(workdir.iterdir()) == []
    expected = {s.marker for s in corpus if s.marker is not None and s.loader_runs_payload}
    assert set((corpus_root / "markers").iterdir()) <= expected


def test_build_on_a_module_patches_it(corpus_by_name: dict[str, Sample], tmp_path: Path) -> None:
    # A.17: no callable at all; the effect is an attribute written into json.decoder.
    sample = corpus_by_name[MODULE_PATCH]
    probe = (
        "import json.decoder, pickle, sys\n"
        "with open(sys.argv[1], 'rb') as f: pickle.load(f)\n"
        "print(json.decoder.BASTION_PROBE)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(sample.path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == MODULE_PATCH


@pytest.mark.parametrize(
    "name", sorted(r.name for r in SAVEDMODEL_MALICIOUS if r.runs_at_load), ids=str
)
def test_savedmodel_that_runs_at_load_aims_at_its_marker(
    name: str, corpus_by_name: dict[str, Sample]
) -> None:
    # Not loaded here (TensorFlow is not installed); loaded by hand with TensorFlow 2.21,
    # these created their marker. Statically: the payload names this sample's marker.
    sample = corpus_by_name[name]
    assert sample.marker is not None
    assert str(sample.marker).encode() in sample.path.read_bytes()
    assert not sample.marker.exists()


@pytest.mark.parametrize("name", [n for n in BENIGN_NAMES if n not in NOT_LOADED_HERE])
def test_benign_sample_loads_in_restricted_mode(
    name: str, benign_run: tuple[Outcome, Path, set[Path]]
) -> None:
    outcome, _, _ = benign_run
    assert outcome[name] is None


def test_benign_loads_run_nothing(benign_run: tuple[Outcome, Path, set[Path]]) -> None:
    _, workdir, new_markers = benign_run
    assert new_markers == set()
    assert list(workdir.iterdir()) == []


def _opcodes(data: bytes) -> list[str]:
    return [op.name for op, _, _ in pickletools.genops(io.BytesIO(data))]


def _frame_desync(data: bytes) -> None:
    ops = _opcodes(data)
    assert "FRAME" in ops
    assert not {"GLOBAL", "STACK_GLOBAL", "REDUCE"} & set(ops), "pickletools must see no call"


def _zip_error(match: str) -> Callable[[bytes], None]:
    def check(data: bytes) -> None:
        with (
            zipfile.ZipFile(io.BytesIO(data)) as archive,
            pytest.raises(zipfile.BadZipFile, match=match),
        ):
            archive.read("archive/data.pkl")

    return check


def _local_flags(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        info = archive.getinfo("archive/data.pkl")
    assert not info.flag_bits & 0x60
    assert (
        int.from_bytes(data[info.header_offset + 6 : info.header_offset + 8], "little") & 0x60
        == 0x60
    )


def _duplicates(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist().count("archive/data.pkl") == 2


def _odd_folder(data: bytes) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert {n.split("/")[0] for n in archive.namelist()} == {"model.safetensors"}


def _polyglot(data: bytes) -> None:
    assert data[:1] == pickle.PROTO
    assert zipfile.is_zipfile(io.BytesIO(data))


def _no_proto(data: bytes) -> None:
    assert _opcodes(data)[:3] == ["SHORT_BINUNICODE", "SHORT_BINUNICODE", "STACK_GLOBAL"]


def _computed_names(data: bytes) -> None:
    assert b"system" not in data
    assert _opcodes(data).count("MEMOIZE") == 2


def _concatenated(data: bytes) -> None:
    first = io.BytesIO(data)
    pickletools.dis(first, out=io.StringIO())
    assert 0 < first.tell() < len(data)


def _legacy_tar(data: bytes) -> None:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert set(tar.getnames()) == {"sys_info", "pickle", "storages", "tensors"}


def _torch_magic(data: bytes) -> None:
    # The first pickle of the stream, the magic number's, calls os.system first.
    ops = list(pickletools.genops(io.BytesIO(data)))
    assert "REDUCE" in {op.name for op, _, _ in ops}
    assert ops[-2][1] == 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER


def _onnx_outside(data: bytes) -> None:
    # The one initializer keeps no bytes of its own: they are external, in ../onnx_outside.bin.
    from onnx import ModelProto, TensorProto

    (tensor,) = ModelProto.FromString(data).graph.initializer
    assert tensor.data_location == TensorProto.EXTERNAL
    assert not tensor.raw_data
    assert {e.key: e.value for e in tensor.external_data}["location"] == "../onnx_outside.bin"


TRICKS: dict[str, Callable[[bytes], None]] = {
    "cpython_frame_desync_binunicode.pkl": _frame_desync,
    "cve_2025_10156_zip_crc_mismatch.pt": _zip_error("Bad CRC-32"),
    "cve_2025_1944_local_header_name_mismatch.pt": _zip_error("differ"),
    "cve_2025_1945_local_header_flag_bits.pt": _local_flags,
    "zip_duplicate_data_pkl_malicious_first.pt": _duplicates,
    "zip_duplicate_data_pkl_malicious_last.pt": _duplicates,
    "torch_zip_odd_folder_name.pt": _odd_folder,
    "polyglot_pickle_then_zip.pkl": _polyglot,
    "ghsa_9gvj_stack_global_first_opcodes.pkl": _no_proto,
    "rot13_computed_stack_global.pkl": _computed_names,
    "concatenated_streams_benign_first.pkl": _concatenated,
    "torch_legacy_tar_storages_payload.pt": _legacy_tar,
    "ghsa_97f8_legacy_magic_number_reduce.pt": _torch_magic,
    "cve_2024_27318_onnx_external_data_traversal.onnx": _onnx_outside,
}


@pytest.mark.parametrize("name", sorted(TRICKS))
def test_the_trick_is_in_the_file(name: str, corpus_by_name: dict[str, Sample]) -> None:
    # Static checks only (pickletools and zipfile parse; nothing is unpickled).
    TRICKS[name](corpus_by_name[name].path.read_bytes())


def test_onnx_traversal_resolves_to_the_outside_file(
    corpus_root: Path, corpus_by_name: dict[str, Sample], tmp_path: Path
) -> None:
    # The location, joined to the model's folder as an unchecked loader would (onnx
    # before 1.16), names the file written beside malicious/, and its offset and length
    # select all of that file: the tensor would hold its contents. onnx 1.23 refuses it
    # (LOADER_REFUSES), and so does onnxruntime 1.32.
    from onnx import ModelProto

    sample = corpus_by_name["cve_2024_27318_onnx_external_data_traversal.onnx"]
    (tensor,) = ModelProto.FromString(sample.path.read_bytes()).graph.initializer
    info = {entry.key: entry.value for entry in tensor.external_data}
    outside = (sample.path.parent / info["location"]).resolve()
    assert outside == (corpus_root / "onnx_outside.bin").resolve()
    assert not outside.is_relative_to(sample.path.parent.resolve())
    start, length = int(info["offset"]), int(info["length"])
    contents = outside.read_bytes()
    assert (start, length) == (0, len(contents))
    assert list(tensor.dims) == [len(contents)]
    probe = (
        "import sys, onnxruntime\n"
        "try: onnxruntime.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
        "except Exception as exc: print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(sample.path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "escapes model directory" in proc.stdout
