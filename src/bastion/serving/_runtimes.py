"""The runtimes a deployment can use, which one a model's files need, and loading with ONNX.

Only formats whose loading cannot run code from the file are served: ONNX (with ONNX Runtime)
and skops (scikit-learn, trusted types only, :mod:`bastion.serving._runtime_skops`).
Pickle-based files are never loaded for serving. Loading happens inside a model worker
(:mod:`bastion.serving._worker_main`), from bytes: the runtime never sees a path.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from bastion.errors import InputError
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec

__all__ = ["LoadedModel", "RuntimeKind", "load_model", "prepare_runtime", "select_model_file"]


class RuntimeKind(enum.StrEnum):
    """A runtime that loads a model format without running code from it."""

    ONNX = "onnx"
    SKOPS = "skops"


_PICKLE_SUFFIXES = (
    ".pkl",
    ".pickle",
    ".joblib",
    ".dill",
    ".sav",
    ".pt",
    ".pth",
    ".bin",
    ".ckpt",
    ".h5",
    ".hdf5",
    ".keras",
    ".npy",
    ".npz",
)
_EXTERNAL_DATA_SUFFIXES = (".onnx.data", ".onnx_data")
_SERVED = "the gateway serves ONNX (one .onnx file) or scikit-learn saved with skops (.skops)"
_CONVERT = (
    "export the model to ONNX (skl2onnx, torch.onnx.export) or save a scikit-learn model "
    "with skops.io.dump; `bastion convert` converts pickle-based files without running them"
)


def _several(kind: str, names: Sequence[str]) -> InputError:
    shown = ", ".join(sorted(names)[:5])
    return InputError(
        f"the version holds {len(names)} {kind} files ({shown}); a served version must hold "
        "exactly one model file: publish each model as its own version"
    )


def select_model_file(files: Mapping[str, int]) -> tuple[RuntimeKind, str]:
    """The runtime and the one file to serve among ``files`` (relative path -> size).

    Exactly one ``.onnx`` file is served with ONNX Runtime; otherwise exactly one ``.skops``
    file with skops. Anything else (pickle-based files, no model file, several candidates,
    ONNX with external data files) raises InputError saying what can be served.
    """
    by_suffix: dict[str, list[str]] = {".onnx": [], ".skops": []}
    pickles: list[str] = []
    external: list[str] = []
    lowered_names = {path.lower() for path in files}
    for path in files:
        lowered = path.lower()
        if lowered.endswith(_EXTERNAL_DATA_SUFFIXES) or (
            lowered.endswith(".data") and f"{lowered[:-5]}.onnx" in lowered_names
        ):
            external.append(path)
        suffix = next((key for key in by_suffix if lowered.endswith(key)), None)
        if suffix is not None:
            by_suffix[suffix].append(path)
        elif lowered.endswith(_PICKLE_SUFFIXES):
            pickles.append(path)
    for suffix, kind in ((".onnx", RuntimeKind.ONNX), (".skops", RuntimeKind.SKOPS)):
        candidates = by_suffix[suffix]
        if len(candidates) > 1:
            raise _several(suffix, candidates)
        if not candidates:
            continue
        (chosen,) = candidates
        if kind is RuntimeKind.ONNX and external:
            raise _external_data_error(chosen, external)
        if files[chosen] <= 0:
            raise InputError(f"{chosen} is empty; publish a version with the model's file")
        return kind, chosen
    if pickles:
        shown = ", ".join(sorted(pickles)[:5])
        raise InputError(
            f"{shown}: pickle-based files are never loaded for serving; {_SERVED}: {_CONVERT}"
        )
    raise InputError(f"the version holds no model file that can be served; {_SERVED}: {_CONVERT}")


def _external_data_error(model: str, external: Sequence[str]) -> InputError:
    shown = f" ({', '.join(sorted(external)[:3])})" if external else ""
    return InputError(
        f"{model} keeps tensors in external data files{shown}, which are not served: save "
        "the model as one file (onnx.save_model(model, path, save_as_external_data=False))"
    )


class LoadedModel(Protocol):
    """A model loaded in a worker: its signature, and inference."""

    @property
    def signature(self) -> ModelSignature: ...

    def run(
        self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """The named ``outputs`` for ``inputs``; InputError if the runtime refuses them."""
        ...


_ONNX_TYPES: dict[str, Datatype] = {
    "tensor(bool)": Datatype.BOOL,
    "tensor(uint8)": Datatype.UINT8,
    "tensor(uint16)": Datatype.UINT16,
    "tensor(uint32)": Datatype.UINT32,
    "tensor(uint64)": Datatype.UINT64,
    "tensor(int8)": Datatype.INT8,
    "tensor(int16)": Datatype.INT16,
    "tensor(int32)": Datatype.INT32,
    "tensor(int64)": Datatype.INT64,
    "tensor(float16)": Datatype.FP16,
    "tensor(float)": Datatype.FP32,
    "tensor(double)": Datatype.FP64,
    "tensor(string)": Datatype.BYTES,
}
#: ONNX Runtime's own source locations (``/onnxruntime_src/...cc:44 onnxruntime::F(...)``).
_SOURCE_PATH = re.compile(r"\S*onnxruntime_src\S*(?: onnxruntime::\S+\(.*?\))?")
_ZIPMAP_ADVICE = "convert with zipmap disabled (skl2onnx options={'zipmap': False})"


def runtime_reason(exc: BaseException) -> str:
    """A runtime exception's message, one line, without ONNX Runtime's prefix or source paths."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if text.startswith("[ONNXRuntimeError]"):
        text = text.split(" : ", 3)[-1]
    return " ".join(_SOURCE_PATH.sub("", text).split())[:300]


def _spec(node: Any, side: str) -> TensorSpec:
    datatype = _ONNX_TYPES.get(node.type)
    if datatype is None:
        advice = _ZIPMAP_ADVICE if not str(node.type).startswith("tensor(") else "use a tensor"
        raise InputError(
            f"the ONNX model's {side} {node.name!r} has type {node.type}, which is not served: "
            f"{advice}"
        )
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else -1 for dim in node.shape or ())
    return TensorSpec(node.name, datatype, shape)


class OnnxModel:
    """An ONNX model in an ONNX Runtime session on the CPU."""

    def __init__(self, data: bytes, *, threads: int) -> None:
        import onnxruntime as ort  # type: ignore[import-untyped]

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 4
        try:
            self._session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own pybind11 types and RuntimeError
            reason = runtime_reason(exc)
            if "model_path must not be empty" in reason or "external data" in reason.lower():
                raise _external_data_error("the ONNX model", ()) from exc
            raise InputError(f"ONNX Runtime cannot load the model: {reason}") from exc
        self.signature = ModelSignature(
            tuple(_spec(node, "input") for node in self._session.get_inputs()),
            tuple(_spec(node, "output") for node in self._session.get_outputs()),
        )
        self._strings = {s.name for s in self.signature.inputs if s.datatype is Datatype.BYTES}

    def run(
        self, inputs: Mapping[str, np.ndarray[Any, Any]], outputs: Sequence[str]
    ) -> dict[str, np.ndarray[Any, Any]]:
        """The named ``outputs``; InputError with ONNX Runtime's reason if it refuses."""
        try:
            feed = inputs
            if self._strings:
                feed = {
                    name: _as_text(array) if name in self._strings else array
                    for name, array in inputs.items()
                }
            values = self._session.run(list(outputs), feed)
        except UnicodeDecodeError as exc:
            raise InputError("a BYTES input holds text that is not UTF-8") from exc
        except MemoryError:
            raise
        except Exception as exc:  # InvalidArgument, Fail, RuntimeException from pybind11
            raise InputError(f"the model refused the input: {runtime_reason(exc)}") from exc
        return dict(zip(outputs, values, strict=True))


def _as_text(array: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """A BYTES array as the str array ONNX Runtime takes for tensor(string)."""
    text = np.empty(array.shape, dtype=object)
    text.reshape(-1)[:] = [bytes(item).decode("utf-8") for item in array.reshape(-1)]
    return text


def prepare_runtime(kind: RuntimeKind) -> None:
    """Import ``kind``'s runtime now, before the worker is locked down."""
    if kind is RuntimeKind.ONNX:
        import onnxruntime

        onnxruntime.set_default_logger_severity(4)
    else:
        from bastion.serving._runtime_skops import prepare_skops

        prepare_skops()


def load_model(kind: RuntimeKind, data: bytes, *, threads: int) -> LoadedModel:
    """``data`` loaded with ``kind``'s runtime; InputError with the runtime's reason if not."""
    if kind is RuntimeKind.ONNX:
        return OnnxModel(data, threads=threads)
    from bastion.serving._runtime_skops import SkopsModel

    return SkopsModel(data)
