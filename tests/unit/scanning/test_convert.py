"""``convert``: tensors copied byte for byte into safetensors; everything else refused.

Checkpoints are written with ``torch.save``; the hostile ones are only ever
written, never loaded. The output is read back with ``safetensors``.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

from bastion.errors import InputError, PathNotFoundError, UsageError
from bastion.scanning import ConvertResult, Limits, convert
from tests.unit.scanning.crafted import Reduces, torch_zip

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8, torch.int16]
DTYPES += [torch.int32, torch.int64, torch.uint8, torch.bool]


def sample(dtype: torch.dtype, shape: tuple[int, ...] = (3, 4)) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if dtype.is_floating_point:
        return torch.randn(shape).to(dtype)
    return torch.randint(-100 if dtype.is_signed else 0, 100, shape, dtype=dtype)


def save(obj: object, path: Path, *, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def assert_same(out: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert set(out) == set(expected)
    for name, tensor in expected.items():
        assert out[name].dtype == tensor.dtype, name
        assert torch.equal(out[name], tensor.detach()), name


def rezip(blob: bytes, replace: dict[str, bytes]) -> bytes:
    """``blob``'s members again, some replaced or added (or dropped, for empty bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(blob)) as src, zipfile.ZipFile(buf, "w") as out:
        for info in src.infolist():
            data = replace.get(info.filename, src.read(info))
            if data:
                out.writestr(info, data)
        for name in replace.keys() - set(src.namelist()):
            out.writestr(name, replace[name])
    return buf.getvalue()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_state_dict_of_every_dtype_round_trips(tmp_path: Path, legacy: bool) -> None:
    state = {f"t_{str(d).removeprefix('torch.')}": sample(d) for d in DTYPES}
    state["scalar"] = torch.tensor(2.5)
    state["empty"] = torch.zeros(0, 3)
    src = save(state, tmp_path / "model.pt", legacy=legacy)

    result = convert(src, tmp_path / "model.safetensors")

    assert isinstance(result, ConvertResult)
    assert result.format == ("pytorch-legacy" if legacy else "pytorch-zip")
    assert result.tensors == tuple(sorted(state))
    assert result.skipped == ()
    assert result.bytes_written == (tmp_path / "model.safetensors").stat().st_size
    assert_same(load_file(tmp_path / "model.safetensors"), state)


def test_new_dtypes_rebuilt_with_v3(tmp_path: Path) -> None:
    state = {"u16": torch.tensor([1, 65535], dtype=torch.uint16)}
    state["f8"] = torch.randn(4).to(torch.float8_e4m3fn)
    src = save(state, tmp_path / "m.pt")
    convert(src, tmp_path / "m.safetensors")
    out = load_file(tmp_path / "m.safetensors")
    assert torch.equal(out["u16"], state["u16"])
    assert torch.equal(out["f8"].view(torch.uint8), state["f8"].view(torch.uint8))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_training_checkpoint_is_flattened(tmp_path: Path, legacy: bool) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 7,
        "config": {"name": "tiny", "sizes": [3, 4, 2]},
        "extra": [torch.ones(2), "note"],
        "param": torch.nn.Parameter(torch.full((2,), 3.0)),
    }
    src = save(checkpoint, tmp_path / "ckpt.pth", legacy=legacy)

    result = convert(src, tmp_path / "ckpt.safetensors")

    out = load_file(tmp_path / "ckpt.safetensors")
    expected = {f"model.{k}": v for k, v in model.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        expected.update({f"optimizer.state.{index}.{k}": v for k, v in state.items()})
    expected["extra.0"] = torch.ones(2)
    expected["param"] = checkpoint["param"]
    assert_same(out, expected)
    assert set(result.skipped) == {"epoch", "config", "extra.1", "optimizer.param_groups"}


def test_views_of_one_storage_are_written_as_copies(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32)
    state = {"head": base[:4], "tail": base[4:].view(2, 4), "tied": base, "again": base}
    src = save(state, tmp_path / "m.pt")
    convert(src, tmp_path / "m.safetensors")
    assert_same(load_file(tmp_path / "m.safetensors"), state)


@pytest.mark.parametrize(
    "view", [lambda t: t.t(), lambda t: t[:, ::2], lambda t: t.expand(3, 2, 4)[0:2]]
)
def test_non_contiguous_tensor_is_refused(tmp_path: Path, view: object) -> None:
    assert callable(view)
    src = save({"ok": torch.ones(2), "view": view(torch.randn(2, 4))}, tmp_path / "m.pt")
    with pytest.raises(InputError, match=r"'view' is not contiguous"):
        convert(src, tmp_path / "m.safetensors")
    assert os.listdir(tmp_path) == ["m.pt"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_reduce_is_refused_by_name(tmp_path: Path, legacy: bool) -> None:
    src = save({"w": torch.ones(2), "payload": Reduces()}, tmp_path / "evil.pt", legacy=legacy)
    with pytest.raises(InputError, match=r"uses posix\.system, which is not a tensor-rebuild"):
        convert(src, tmp_path / "out.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["evil.pt"]


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (pickle.dumps(Reduces(), protocol=0), r"posix\.system"),
        (pickle.dumps({"w": {1, 2}}, protocol=4), r"builds a set"),
        (pickle.dumps(bytearray(b"xy"), protocol=5), r"bytearray"),
        (pickle.dumps({("a", 1): 2}, protocol=2), r"dict key of type tuple"),
        (pickle.dumps({"a": 1}, protocol=2), r"holds no tensors"),
        (b"\x80\x02cbuiltins\neval\n.", r"uses builtins\.eval"),
        (b"\x80\x02ctorch\nfloat32\n)R.", r"calls a dtype"),
        (b"\x80\x02]}b.", r"sets the state"),
        (b"\x80\x02ccollections\nOrderedDict\n)R}b.", r"holds no tensors"),
        (b"\x80\x02}(", r"ends before its STOP"),
        (b"\x80\x02\xff.", r"unknown opcode 0xff"),
    ],
)
def test_crafted_pickles_are_refused(tmp_path: Path, payload: bytes, message: str) -> None:
    (tmp_path / "m.pt").write_bytes(torch_zip(payload))
    with pytest.raises(InputError, match=message):
        convert(tmp_path / "m.pt", tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_complex_tensor_is_refused(tmp_path: Path) -> None:
    src = save({"z": torch.randn(2, dtype=torch.complex64)}, tmp_path / "m.pt")
    with pytest.raises(InputError, match="complex64, which safetensors cannot hold"):
        convert(src, tmp_path / "m.safetensors")


def test_damaged_archives_are_refused(tmp_path: Path) -> None:
    blob = save({"w": torch.ones(4)}, tmp_path / "m.pt").read_bytes()  # members are m/...
    cases = {
        "big": (rezip(blob, {"m/byteorder": b"big"}), "byte order"),
        "missing": (rezip(blob, {"m/data/0": b""}), "is missing"),
        "short": (rezip(blob, {"m/data/0": b"\0" * 8}), "holds 8 bytes"),
        "script": (rezip(blob, {"m/constants.pkl": b"x"}), "TorchScript"),
        "no-pickle": (rezip(blob, {"m/data.pkl": b""}), "no m/data.pkl"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(InputError, match=message):
            convert(tmp_path / name, tmp_path / f"{name}.safetensors")
        assert not (tmp_path / f"{name}.safetensors").exists()


def test_other_files_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    (tmp_path / "notes.txt").write_text("hello, world\n" * 10)
    save_file({"w": torch.ones(2)}, tmp_path / "already.safetensors")
    with pytest.raises(InputError, match="not a PyTorch checkpoint"):
        convert(tmp_path / "notes.txt", tmp_path / "a.safetensors")
    with pytest.raises(InputError, match="already safetensors"):
        convert(tmp_path / "already.safetensors", tmp_path / "b.safetensors")
    with pytest.raises(PathNotFoundError):
        convert(tmp_path / "absent.pt", tmp_path / "c.safetensors")
    with pytest.raises(InputError, match="not a file"):
        convert(tmp_path, tmp_path / "d.safetensors")


def test_existing_destination_needs_force(tmp_path: Path) -> None:
    src = save({"w": torch.ones(3)}, tmp_path / "m.pt")
    dst = tmp_path / "m.safetensors"
    dst.write_bytes(b"keep me")
    with pytest.raises(InputError, match="already exists; pass --force"):
        convert(src, dst)
    assert dst.read_bytes() == b"keep me"
    convert(src, dst, force=True)
    assert_same(load_file(dst), {"w": torch.ones(3)})
    with pytest.raises(UsageError, match="the destination is the source"):
        convert(src, src, force=True)
    assert sorted(os.listdir(tmp_path)) == ["m.pt", "m.safetensors"]


def test_metadata_marks_the_torch_layout(tmp_path: Path) -> None:
    from safetensors import safe_open

    src = save(OrderedDict(w=torch.ones(1)), tmp_path / "m.pt")
    convert(src, tmp_path / "m.safetensors")
    with safe_open(tmp_path / "m.safetensors", "pt") as f:
        assert f.metadata() == {"format": "pt"}


def test_limits_bound_the_pickle(tmp_path: Path) -> None:
    src = save({"w": torch.ones(1)}, tmp_path / "m.pt")
    with pytest.raises(InputError, match="too long"):
        convert(src, tmp_path / "m.safetensors", limits=Limits(max_opcodes=5))
    big = torch.zeros(64)
    src = save({f"view{i}": big for i in range(10)}, tmp_path / "views.pt")  # one storage
    with pytest.raises(InputError, match="add up to 2560 bytes"):
        convert(src, tmp_path / "m.safetensors", limits=Limits(max_unpacked_bytes=1000))
    assert sorted(os.listdir(tmp_path)) == ["m.pt", "views.pt"]


def test_self_referencing_structure_is_refused(tmp_path: Path) -> None:
    loop: list[object] = [torch.ones(1)]
    loop.append(loop)
    src = save(loop, tmp_path / "m.pt")
    with pytest.raises(InputError, match="contains itself"):
        convert(src, tmp_path / "m.safetensors")


_ZIP = io.BytesIO()
torch.save({"a": torch.arange(6.0).view(2, 3), "b": [torch.ones(2, dtype=torch.int64), 3]}, _ZIP)
_VALID = _ZIP.getvalue()
with zipfile.ZipFile(io.BytesIO(_VALID)) as _archive:
    _PICKLE = _archive.read("archive/data.pkl")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(st.tuples(st.integers(0, len(_PICKLE) - 1), st.integers(0, 255)), max_size=4),
    cut=st.integers(1, len(_PICKLE)),
)
def test_mutated_pickles_convert_or_are_refused(
    tmp_path: Path, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_PICKLE)
    for at, value in edits:
        data[at] = value
    src, dst = tmp_path / "fuzz.pt", tmp_path / "fuzz.safetensors"
    src.write_bytes(rezip(_VALID, {"archive/data.pkl": bytes(data[:cut]) or b"\0"}))
    dst.unlink(missing_ok=True)
    try:
        convert(src, dst)
    except InputError:
        assert not dst.exists()
    else:
        load_file(dst)  # whatever was written is well-formed safetensors
    assert sorted(os.listdir(tmp_path)) in (["fuzz.pt"], ["fuzz.pt", "fuzz.safetensors"])


_LEGACY = io.BytesIO()
torch.save({"a": torch.arange(4.0), "n": 2}, _LEGACY, _use_new_zipfile_serialization=False)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    edits=st.lists(
        st.tuples(st.integers(0, len(_LEGACY.getvalue()) - 1), st.integers(0, 255)), max_size=4
    ),
    cut=st.integers(1, len(_LEGACY.getvalue())),
)
def test_mutated_legacy_files_convert_or_are_refused(
    tmp_path: Path, edits: list[tuple[int, int]], cut: int
) -> None:
    data = bytearray(_LEGACY.getvalue())
    for at, value in edits:
        data[at] = value
    src, dst = tmp_path / "fuzz.pt", tmp_path / "fuzz.safetensors"
    src.write_bytes(bytes(data[:cut]))
    dst.unlink(missing_ok=True)
    try:
        convert(src, dst)
    except InputError:
        assert not dst.exists()
    else:
        load_file(dst)
