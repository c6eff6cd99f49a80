"""Load corpus samples with the real libraries. DANGEROUS: runs their payloads.

Only ever run as a throwaway subprocess, in a temporary working directory::

    python _load.py REQUEST.json RESULT.json

REQUEST is a list of ``{"name", "path", "loader", "safe"}``; ``safe`` asks for the
loader's restricted mode where it has one (torch ``weights_only=True``, numpy
``allow_pickle=False``, Keras ``safe_mode=True``), as benign samples must load that
way. RESULT maps each name to null (loaded) or the exception it raised. Results go to a file because
payloads may write to stdout.
"""

from __future__ import annotations

import json
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any


def _pickle(path: Path) -> None:
    import pickle

    with path.open("rb") as stream:
        pickle.load(stream)  # noqa: S301 - this script exists to run pickles


def _pickle_stream(path: Path) -> None:
    import pickle

    with path.open("rb") as stream:
        while stream.peek(1):
            pickle.load(stream)  # noqa: S301 - this script exists to run pickles


def _torch(path: Path, safe: bool) -> None:
    import torch

    torch.load(path, weights_only=safe)


def _numpy(path: Path, safe: bool) -> None:
    import numpy as np

    loaded: Any = np.load(path, allow_pickle=not safe)
    if path.suffix == ".npz":
        with loaded:
            for key in loaded.files:
                loaded[key]


def _onnx(path: Path) -> None:
    """onnx.load (which reads external data), then an onnxruntime session run on zeros."""
    import numpy as np
    import onnx
    import onnxruntime

    onnx.checker.check_model(onnx.load(path))
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {
        spec.name: np.zeros([d if isinstance(d, int) else 1 for d in spec.shape], np.float32)
        for spec in session.get_inputs()
    }
    session.run(None, feeds)


def _keras(path: Path, safe: bool) -> None:
    """keras.models.load_model on the torch backend; Lambda bytecode runs while it loads."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    keras.models.load_model(path, safe_mode=safe)


def _tensorflow(path: Path) -> None:
    """``tf.saved_model.load`` on a folder holding the sample as ``saved_model.pb``; a TF1
    graph's main op (``saved_model_main_op``) runs while it loads."""
    import shutil

    import tensorflow as tf

    with tempfile.TemporaryDirectory() as scratch:
        shutil.copyfile(path, Path(scratch, "saved_model.pb"))
        tf.saved_model.load(scratch)


def _inner(path: Path, load: Any, safe: bool) -> None:
    """Unpack the one file inside an archive, as a user would, and load it."""
    with tempfile.TemporaryDirectory() as scratch:
        if path.read_bytes()[:6] == b"7z\xbc\xaf\x27\x1c":
            import py7zr

            with py7zr.SevenZipFile(path) as archive:
                (member,) = archive.getnames()
                archive.extractall(scratch)  # noqa: S202 - our own archive, a scratch dir
            inner = Path(scratch, member)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                (member,) = archive.namelist()
                inner = Path(archive.extract(member, scratch))
        else:
            with tarfile.open(path) as archive:
                (member,) = archive.getmembers()
                archive.extractall(scratch, members=[member], filter="data")
                inner = Path(scratch, member.name)
        load(inner, safe)


def _sharded_torch(path: Path, safe: bool) -> None:
    """Every shard the folder's index names, loaded in turn, as transformers loads them."""
    folder = path.parent
    index = json.loads((folder / "pytorch_model.bin.index.json").read_text())
    for shard in sorted(set(index["weight_map"].values())):
        if Path(shard).name != shard:
            raise ValueError(f"shard {shard!r} is not a file name")
        _torch(folder / shard, safe)


def load(loader: str, path: Path, safe: bool) -> None:
    if loader == "pickle":
        _pickle(path)
    elif loader == "pickle-stream":
        _pickle_stream(path)
    elif loader == "torch":
        _torch(path, safe)
    elif loader == "joblib":
        import joblib

        joblib.load(path)
    elif loader == "numpy":
        _numpy(path, safe)
    elif loader == "pandas":
        import pandas as pd

        pd.read_pickle(path)  # noqa: S301 - this script exists to run pickles
    elif loader == "safetensors":
        import safetensors.numpy

        safetensors.numpy.load_file(path)
    elif loader == "zip/torch":
        _inner(path, _torch, safe)
    elif loader in ("tar/pickle", "7z/pickle"):
        _inner(path, lambda inner, _safe: _pickle(inner), safe)
    elif loader in ("tar/torch", "7z/torch"):
        _inner(path, _torch, safe)
    elif loader == "sharded/torch":
        _sharded_torch(path, safe)
    elif loader == "onnx":
        _onnx(path)
    elif loader in ("keras", "keras-h5"):  # load_model picks legacy HDF5 by the .h5 suffix
        _keras(path, safe)
    elif loader == "tensorflow":  # no restricted mode: a SavedModel holds no Python
        _tensorflow(path)
    else:
        raise ValueError(f"unknown loader {loader!r}")


def main(request: Path, result: Path) -> None:
    outcome: dict[str, str | None] = {}
    for item in json.loads(request.read_text()):
        try:
            load(item["loader"], Path(item["path"]), item["safe"])
        except BaseException as exc:  # a payload may raise anything, even SystemExit
            outcome[item["name"]] = f"{type(exc).__name__}: {exc}"[:500]
        else:
            outcome[item["name"]] = None
    result.write_text(json.dumps(outcome))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
