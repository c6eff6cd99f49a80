"""Open Inference Protocol (KServe v2) inference responses, JSON or binary extension.

:func:`encode_infer_response` renders a model's outputs as the exact OIP response
(``model_name``, ``model_version``, ``id``, ``outputs`` with flat row-major ``data``). Outputs
named in ``binary`` go after the JSON part as binary tensor data, announced by their
``binary_data_size`` parameter and the ``Inference-Header-Content-Length`` header. Outputs
that do not fit the model's declaration, or hold NaN or infinity, are never sent: that is a
fault of the model or of Bastion, raised as InternalError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

from bastion.errors import InternalError, UsageError
from bastion.serving._oip import BINARY_CONTENT_TYPE, HEADER_LENGTH_HEADER, JSON_CONTENT_TYPE
from bastion.serving._tensor_data import tensor_to_binary, tensor_to_json_data
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec

__all__ = ["encode_infer_response"]

_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
#: Float outputs up to this many elements are checked for NaN in Python, quicker than numpy.
_SMALL_OUTPUT = 64


def _all_finite(array: np.ndarray[Any, Any]) -> bool:
    """``np.isfinite(array).all()``: a small array's finite sum says so sooner.

    A sum is NaN or infinite when any element is; one that merely overflows goes to numpy.
    """
    if array.size <= _SMALL_OUTPUT and math.isfinite(sum(array.ravel().tolist())):
        return True
    return bool(np.isfinite(array).all())


def _coerce_output(spec: TensorSpec, value: object) -> np.ndarray[Any, Any]:
    """``value`` as an array of ``spec``'s dtype, if it fits the declared shape and type."""
    what = f"model output {spec.name!r}"
    array = np.asarray(value)
    if not spec.matches_shape(array.shape):
        raise InternalError(
            f"{what} has shape {list(array.shape)} but the model declares "
            f"{list(spec.shape)}; check the model's signature"
        )
    if spec.datatype is Datatype.BYTES:
        if array.dtype.kind not in "OSU":
            raise InternalError(f"{what} is {array.dtype} but the model declares BYTES")
        encoded = np.empty(array.shape, dtype=object)
        for index, element in np.ndenumerate(array):
            if isinstance(element, str):
                element = element.encode("utf-8")
            if not isinstance(element, bytes):
                raise InternalError(f"{what} holds a {type(element).__name__}, not bytes")
            encoded[index] = element
        return encoded
    target = spec.datatype.numpy_dtype
    converted = array
    if array.dtype != target:
        if not np.can_cast(array.dtype, target, casting="same_kind"):
            raise InternalError(
                f"{what} is {array.dtype} but the model declares {spec.datatype.value}"
            )
        with np.errstate(over="ignore", invalid="ignore"):
            converted = array.astype(target)
    if spec.datatype.is_float and not _all_finite(converted):
        raise InternalError(
            f"{what} holds NaN or infinity (or a value out of range for "
            f"{spec.datatype.value}); refusing to send it"
        )
    return converted


def encode_infer_response(
    model_name: str,
    model_version: str | None,
    request_id: str | None,
    outputs: Mapping[str, object],
    *,
    signature: ModelSignature,
    binary: Collection[str] = (),
) -> tuple[bytes, dict[str, str]]:
    """The OIP response body and its headers for ``outputs`` (name to array-like).

    Outputs appear in the order of ``outputs``; each must be declared in ``signature``.
    ``model_version`` and ``request_id`` are left out when None. Raises InternalError for
    an output that does not fit its declaration or is not finite, UsageError for a name in
    ``binary`` that is not among ``outputs``.
    """
    stray = sorted(set(binary) - set(outputs)) if binary else []
    if stray:
        raise UsageError(f"binary outputs {stray} are not among the outputs to encode")
    document: dict[str, object] = {"model_name": model_name}
    if model_version is not None:
        document["model_version"] = model_version
    if request_id is not None:
        document["id"] = request_id
    rendered: list[dict[str, object]] = []
    blobs: list[bytes] = []
    for name, value in outputs.items():
        spec = signature.output(name)
        if spec is None:
            raise InternalError(f"model output {name!r} is not declared in its signature")
        array = _coerce_output(spec, value)
        entry: dict[str, object] = {
            "name": name,
            "datatype": spec.datatype.value,
            "shape": list(array.shape),
        }
        if name in binary:
            blob = tensor_to_binary(spec.datatype, array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            try:
                entry["data"] = tensor_to_json_data(spec.datatype, array)
            except UnicodeDecodeError as exc:
                raise InternalError(
                    f"model output {name!r} holds bytes that are not UTF-8 text; "
                    "ask for it with binary_data"
                ) from exc
        rendered.append(entry)
    document["outputs"] = rendered
    header = _ENCODER.encode(document).encode("utf-8")
    if not blobs:
        return header, {"Content-Type": JSON_CONTENT_TYPE}
    headers = {
        "Content-Type": BINARY_CONTENT_TYPE,
        HEADER_LENGTH_HEADER: str(len(header)),
    }
    return header + b"".join(blobs), headers
