"""Ordinary model files, as the libraries write them, on which a scanner must stay quiet.

torch state dicts in several dtypes and full training checkpoints (zip and legacy
formats), scikit-learn estimators (pickle and every joblib compression), numpy,
pandas, safetensors, and pickles of builtins and collections.

The table imports nothing heavy: the ML libraries are imported when a file is
written, so that test collection can list the samples cheaply.
"""

from __future__ import annotations

import collections
import functools
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.scanning_corpus._sample import Sample

__all__ = ["BENIGN", "write_benign_samples"]

TORCH_DTYPES = ("float32", "float16", "bfloat16", "int8", "bool", "complex64")


def _module() -> Any:
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2)
    )


def _torch_save(obj: Any, path: Path, *, legacy: bool = False) -> None:
    import torch

    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)


def _state_dict(dtype: str) -> Any:
    import torch

    state = _module().state_dict()  # an OrderedDict carrying _metadata, as saved in practice
    for key, value in state.items():
        state[key] = value.to(getattr(torch, dtype))
    return state


@functools.cache
def _checkpoint() -> dict[str, Any]:
    import torch

    model = _module()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 3,
        "hparams": {"lr": 1e-3, "betas": (0.9, 0.999), "name": "tiny-mlp", "dropout": None},
        "losses": [0.91, 0.74, 0.69],
    }


@functools.cache
def _breast_cancer() -> tuple[Any, Any]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return data.data, data.target


@functools.cache
def _pipeline() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    steps = [("scale", StandardScaler()), ("classify", LogisticRegression(max_iter=1000))]
    return Pipeline(steps).fit(*_breast_cancer())


def _forest() -> Any:
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0)
    return forest.fit(*_breast_cancer())


def _arrays() -> dict[str, Any]:
    import numpy as np

    rng = np.random.default_rng(0)
    return {
        "weights": rng.standard_normal((4, 8)).astype(np.float32),
        "ids": np.arange(12, dtype=np.int64).reshape(3, 4),
    }


def _frame() -> Any:
    import numpy as np
    import pandas as pd

    features, target = _breast_cancer()
    frame = pd.DataFrame(features[:40, :5], columns=[f"f{i}" for i in range(5)])
    frame["label"] = pd.Categorical(np.where(target[:40] == 1, "benign", "malignant"))
    frame["count"] = np.arange(40, dtype=np.int64)
    frame["seen"] = pd.date_range("2024-01-01", periods=40, freq="D")
    return frame


def _builtins() -> dict[str, Any]:
    return {
        "dict": {"a": 1, "b": [2, 3]},
        "list": [1, "two", 3.0, None, True],
        "set": {1, 2, 3},
        "frozenset": frozenset({"x"}),
        "tuple": (1, "a", (2, "b")),
        "bytes": b"\x00\x01weights",
        "bytearray": bytearray(b"buffer"),
        "float": 0.125,
        "complex": 1 + 2j,
        "big": 2**100,
        "text": "naïve ✓",
    }


def _collections() -> dict[str, Any]:
    counts: collections.defaultdict[str, list[int]] = collections.defaultdict(list)
    counts["a"].append(1)
    return {
        "ordered": collections.OrderedDict([("z", 1), ("a", 2)]),
        "default": counts,
        "counter": collections.Counter("hello"),
        "deque": collections.deque([1, 2, 3], maxlen=5),
    }


def _joblib(obj: Callable[[], Any], compress: Any = 0) -> Callable[[Path], object]:
    def write(path: Path) -> object:
        import joblib

        return joblib.dump(obj(), path, compress=compress)

    return write


def _numpy(kind: str) -> Callable[[Path], object]:
    def write(path: Path) -> object:
        import numpy as np

        arrays = _arrays()
        if kind == "npz":
            return np.savez(path, **arrays)
        if kind == "npz-compressed":
            return np.savez_compressed(path, **arrays)
        return np.save(path, arrays[kind])

    return write


def _safetensors(path: Path) -> None:
    import safetensors.numpy

    safetensors.numpy.save_file(_arrays(), path, metadata={"format": "np"})


def _pickled(obj: Callable[[], Any], proto: int) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(pickle.dumps(obj(), proto))


@dataclass(frozen=True)
class Benign:
    name: str
    technique: str
    loader: str
    write: Callable[[Path], object]


BENIGN = (
    *(
        Benign(
            f"torch_state_dict_{dtype}.pt",
            f"torch state_dict, {dtype}",
            "torch",
            lambda path, dtype=dtype: _torch_save(_state_dict(dtype), path),
        )
        for dtype in TORCH_DTYPES
    ),
    Benign(
        "torch_checkpoint.pt",
        "torch checkpoint: model and Adam state dicts, epoch, hparams dict, list",
        "torch",
        lambda path: _torch_save(_checkpoint(), path),
    ),
    Benign(
        "torch_checkpoint_legacy.pt",
        "the same checkpoint in torch's legacy (non-zip) format",
        "torch",
        lambda path: _torch_save(_checkpoint(), path, legacy=True),
    ),
    *(
        Benign(
            f"sklearn_pipeline_p{proto}.pkl",
            f"sklearn Pipeline (StandardScaler, LogisticRegression), pickle protocol {proto}",
            "pickle",
            _pickled(_pipeline, proto),
        )
        for proto in (2, 4, 5)
    ),
    *(
        Benign(
            name,
            f"sklearn Pipeline, joblib.dump(compress={compress!r})",
            "joblib",
            _joblib(_pipeline, compress),
        )
        for name, compress in (
            ("sklearn_pipeline.joblib", 0),
            ("sklearn_pipeline_zlib.joblib", 3),
            ("sklearn_pipeline.joblib.gz", ("gzip", 3)),
            ("sklearn_pipeline.joblib.bz2", ("bz2", 3)),
            ("sklearn_pipeline.joblib.xz", ("xz", 3)),
        )
    ),
    Benign(
        "sklearn_random_forest.joblib",
        "RandomForestClassifier, joblib.dump",
        "joblib",
        _joblib(_forest),
    ),
    Benign("numpy_float32.npy", "numpy float32 array", "numpy", _numpy("weights")),
    Benign("numpy_int64.npy", "numpy int64 array", "numpy", _numpy("ids")),
    Benign("numpy_arrays.npz", "np.savez of two arrays", "numpy", _numpy("npz")),
    Benign(
        "numpy_arrays_compressed.npz",
        "np.savez_compressed of two arrays",
        "numpy",
        _numpy("npz-compressed"),
    ),
    Benign(
        "pandas_frame.pkl",
        "pandas DataFrame (float, categorical, int, datetime columns), to_pickle",
        "pandas",
        lambda path: _frame().to_pickle(path),
    ),
    Benign(
        "pandas_frame.pkl.gz",
        "the same DataFrame, to_pickle with gzip inferred from the extension",
        "pandas",
        lambda path: _frame().to_pickle(path),
    ),
    Benign(
        "safetensors_weights.safetensors",
        "safetensors.numpy.save_file",
        "safetensors",
        _safetensors,
    ),
    *(
        Benign(
            f"builtins_p{proto}.pkl",
            f"pickle of builtin types, protocol {proto}",
            "pickle",
            _pickled(_builtins, proto),
        )
        for proto in (0, 2, 5)
    ),
    Benign(
        "collections.pkl",
        "OrderedDict, defaultdict(list), Counter, deque",
        "pickle",
        _pickled(_collections, 4),
    ),
)


def write_benign_samples(outdir: Path) -> list[Sample]:
    """Write the benign corpus into ``outdir``; every sample loads with its library."""
    samples = []
    for item in BENIGN:
        path = outdir / item.name
        item.write(path)
        samples.append(Sample(item.name, path, item.technique, False, item.loader))
    return samples
