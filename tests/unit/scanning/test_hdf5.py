"""Keras legacy HDF5 (.h5) models: the bounded HDF5 reader and the config audit on top.

Real files come from Keras 3 (``model.save("m.h5")``) and h5py, which are used here
only to write files and, as an oracle, to read them back; the scanner never imports
h5py. Hostile structures that h5py would not write are built byte by byte.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.scanning import Limits, ScanReport, Severity, scan
from bastion.scanning._hdf5 import Hdf5Error, Hdf5LimitError, read_root_attributes

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
#: Every rule an HDF5 file may raise.
RULES = {"keras.lambda", "keras.foreign-module", "scan.incomplete", "scan.limit"}


def keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import keras as module

    return module


def save(model: Any, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save(path)
    return path


def scan_bytes(tmp_path: Path, data: bytes, name: str = "m.h5") -> ScanReport:
    path = tmp_path / name
    path.write_bytes(data)
    return scan(path, limits=Limits())


def found(report: ScanReport) -> set[tuple[str, str | None]]:
    return {(f.rule_id, f.config_path) for f in report.findings}


def rules(report: ScanReport) -> set[str]:
    return {f.rule_id for f in report.findings}


def attributes(path: Path) -> dict[str, tuple[bytes, ...] | None]:
    with path.open("rb") as stream:
        root = read_root_attributes(stream)
    assert root.unread == []
    return {a.name: a.strings if a.is_string else None for a in root.attributes}


def identity(x: Any) -> Any:
    return x


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Keras 3 models saved as legacy HDF5: benign, and with Lambda layers."""
    k, out = keras(), tmp_path_factory.mktemp("keras-h5")
    layers = k.layers
    seq = k.Sequential([k.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(2)])
    inputs = k.Input((4,))
    hidden = layers.Dense(8)(inputs)
    functional = k.Model(inputs, [layers.Dense(2)(hidden), layers.Dense(1)(hidden)])
    functional.compile(optimizer="adam", loss=[k.losses.MeanSquaredError()] * 2)
    top = k.Sequential([k.Input((4,)), layers.Dense(3), layers.Lambda(identity)])
    inner = k.Sequential([k.Input((3,)), layers.Dense(3), layers.Lambda(identity)], name="inner")
    outer_in = k.Input((4,))
    nested = k.Model(outer_in, layers.Dense(2)(inner(layers.Dense(3)(outer_in))))
    built = {"sequential": seq, "functional": functional, "lambda": top, "nested": nested}
    return {name: save(model, out / f"{name}.h5") for name, model in built.items()}


def model_config(path: Path) -> Any:
    with h5py.File(path, "r") as f:
        return json.loads(f.attrs["model_config"])


def rewrite(src: Path, dst: Path, **attrs: Any) -> Path:
    """A copy of ``src`` with root attributes replaced (``None`` deletes one)."""
    dst.write_bytes(src.read_bytes())
    with h5py.File(dst, "r+") as f:
        for name, value in attrs.items():
            if name in f.attrs:
                del f.attrs[name]
            if value is not None:
                f.attrs[name] = value
    return dst


# --- real Keras files ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sequential", "functional"])
def test_benign_keras_h5_has_no_findings(models: dict[str, Path], name: str) -> None:
    report = scan(models[name])
    assert report.findings == []
    assert [s.format for s in report.scanned] == ["hdf5"]
    read = attributes(models[name])
    assert {"model_config", "keras_version", "backend"} <= set(read)
    assert ("training_config" in read) == (name == "functional")


def test_top_level_lambda_is_found_at_its_layer(models: dict[str, Path]) -> None:
    layers = model_config(models["lambda"])["config"]["layers"]
    at = next(i for i, layer in enumerate(layers) if layer["class_name"] == "Lambda")
    report = scan(models["lambda"])
    assert ("keras.lambda", f"model_config.config.layers[{at}]") in found(report)
    assert all(f.severity == Severity.HIGH and f.format == "hdf5" for f in report.findings)


def test_lambda_nested_in_a_sub_model_is_found(models: dict[str, Path]) -> None:
    # scanner-threats.md technique 34: Lambda in a Sequential inside a Functional model.
    layers = model_config(models["nested"])["config"]["layers"]
    outer = next(i for i, layer in enumerate(layers) if layer["class_name"] == "Sequential")
    inner_layers = layers[outer]["config"]["layers"]
    inner = next(i for i, layer in enumerate(inner_layers) if layer["class_name"] == "Lambda")
    path = f"model_config.config.layers[{outer}].config.layers[{inner}]"
    assert ("keras.lambda", path) in found(scan(models["nested"]))


def test_config_naming_a_foreign_module_is_found(models: dict[str, Path], tmp_path: Path) -> None:
    config = model_config(models["sequential"])
    gadget = {"module": "os", "class_name": "function", "config": "system", "registered_name": None}
    config["config"]["layers"][1]["config"]["activation"] = gadget
    path = rewrite(models["sequential"], tmp_path / "m.h5", model_config=json.dumps(config))
    report = scan(path)
    expected = ("keras.foreign-module", "model_config.config.layers[1].config.activation")
    assert found(report) == {expected}
    assert "'os'" in report.findings[0].message


def test_training_config_is_audited(models: dict[str, Path], tmp_path: Path) -> None:
    with h5py.File(models["functional"], "r") as f:
        training = json.loads(f.attrs["training_config"])
    training["loss"] = {"module": "evil.losses", "class_name": "Steal", "config": {}}
    path = rewrite(models["functional"], tmp_path / "m.h5", training_config=json.dumps(training))
    assert found(scan(path)) == {("keras.foreign-module", "training_config.loss")}


# --- encodings and layouts, written by h5py -----------------------------------------------

LAMBDA = {"class_name": "Lambda", "config": {"function": {"class_name": "__lambda__"}}}
CONFIG = json.dumps({"class_name": "Sequential", "config": {"layers": [LAMBDA]}})
EXPECTED = {
    ("keras.lambda", "model_config.config.layers[0]"),
    ("keras.lambda", "model_config.config.layers[0].config.function"),
}


def h5py_file(path: Path, attrs: dict[str, Any], *, libver: str = "earliest") -> Path:
    with h5py.File(path, "w", libver=libver) as f:
        f.create_dataset("model_weights/dense/kernel", data=np.zeros((2, 2), np.float32))
        for name, value in attrs.items():
            f.attrs[name] = value
    return path


@pytest.mark.parametrize(
    ("libver", "superblock"), [("earliest", 0), ("v108", 2), ("v110", 3), ("latest", 3)]
)
@pytest.mark.parametrize("fixed", [False, True], ids=["vlen-str", "fixed-bytes"])
def test_both_encodings_in_every_layout(
    tmp_path: Path, libver: str, superblock: int, fixed: bool
) -> None:
    value = np.bytes_(CONFIG.encode()) if fixed else CONFIG
    path = h5py_file(tmp_path / "m.h5", {"model_config": value}, libver=libver)
    assert path.read_bytes()[8] == superblock
    assert found(scan(path)) == EXPECTED


def test_four_byte_offsets_and_lengths(tmp_path: Path) -> None:
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_sizes(4, 4)
    path = tmp_path / "m.h5"
    with h5py.File(h5py.h5f.create(bytes(path), h5py.h5f.ACC_TRUNC, fcpl=fcpl)) as f:
        f.attrs["model_config"] = CONFIG
    assert path.read_bytes()[8:11] == b"\x02\x04\x04"  # libhdf5 writes superblock 2 for these
    assert found(scan(path)) == EXPECTED


def test_large_config_in_its_own_heap_collection(tmp_path: Path) -> None:
    dense = {"class_name": "Dense", "config": {"units": 3, "name": "d" * 200}}
    big = {"class_name": "Sequential", "config": {"layers": [dense] * 2000 + [LAMBDA]}}
    text = json.dumps(big)
    assert len(text) > 400_000
    path = h5py_file(tmp_path / "m.h5", {"model_config": text})
    assert ("keras.lambda", "model_config.config.layers[2000]") in found(scan(path))


def test_many_string_values_in_one_attribute(tmp_path: Path) -> None:
    values = np.array(["{}", "[]", CONFIG, "plain"], dtype=h5py.string_dtype())
    path = h5py_file(tmp_path / "m.h5", {"configs": values})
    assert ("keras.lambda", "configs[2].config.layers[0]") in found(scan(path))


def test_attributes_in_dense_storage_are_reported_not_passed(tmp_path: Path) -> None:
    # libver="latest" moves attributes to a fractal heap past 8 of them, or when one is
    # too big for the object header; that storage is not read, so the scan says so.
    many = {f"a{i}": "x" for i in range(12)} | {"model_config": CONFIG}
    big = {"model_config": np.bytes_(CONFIG.encode() + b" " * 70_000)}
    for attrs in (many, big):
        report = scan(h5py_file(tmp_path / "m.h5", attrs, libver="latest"))
        assert rules(report) == {"scan.incomplete"}
        assert "dense storage" in report.findings[0].message


def test_hdf5_without_keras_config_is_clean(tmp_path: Path) -> None:
    attrs = {"n": 3, "scale": np.arange(4.0), "title": "weights", "layer_names": [b"dense"]}
    path = h5py_file(tmp_path / "m.h5", attrs)
    assert scan(path).findings == []


def test_model_config_that_is_not_json_is_incomplete(tmp_path: Path) -> None:
    path = h5py_file(tmp_path / "m.h5", {"model_config": "not json"})
    assert rules(scan(path)) == {"scan.incomplete"}


def test_vlen_string_is_read_up_to_its_first_nul_as_h5py_does(tmp_path: Path) -> None:
    path = h5py_file(tmp_path / "m.h5", {"model_config": CONFIG + "X" * 40})
    data = bytearray(path.read_bytes())
    data[data.index(b"X" * 40)] = 0
    path.write_bytes(data)
    with h5py.File(path, "r") as f:
        assert f.attrs["model_config"] == CONFIG
    assert found(scan(path)) == EXPECTED


def test_scanner_does_not_import_h5py(tmp_path: Path) -> None:
    path = h5py_file(tmp_path / "m.h5", {"model_config": CONFIG})
    probe = (
        "import sys\nfrom bastion.scanning import scan\n"
        "assert scan(sys.argv[1]).findings\nprint('h5py' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe, str(path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    assert proc.stdout.strip() == "False"


# --- the reader against h5py as an oracle ----------------------------------------------

NAMES = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    min_size=1,
    max_size=12,
)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"))
VALUES = st.one_of(
    TEXT,
    st.binary(max_size=60).map(lambda b: np.bytes_(b.rstrip(b"\x00") or b"x")),
    st.lists(TEXT, min_size=1, max_size=4).map(lambda v: np.array(v, h5py.string_dtype())),
    st.integers(-(2**62), 2**62),
    st.lists(st.floats(allow_nan=False), max_size=5).map(np.array),
)


def oracle(value: Any) -> tuple[bytes, ...] | None:
    """What the reader should return for an attribute h5py read back as ``value``."""
    if isinstance(value, str):
        return (value.encode(),)
    if isinstance(value, bytes):
        return (value,)
    if isinstance(value, np.ndarray) and value.dtype == object:
        return tuple(v.encode() if isinstance(v, str) else v for v in value.ravel())
    return None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    attrs=st.dictionaries(NAMES, VALUES, max_size=8),
    libver=st.sampled_from(["earliest", "v108", "latest"]),
)
def test_reader_agrees_with_h5py(attrs: dict[str, Any], libver: str) -> None:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=libver) as f:
        for name, value in attrs.items():
            f.attrs[name] = value
    with h5py.File(io.BytesIO(buffer.getvalue()), "r") as f:
        expected = {name: oracle(f.attrs[name]) for name in f.attrs}
    root = read_root_attributes(io.BytesIO(buffer.getvalue()))
    assert root.unread == []
    assert {a.name: a.strings if a.is_string else None for a in root.attributes} == expected


# --- hostile structures, byte by byte ---------------------------------------------------

BLOB_AT = 96  # after a version 0 superblock with 8-byte offsets and lengths


def message(kind: int, data: bytes, flags: int = 0) -> bytes:
    data += b"\0" * (-len(data) % 8)
    return struct.pack("<HHB3x", kind, len(data), flags) + data


def h5(messages: list[bytes], blob: bytes = b"", *, version: int = 0, eof: int = 0) -> bytes:
    """A version 0/1 superblock, ``blob`` at BLOB_AT, then the root object header."""
    extra = 4 if version == 1 else 0
    header_at = BLOB_AT + extra + len(blob)
    body = b"".join(messages)
    header = struct.pack("<BxHII4x", 1, len(messages), 1, len(body)) + body
    total = header_at + len(header)
    addresses = struct.pack("<QqQq", 0, -1, eof or total, -1)
    entry = struct.pack("<QQII16x", 0, header_at, 0, 0)
    sb = (
        b"\x89HDF\r\n\x1a\n" + bytes([version, 0, 0, 0, 0, 8, 8, 0]) + struct.pack("<HHI", 4, 16, 0)
    )
    sb += b"\x20\x00\x00\x00" if version == 1 else b""
    return sb + addresses + entry + blob + header


def attribute(name: bytes, dtype: bytes, space: bytes, data: bytes) -> bytes:
    pad = lambda b: b + b"\0" * (-len(b) % 8)  # noqa: E731
    head = struct.pack("<BxHHH", 1, len(name) + 1, len(dtype), len(space))
    return head + pad(name + b"\0") + pad(dtype) + pad(space) + data


FIXED = lambda n: struct.pack("<B3sI", 0x13, b"\0\0\0", n)  # noqa: E731
VLEN = struct.pack("<BBxxI", 0x19, 1, 16) + struct.pack("<BxxxIHH", 0x10, 1, 0, 8)
SCALAR = struct.pack("<BBB5x", 1, 0, 0)


def simple(*dims: int) -> bytes:
    return struct.pack("<BBB5x", 1, len(dims), 0) + b"".join(struct.pack("<Q", d) for d in dims)


def gcol(objects: list[tuple[int, bytes]], size: int = 4096) -> bytes:
    body = b"".join(
        struct.pack("<HH4xQ", i, 1, len(d)) + d + b"\0" * (-len(d) % 8) for i, d in objects
    )
    free = size - 16 - len(body)
    tail = struct.pack("<HH4xQ", 0, 0, free).ljust(free, b"\0")
    return b"GCOL\x01\0\0\0" + struct.pack("<Q", size) + body + tail


def vlen_cell(index: int, length: int, addr: int = BLOB_AT) -> bytes:
    return struct.pack("<IQI", length, addr, index)


LOOP = struct.pack("<QQ", BLOB_AT, 24)  # a continuation to the block that holds it


def config_attr(cell: bytes, name: bytes = b"model_config") -> bytes:
    return message(0x0C, attribute(name, VLEN, SCALAR, cell))


def test_handmade_file_is_read(tmp_path: Path) -> None:
    data = CONFIG.encode()
    for version, blob_at in ((0, BLOB_AT), (1, BLOB_AT + 4)):
        cell = vlen_cell(1, len(data), addr=blob_at)
        report = scan_bytes(tmp_path, h5([config_attr(cell)], gcol([(1, data)]), version=version))
        assert found(report) == EXPECTED


def test_every_copy_of_a_duplicated_heap_object_is_audited(tmp_path: Path) -> None:
    # libhdf5 keeps the last object of an index; the reader audits each of them.
    for objects in ([(1, b"{}"), (1, CONFIG.encode())], [(1, CONFIG.encode()), (1, b"{}")]):
        cell = vlen_cell(1, len(objects[-1][1]))
        assert found(scan_bytes(tmp_path, h5([config_attr(cell)], gcol(objects)))) == EXPECTED


def test_fixed_string_array_attribute(tmp_path: Path) -> None:
    cells = CONFIG.encode().ljust(400, b"\0") + b"{}".ljust(400, b"\0")
    msg = message(0x0C, attribute(b"cfg", FIXED(400), simple(2), cells))
    assert ("keras.lambda", "cfg[0].config.layers[0]") in found(scan_bytes(tmp_path, h5([msg])))


@pytest.mark.parametrize(
    ("messages", "blob", "needle"),
    [
        ([struct.pack("<HHB3x", 0x0C, 64, 0)], b"", "runs past its chunk"),
        ([message(0x0C, attribute(b"x", FIXED(8), simple(1 << 40), b""))], b"", "less data"),
        ([message(0x0C, attribute(b"x", FIXED(0), SCALAR, b""))], b"", "size 0"),
        ([message(0x0C, struct.pack("<BxHHH", 1, 0, 8, 8) + FIXED(1) + SCALAR + b"a")], b"",
         "empty name"),
        ([config_attr(vlen_cell(2, 2))], gcol([(1, b"{}")]), "no object 2"),
        ([config_attr(vlen_cell(1, 2, addr=1 << 40))], b"", "past the end"),
        ([config_attr(vlen_cell(1, 2))], b"GCOL\x01\0\0\0" + struct.pack("<Q", 1 << 20), "past"),
        ([config_attr(vlen_cell(1, 2))], b"GCOL\x01\0\0\0" + struct.pack("<Q", 32) + b"\1" * 16,
         "overruns"),
        ([message(0x10, LOOP)], message(0x10, LOOP), "loops back"),
        ([message(0x10, struct.pack("<QQ", 1 << 50, 64))], b"", "past the end"),
    ],
)  # fmt: skip
def test_malformed_structures_are_incomplete(
    tmp_path: Path, messages: list[bytes], blob: bytes, needle: str
) -> None:
    data = h5(messages, blob)
    with pytest.raises(Hdf5Error, match=needle):
        read_root_attributes(io.BytesIO(data))
    report = scan_bytes(tmp_path, data)
    assert rules(report) == {"scan.incomplete"}
    assert needle in report.findings[0].message


@pytest.mark.parametrize(
    ("messages", "blob"),
    [
        ([config_attr(vlen_cell(1, 1 << 30))], gcol([(1, b"{}")])),
        ([config_attr(vlen_cell(1, 2))], b"GCOL\x01\0\0\0" + struct.pack("<Q", 1 << 40)),
        ([message(0x10, struct.pack("<QQ", BLOB_AT, 1 << 30))], b"\0" * 8),
    ],
)
def test_sizes_over_the_limits_are_limit_findings(
    tmp_path: Path, messages: list[bytes], blob: bytes
) -> None:
    data = h5(messages, blob)
    with pytest.raises(Hdf5LimitError):
        read_root_attributes(io.BytesIO(data))
    assert rules(scan_bytes(tmp_path, data)) == {"scan.limit"}


def test_shared_and_dense_attributes_are_reported(tmp_path: Path) -> None:
    shared = message(0x0C, b"\0" * 16, flags=0x02)
    info = message(0x15, struct.pack("<BBQQ", 0, 0, 4096, 8192))
    no_heap = message(0x15, struct.pack("<BBqq", 0, 0, -1, -1))
    report = scan_bytes(tmp_path, h5([shared, info, no_heap]))
    messages = [f.message for f in report.findings]
    assert rules(report) == {"scan.incomplete"}
    assert len(messages) == 2
    assert any("dense storage" in m for m in messages)
    assert any("shared message" in m for m in messages)


def test_truncated_file_is_reported_even_when_its_attributes_read(tmp_path: Path) -> None:
    data = h5([config_attr(vlen_cell(0, 0, addr=0))], eof=10_000)
    report = scan_bytes(tmp_path, data)
    assert rules(report) == {"scan.incomplete"}
    assert "truncated" in report.findings[0].message


@pytest.mark.parametrize("version", [4, 255])
def test_unknown_superblock_version(tmp_path: Path, version: int) -> None:
    data = bytearray(h5([]))
    data[8] = version
    assert rules(scan_bytes(tmp_path, bytes(data))) == {"scan.incomplete"}


# --- no input escapes as an exception ----------------------------------------------------


@pytest.fixture(scope="module")
def seeds(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    out = tmp_path_factory.mktemp("seeds")
    latest = h5py_file(out / "latest.h5", {"model_config": CONFIG, "n": 1}, libver="latest")
    return [models["functional"].read_bytes(), models["nested"].read_bytes(), latest.read_bytes()]


def allowed(report: ScanReport) -> bool:
    return rules(report) <= RULES and not any(
        f.message.startswith("could not be parsed (") for f in report.findings
    )


@SETTINGS
@given(seed=st.integers(0, 2), cut=st.integers(0, 10**6))
def test_truncated_real_files_always_give_a_finding(
    tmp_path: Path, seeds: list[bytes], seed: int, cut: int
) -> None:
    blob = seeds[seed]
    report = scan_bytes(tmp_path, blob[: 8 + cut % (len(blob) - 8)])
    assert allowed(report)
    assert any(f.severity >= Severity.MEDIUM for f in report.findings)


@SETTINGS
@given(
    seed=st.integers(0, 2),
    edits=st.lists(st.tuples(st.integers(8, 10**6), st.integers(0, 255)), min_size=1, max_size=8),
)
def test_mutated_real_files_give_a_report_not_an_exception(
    tmp_path: Path, seeds: list[bytes], seed: int, edits: list[tuple[int, int]]
) -> None:
    blob = bytearray(seeds[seed])
    for at, byte in edits:
        blob[8 + at % (len(blob) - 8)] = byte  # the signature stays, so it is still HDF5
    assert allowed(scan_bytes(tmp_path, bytes(blob)))


@SETTINGS
@given(rest=st.binary(max_size=600), version=st.sampled_from([0, 1, 2, 3]))
def test_random_bytes_after_the_signature_never_raise(
    tmp_path: Path, rest: bytes, version: int
) -> None:
    assert allowed(scan_bytes(tmp_path, b"\x89HDF\r\n\x1a\n" + bytes([version]) + rest))


def test_reader_reads_from_the_streams_position() -> None:
    data = h5([config_attr(vlen_cell(1, len(CONFIG)))], gcol([(1, CONFIG.encode())]))
    stream = io.BytesIO(b"prefix" + data)
    stream.seek(6)
    (attr,) = read_root_attributes(stream).attributes
    assert attr.strings == (CONFIG.encode(),)


def test_an_hdf5_model_after_a_user_block_is_found_whatever_comes_first(tmp_path: Path) -> None:
    """libhdf5 looks for the superblock at 0, 512, 1024, ...: text in front hides nothing."""
    config = {
        "class_name": "Sequential",
        "config": {
            "layers": [{"class_name": "Lambda", "config": {"function": ["4wEA", "", None]}}]
        },
    }
    with h5py.File(tmp_path / "real.h5", "w", userblock_size=1024) as f:
        f.attrs["model_config"] = json.dumps(config).encode()
    raw = (tmp_path / "real.h5").read_bytes()
    prefix = b"just a README\n" * 73  # 1022 bytes of text where the user block was
    polyglot = tmp_path / "notes.txt"
    polyglot.write_bytes(prefix + raw[len(prefix) :])
    with h5py.File(polyglot, "r") as f:  # the real reader opens it as the model
        assert json.loads(f.attrs["model_config"])["class_name"] == "Sequential"
    found = {(f.rule_id, f.offset) for f in scan(polyglot).findings}
    assert ("hdf5.user-block", 1024) in found
    assert any(rule.startswith("keras.lambda") for rule, _ in found)
