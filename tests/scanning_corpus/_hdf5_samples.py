"""Keras legacy HDF5 (``.h5``) samples, written by Keras 3 through h5py (scanner-threats.md §D).

Benign: a Sequential and a compiled Functional model saved with ``model.save("m.h5")``,
which keeps the architecture as JSON in the root group's ``model_config`` attribute
(and the compile settings in ``training_config``), as variable-length strings.

Malicious: the same files with a Lambda layer whose marshalled bytecode creates the
marker; ``load_model(safe_mode=False)`` runs it while rebuilding the model
(CVE-2024-3660). As for the ``.keras`` samples, the models are saved with an identity
lambda and the Lambda's ``function`` in ``model_config`` is then replaced by the
payload's, so nothing runs here. Variants cover a Lambda nested in a sub-model
(technique 34), the fixed-length byte string that tf.keras 2 wrote, and the newest
HDF5 layout (superblock 3, version 2 object headers) that h5py writes with
``libver="latest"``.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.scanning_corpus._frameworks import (
    _identity,
    _keras,
    _lambdas,
    _payload_function,
    _quietly,
)
from tests.scanning_corpus._sample import Payload, Recipe, Sample, write_recipes

__all__ = ["H5_BENIGN", "H5_MALICIOUS", "write_h5_benign", "write_h5_malicious"]

LOADER = "keras-h5"


# --- benign ----------------------------------------------------------------------------


def _sequential(path: Path) -> None:
    keras = _keras()
    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((4,)), layers.Dense(8, activation="relu"), layers.Dense(2)], name="mlp"
    )
    _quietly(lambda: model.save(path))


def _functional_compiled(path: Path) -> None:
    keras = _keras()
    layers = keras.layers
    inputs = keras.Input((4,), name="features")
    hidden = layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, [layers.Dense(2)(hidden), layers.Dense(1)(hidden)])
    # Loss objects, not names: Keras 3.15 cannot read back a legacy training_config
    # naming "mse" in safe mode ("keras.metrics.mse ... is not a KerasSaveable").
    losses = keras.losses
    model.compile(optimizer="adam", loss=[losses.MeanSquaredError(), losses.MeanAbsoluteError()])
    _quietly(lambda: model.save(path))


@dataclass(frozen=True)
class H5Benign:
    name: str
    technique: str
    write: Callable[[Path], object]


H5_BENIGN = (
    H5Benign(
        "keras_sequential_dense.h5",
        "Keras 3 Sequential of Dense layers, model.save to legacy HDF5",
        _sequential,
    ),
    H5Benign(
        "keras_functional_compiled.h5",
        "Keras 3 Functional model, two heads, compiled (training_config), legacy HDF5",
        _functional_compiled,
    ),
)


def write_h5_benign(outdir: Path) -> list[Sample]:
    samples = []
    for item in H5_BENIGN:
        path = outdir / item.name
        item.write(path)
        samples.append(Sample(item.name, path, item.technique, False, LOADER))
    return samples


# --- malicious -------------------------------------------------------------------------


def _with_payload(model: Any, p: Payload, *, fixed: bool = False, latest: bool = False) -> bytes:
    """``model.save`` to HDF5 with identity Lambdas, then the payload swapped into the config.

    ``fixed`` stores ``model_config`` as a fixed-length byte string (tf.keras 2);
    ``latest`` copies the file into h5py's newest layout.
    """
    import h5py
    import numpy as np

    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch, "model.h5")
        _quietly(lambda: model.save(saved))
        function = _payload_function(p)
        with h5py.File(saved, "r+") as f:
            config = json.loads(f.attrs["model_config"])
            found = list(_lambdas(config))
            if not found:
                raise RuntimeError("no Lambda layer to carry the payload")
            for layer in found:
                layer["function"] = function
            text = json.dumps(config)
            del f.attrs["model_config"]
            f.attrs["model_config"] = np.bytes_(text.encode()) if fixed else text
        if latest:
            copy = Path(scratch, "latest.h5")
            with h5py.File(saved, "r") as src, h5py.File(copy, "w", libver="latest") as dst:
                for key in src:
                    src.copy(src[key], dst, name=key)
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
            saved = copy
        return saved.read_bytes()


def _sequential_lambda() -> Any:
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([keras.Input((4,)), layers.Dense(3), layers.Lambda(_identity)])


def _nested_lambda() -> Any:
    keras = _keras()
    layers = keras.layers
    inner = keras.Sequential(
        [keras.Input((3,)), layers.Dense(3), layers.Lambda(_identity)], name="inner"
    )
    inputs = keras.Input((4,))
    outputs = layers.Dense(2)(inner(layers.Dense(3)(inputs)))
    return keras.Model(inputs, outputs)


H5_MALICIOUS = (
    Recipe(
        "cve_2024_3660_keras_lambda.h5",
        "D Keras 3 Sequential saved as legacy HDF5, Lambda bytecode in model_config",
        lambda p: _with_payload(_sequential_lambda(), p),
        LOADER,
    ),
    Recipe(
        "keras_h5_lambda_in_sequential_in_functional.h5",
        "D.34 legacy HDF5: Lambda inside a Sequential inside a Functional model",
        lambda p: _with_payload(_nested_lambda(), p),
        LOADER,
    ),
    Recipe(
        "keras_h5_lambda_fixed_length_config.h5",
        "D legacy HDF5 whose model_config is a fixed-length byte string, as tf.keras 2 wrote",
        lambda p: _with_payload(_sequential_lambda(), p, fixed=True),
        LOADER,
    ),
    Recipe(
        "keras_h5_lambda_latest_layout.h5",
        "D legacy HDF5 in h5py's newest layout (superblock 3, version 2 object headers)",
        lambda p: _with_payload(_nested_lambda(), p, latest=True),
        LOADER,
    ),
)


def write_h5_malicious(outdir: Path, markers: Path) -> list[Sample]:
    return write_recipes(H5_MALICIOUS, outdir, markers)
