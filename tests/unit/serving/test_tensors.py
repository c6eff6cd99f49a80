"""Datatypes, tensor specs and model signatures of the Open Inference Protocol."""

from __future__ import annotations

import numpy as np
import pytest

from bastion.errors import InputError
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec

SIZES = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
}


def test_every_oip_datatype_maps_to_a_numpy_dtype_of_its_binary_size() -> None:
    assert {d.value for d in Datatype} == {*SIZES, "BYTES"}
    for name, size in SIZES.items():
        assert Datatype(name).itemsize == size
        assert Datatype(name).numpy_dtype.byteorder in "<|="
    assert Datatype.BYTES.itemsize is None
    assert Datatype.BYTES.numpy_dtype == np.dtype(object)


def test_spec_accepts_a_datatype_name_and_normalises_the_shape() -> None:
    spec = TensorSpec("x", "FP32", [-1, 30])  # type: ignore[arg-type]
    assert spec.datatype is Datatype.FP32
    assert spec.shape == (-1, 30)
    assert spec.matches_shape((5, 30))
    assert not spec.matches_shape((5, 29))
    assert not spec.matches_shape((5, 30, 1))


@pytest.mark.parametrize(
    ("name", "datatype", "shape"),
    [
        ("", "FP32", (1,)),
        ("x\n", "FP32", (1,)),
        ("x" * 300, "FP32", (1,)),
        ("x", "FLOAT", (1,)),
        ("x", "FP32", (-2,)),
        ("x", "FP32", (True,)),
        ("x", "FP32", "1,2"),
        ("x", "FP32", (1,) * 17),
    ],
)
def test_spec_refuses_bad_declarations(name: str, datatype: str, shape: object) -> None:
    with pytest.raises(InputError):
        TensorSpec(name, datatype, shape)  # type: ignore[arg-type]


def test_signature_refuses_duplicate_or_missing_tensors() -> None:
    x = TensorSpec("x", Datatype.FP32, (1,))
    with pytest.raises(InputError, match="repeated"):
        ModelSignature((x, x), (x,))
    with pytest.raises(InputError, match="at least one"):
        ModelSignature((), (x,))


METADATA = {
    "name": "iris",
    "versions": ["1"],
    "platform": "onnxruntime_onnx",
    "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}],
    "outputs": [
        {"name": "label", "datatype": "INT64", "shape": [-1]},
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
    ],
}


def test_metadata_round_trips_exactly() -> None:
    signature = ModelSignature.from_dict(METADATA)
    assert signature.input("input") == TensorSpec("input", Datatype.FP32, (-1, 4))
    assert signature.output("nope") is None
    assert signature.to_metadata("iris", ["1"], "onnxruntime_onnx") == METADATA


@pytest.mark.parametrize(
    "metadata",
    [
        [],
        {"inputs": [], "outputs": METADATA["outputs"]},
        {"inputs": METADATA["inputs"]},
        {"inputs": [{"name": "x", "datatype": "FP32"}], "outputs": METADATA["outputs"]},
        {"inputs": [{"name": 1, "datatype": "FP32", "shape": []}], "outputs": [1]},
        {"inputs": [{"name": "x", "datatype": None, "shape": []}], "outputs": [1]},
    ],
)
def test_from_dict_refuses_what_is_not_model_metadata(metadata: object) -> None:
    with pytest.raises(InputError):
        ModelSignature.from_dict(metadata)
