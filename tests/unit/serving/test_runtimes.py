"""Which runtime a model's files need, and loading ONNX and skops models (in this process)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import onnx
import pytest
import skops.io
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from sklearn.datasets import load_iris
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

from bastion.errors import InputError
from bastion.serving._runtime_skops import SkopsModel
from bastion.serving._runtimes import OnnxModel, RuntimeKind, load_model, select_model_file
from bastion.serving._tensors import Datatype, TensorSpec


@functools.cache
def iris() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x, y = load_iris(return_X_y=True)
    return x, y


@functools.cache
def classifier() -> LogisticRegression:
    x, y = iris()
    return LogisticRegression(max_iter=500).fit(x, y)


def onnx_classifier(*, zipmap: bool = False) -> bytes:
    x, _ = iris()
    model = classifier()
    converted = to_onnx(model, x[:1].astype(np.float32), options={"zipmap": zipmap})
    data: bytes = converted.SerializeToString()
    return data


# select_model_file


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"model.onnx": 10, "README.md": 5}, (RuntimeKind.ONNX, "model.onnx")),
        ({"sub/Model.ONNX": 3}, (RuntimeKind.ONNX, "sub/Model.ONNX")),
        ({"clf.skops": 10, "config.json": 2}, (RuntimeKind.SKOPS, "clf.skops")),
        ({"a.onnx": 1, "b.skops": 1}, (RuntimeKind.ONNX, "a.onnx")),
    ],
)
def test_one_onnx_or_one_skops_file_is_served(
    files: dict[str, int], expected: tuple[RuntimeKind, str]
) -> None:
    assert select_model_file(files) == expected


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"model.pkl": 10}, "pickle-based files are never loaded"),
        ({"pytorch_model.bin": 10, "config.json": 2}, "pickle-based"),
        ({"model.joblib": 1, "weights.pt": 1, "m.h5": 1}, "pickle-based"),
        ({"README.md": 1}, "no model file"),
        ({}, "no model file"),
        ({"a.onnx": 1, "nested/b.onnx": 1}, "2 .onnx files"),
        ({"a.skops": 1, "b.skops": 1, "c.pkl": 1}, "2 .skops files"),
        ({"model.onnx": 1, "model.onnx.data": 100}, "external data files"),
        ({"model.onnx": 0}, "is empty"),
    ],
)
def test_everything_else_is_refused_saying_what_is_served(
    files: dict[str, int], message: str
) -> None:
    with pytest.raises(InputError, match=message) as caught:
        select_model_file(files)
    if "pickle" in message or "no model" in message:
        assert "ONNX" in caught.value.message
        assert "skops" in caught.value.message
        assert "bastion convert" in caught.value.message


# ONNX


def test_an_onnx_model_declares_its_graph_and_answers_like_scikit_learn() -> None:
    model = OnnxModel(onnx_classifier(), threads=1)
    assert model.signature.inputs == (TensorSpec("X", Datatype.FP32, (-1, 4)),)
    assert model.signature.outputs == (
        TensorSpec("label", Datatype.INT64, (-1,)),
        TensorSpec("probabilities", Datatype.FP32, (-1, 3)),
    )
    x, _ = iris()
    got = model.run({"X": x[:5].astype(np.float32)}, ["probabilities", "label"])
    assert list(got) == ["probabilities", "label"]
    assert np.array_equal(got["label"], classifier().predict(x[:5]))
    assert np.allclose(got["probabilities"], classifier().predict_proba(x[:5]), atol=1e-5)


def test_an_onnx_model_with_zipmap_is_refused_with_the_conversion_option() -> None:
    with pytest.raises(InputError, match=r"options=\{'zipmap': False\}"):
        OnnxModel(onnx_classifier(zipmap=True), threads=1)


def test_bytes_that_are_not_onnx_are_refused_with_the_runtime_reason() -> None:
    with pytest.raises(InputError, match="ONNX Runtime cannot load the model") as caught:
        load_model(RuntimeKind.ONNX, b"not an onnx model", threads=1)
    assert "\n" not in caught.value.message


def test_an_onnx_model_with_external_data_is_refused(tmp_path: Any) -> None:
    weights = numpy_helper.from_array(np.ones((4, 2), np.float32), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        [weights],
    )
    path = tmp_path / "model.onnx"
    onnx.save_model(
        helper.make_model(graph),
        str(path),
        save_as_external_data=True,
        location="model.onnx.data",
        size_threshold=0,
    )
    with pytest.raises(InputError, match="external data"):
        OnnxModel(path.read_bytes(), threads=1)


def test_an_input_the_runtime_refuses_is_a_short_input_error() -> None:
    model = OnnxModel(onnx_classifier(), threads=1)
    with pytest.raises(InputError, match="the model refused the input") as caught:
        model.run({"X": np.zeros((1, 3), np.float32)}, ["label"])
    assert "\n" not in caught.value.message
    assert "[ONNXRuntimeError]" not in caught.value.message
    with pytest.raises(InputError, match="refused"):
        model.run({"X": np.zeros((1, 4), np.float32)}, ["no-such-output"])


def test_string_tensors_travel_as_utf8_bytes() -> None:
    graph = helper.make_graph(
        [helper.make_node("Identity", ["text"], ["same"])],
        "strings",
        [helper.make_tensor_value_info("text", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("same", TensorProto.STRING, [None])],
    )
    model = OnnxModel(helper.make_model(graph).SerializeToString(), threads=1)
    assert model.signature.inputs == (TensorSpec("text", Datatype.BYTES, (-1,)),)
    words = np.array(["é".encode(), b"b"], dtype=object)
    assert model.run({"text": words}, ["same"])["same"].tolist() == ["é", "b"]
    with pytest.raises(InputError, match="not UTF-8"):
        model.run({"text": np.array([b"\xff"], dtype=object)}, ["same"])


# skops


def test_a_skops_classifier_answers_labels_and_probabilities() -> None:
    model = SkopsModel(skops.io.dumps(classifier()))
    assert model.signature.inputs == (TensorSpec("input", Datatype.FP64, (-1, 4)),)
    assert model.signature.outputs == (
        TensorSpec("label", Datatype.INT64, (-1,)),
        TensorSpec("probabilities", Datatype.FP64, (-1, 3)),
    )
    x, _ = iris()
    got = model.run({"input": x[:7]}, ["label", "probabilities"])
    assert np.array_equal(got["label"], classifier().predict(x[:7]))
    assert np.array_equal(got["probabilities"], classifier().predict_proba(x[:7]))


def test_string_classes_are_bytes_labels_and_regressors_answer_predictions() -> None:
    x, y = iris()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, names)
    model = SkopsModel(skops.io.dumps(pipeline))
    assert model.signature.output("label") == TensorSpec("label", Datatype.BYTES, (-1,))
    labels = model.run({"input": x[:3]}, ["label"])["label"]
    assert labels.tolist() == [name.encode() for name in pipeline.predict(x[:3])]
    regressor = LinearRegression().fit(x[:, 1:], x[:, 0])
    model = SkopsModel(skops.io.dumps(regressor))
    assert model.signature.outputs == (TensorSpec("prediction", Datatype.FP64, (-1,)),)
    got = model.run({"input": x[:4, 1:]}, ["prediction"])["prediction"]
    assert np.array_equal(got, regressor.predict(x[:4, 1:]))


def test_a_skops_file_naming_a_function_is_refused_before_anything_is_built() -> None:
    dangerous = make_pipeline(FunctionTransformer(eval), LogisticRegression())
    with pytest.raises(InputError, match=r"not trusted for serving: .*builtins\.eval"):
        SkopsModel(skops.io.dumps(dangerous))


def test_types_skops_trusts_by_default_are_still_refused_outside_the_allowlist() -> None:
    x, y = iris()
    logged = make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=500))
    data = skops.io.dumps(logged.fit(x, y))
    assert skops.io.get_untrusted_types(data=data) == []  # skops alone would load it
    with pytest.raises(InputError, match="FunctionTransformer"):
        SkopsModel(data)


def test_bytes_that_are_not_skops_are_refused() -> None:
    with pytest.raises(InputError, match="not a skops file"):
        load_model(RuntimeKind.SKOPS, b"PK\x03\x04 truncated", threads=1)
    with pytest.raises(InputError, match="not a skops file"):
        load_model(RuntimeKind.SKOPS, b"", threads=1)


def test_a_skops_model_refuses_inputs_of_the_wrong_width() -> None:
    model = SkopsModel(skops.io.dumps(classifier()))
    with pytest.raises(InputError, match=r"shape \[-1, 4\]"):
        model.run({"input": np.zeros((2, 3))}, ["label"])
