"""Small real models for the gateway's tests, trained on scikit-learn's bundled datasets.

Each is converted to ONNX with skl2onnx (zipmap off: the probabilities are a tensor) and
written into a model folder ready to sign and push.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["breast_cancer", "onnx_bytes", "write_onnx_model"]


@functools.cache
def breast_cancer() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = ((data.data - data.data.mean(axis=0)) / data.data.std(axis=0)).astype(np.float32)
    return x, data.target.astype(np.int64)


@functools.cache
def onnx_bytes(kind: str = "logistic", *, seed: int = 0) -> bytes:
    """``logistic`` (C varies with ``seed``) or ``forest`` (10 trees), 30 FP32 inputs."""
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    x, y = breast_cancer()
    model: Any
    if kind == "logistic":
        model = LogisticRegression(C=0.1 * (seed + 1), max_iter=2000).fit(x, y)
    else:
        model = RandomForestClassifier(n_estimators=10, random_state=seed).fit(x, y)
    onnx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    data: bytes = onnx.SerializeToString()
    return data


def write_onnx_model(folder: Path, kind: str = "logistic", *, seed: int = 0) -> Path:
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(onnx_bytes(kind, seed=seed))
    (folder / "README.md").write_text(f"# {kind} on breast cancer, seed {seed}\n")
    return folder
