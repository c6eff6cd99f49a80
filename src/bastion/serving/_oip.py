"""Open Inference Protocol (KServe v2) inference requests, parsed and validated strictly.

:func:`parse_infer_request` turns an HTTP body into an :class:`InferRequest` whose inputs
are numpy arrays exactly as the model declared them, or raises a Bastion error that names
what was wrong: :class:`UnsupportedMediaTypeError` (HTTP 415) for a content type other than JSON
or the binary tensor data extension, ``PayloadTooLargeError`` (413) for a body over the
limit, ``InputError`` (400) for everything else. Checks run cheapest first: body size,
content type, JSON nesting depth, then the document against the model's signature.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from bastion.errors import (
    InputError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    UsageError,
)
from bastion.serving._oip_fields import (
    Scalar,
    check_keys,
    check_parameters,
    check_shape,
    show_names,
)
from bastion.serving._strict_json import load_strict_json
from bastion.serving._tensor_data import tensor_from_binary, tensor_from_json
from bastion.serving._tensors import ModelSignature, TensorSpec

__all__ = [
    "BINARY_CONTENT_TYPE",
    "HEADER_LENGTH_HEADER",
    "JSON_CONTENT_TYPE",
    "InferLimits",
    "InferRequest",
    "RequestedOutput",
    "parse_infer_request",
]

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"
#: The binary extension's header: the length of the JSON part at the start of the body.
HEADER_LENGTH_HEADER = "Inference-Header-Content-Length"

_REQUEST_KEYS = frozenset({"id", "parameters", "inputs", "outputs", "model_name", "model_version"})
_REQUEST_REQUIRED = frozenset({"inputs"})
_INPUT_KEYS = frozenset({"name", "shape", "datatype", "parameters", "data"})
_INPUT_REQUIRED = frozenset({"name", "shape", "datatype"})
_OUTPUT_KEYS = frozenset({"name", "parameters"})
_OUTPUT_REQUIRED = frozenset({"name"})


@dataclass(frozen=True)
class InferLimits:
    """Bounds on one inference request; anything over them is refused before inference."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_inputs: int = 16
    max_elements: int = 1_000_000
    max_batch: int = 256
    max_json_depth: int = 8
    max_bytes_element: int = 64 * 1024

    def __post_init__(self) -> None:
        for limit in fields(self):
            value = getattr(self, limit.name)
            if type(value) is not int or value < 1:
                raise UsageError(f"InferLimits.{limit.name} must be a positive integer")


@dataclass(frozen=True)
class RequestedOutput:
    """An output the caller asked for, and whether to return it as binary data."""

    name: str
    binary_data: bool = False


@dataclass(frozen=True)
class InferRequest:
    """A validated inference request: every declared input, shaped and typed as declared.

    ``requested_outputs`` lists the outputs to return; when the caller named none it holds
    every declared output, binary if the request parameter ``binary_data_output`` was true.
    """

    id: str | None
    parameters: Mapping[str, Scalar]
    inputs: dict[str, np.ndarray[Any, Any]] = field(repr=False)
    requested_outputs: tuple[RequestedOutput, ...]


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _check_content_type(content_type: str | None, header_length: str | None) -> str:
    if content_type == JSON_CONTENT_TYPE:  # what nearly every client sends
        return JSON_CONTENT_TYPE
    if content_type is None:
        # Triton's own clients declare no type: the binary extension's header tells which.
        return JSON_CONTENT_TYPE if header_length is None else BINARY_CONTENT_TYPE
    media, *parameters = (part.strip() for part in content_type.split(";"))
    media = media.lower()
    extras = [parameter for parameter in parameters if parameter]
    if media == JSON_CONTENT_TYPE:
        for parameter in extras:
            key, _, value = parameter.partition("=")
            if key.strip().lower() != "charset" or value.strip().strip('"').lower() not in (
                "utf-8",
                "utf8",
            ):
                raise UnsupportedMediaTypeError(
                    f"content type {content_type[:80]!r} is not accepted; JSON bodies "
                    "must be UTF-8 (charset=utf-8 or no parameter)"
                )
        return media
    if media == BINARY_CONTENT_TYPE and not extras:
        return media
    raise UnsupportedMediaTypeError(
        f"content type {content_type[:80]!r} is not accepted; send {JSON_CONTENT_TYPE} or, "
        f"with {HEADER_LENGTH_HEADER}, {BINARY_CONTENT_TYPE}"
    )


def _split_body(
    body: bytes, content_type: str | None, headers: Mapping[str, str], limits: InferLimits
) -> tuple[bytes, bytes | None]:
    """The JSON part and the binary part (None without the binary extension) of ``body``."""
    if len(body) > limits.max_body_bytes:
        raise PayloadTooLargeError(
            f"the request body is {len(body)} bytes; the limit is {limits.max_body_bytes} "
            "bytes: send fewer or smaller inputs"
        )
    header_length = _header(headers, HEADER_LENGTH_HEADER)
    media = _check_content_type(content_type, header_length)
    if header_length is None:
        if media == BINARY_CONTENT_TYPE:
            raise InputError(
                f"a {BINARY_CONTENT_TYPE} body needs the {HEADER_LENGTH_HEADER} header "
                "giving the length of its JSON part"
            )
        return body, None
    text = header_length.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20 or int(text) > len(body):
        raise InputError(
            f"{HEADER_LENGTH_HEADER} must be a whole number of bytes no larger than the "
            f"body ({len(body)} bytes)"
        )
    split = int(text)
    return body[:split], body[split:]


def _check_value_ranges(
    signature: ModelSignature, value_ranges: Mapping[str, tuple[float, float]]
) -> None:
    for name, bounds in value_ranges.items():
        spec = signature.input(name)
        if spec is None or not (spec.datatype.is_integer or spec.datatype.is_float):
            raise UsageError(
                f"value range for {name!r}: the model has no numeric input of that name"
            )
        low, high = bounds
        if not low <= high:
            raise UsageError(f"value range for {name!r}: the low bound exceeds the high one")


def _check_in_range(array: np.ndarray[Any, Any], bounds: tuple[float, float], what: str) -> None:
    low, high = bounds
    flat = array.reshape(-1)
    outside = np.flatnonzero((flat < low) | (flat > high))
    if outside.size:
        raise InputError(
            f"{what}: element {int(outside[0])} is outside the allowed range "
            f"[{low}, {high}]; send values within it"
        )


@dataclass
class _PendingBinary:
    name: str
    spec: TensorSpec
    shape: tuple[int, ...]
    size: int


def _read_input(
    entry: object,
    signature: ModelSignature,
    limits: InferLimits,
    decoded: dict[str, np.ndarray[Any, Any]],
    pending: list[_PendingBinary],
) -> None:
    """Check one ``$request_input``; decode its JSON data or queue its binary data."""
    obj = check_keys(entry, "request input", _INPUT_KEYS, _INPUT_REQUIRED)
    name = obj["name"]
    if not isinstance(name, str):
        raise InputError("request input: 'name' must be a string")
    spec = signature.input(name)
    what = f"input {name[:64]!r}"
    if spec is None:
        raise InputError(f"unknown {what}; the model's inputs are {show_names(signature.inputs)}")
    if name in decoded or (pending and any(item.name == name for item in pending)):
        raise InputError(f"{what} is given more than once; send each input once")
    if obj["datatype"] != spec.datatype:  # a StrEnum: equal to its wire text
        shown = obj["datatype"][:16] if isinstance(obj["datatype"], str) else "a non-string"
        raise InputError(f"{what}: expected datatype {spec.datatype.value}, got {shown!r}")
    shape = check_shape(
        obj["shape"],
        spec,
        max_batch=limits.max_batch,
        max_elements=limits.max_elements,
        what=what,
    )
    raw_parameters = obj.get("parameters")
    parameters = (
        {} if raw_parameters is None else check_parameters(raw_parameters, f"{what} parameters")
    )
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in obj:
            raise InputError(f"{what}: give 'data', or 'binary_data_size' in its parameters")
        decoded[name] = tensor_from_json(
            spec.datatype,
            shape,
            obj["data"],
            max_bytes_element=limits.max_bytes_element,
            what=what,
        )
        return
    if type(size) is not int or size < 0:
        raise InputError(f"{what}: binary_data_size must be a non-negative integer")
    if "data" in obj:
        raise InputError(f"{what}: give either 'data' or binary_data_size, not both")
    pending.append(_PendingBinary(name, spec, shape, size))


def _decode_binary(
    pending: list[_PendingBinary], binary: bytes | None, limits: InferLimits
) -> dict[str, np.ndarray[Any, Any]]:
    """The binary inputs, cut from ``binary`` in request order; sizes must add up exactly."""
    total = sum(item.size for item in pending)
    if binary is None:
        if pending:
            raise InputError(
                f"input {pending[0].name[:64]!r} has binary_data_size but the body has no "
                f"binary part; send {HEADER_LENGTH_HEADER} with the JSON part's length"
            )
        return {}
    if total != len(binary):
        raise InputError(
            f"the binary_data_size values add up to {total} bytes but {len(binary)} bytes "
            f"follow the JSON part; they must match exactly"
        )
    decoded: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for item in pending:
        decoded[item.name] = tensor_from_binary(
            item.spec.datatype,
            item.shape,
            binary[offset : offset + item.size],
            max_bytes_element=limits.max_bytes_element,
            what=f"input {item.name[:64]!r}",
        )
        offset += item.size
    return decoded


@functools.lru_cache(maxsize=256)
def _every_output(outputs: tuple[TensorSpec, ...], binary: bool) -> tuple[RequestedOutput, ...]:
    """Every declared output, as when a caller names none: built once per model, not per call."""
    return tuple(RequestedOutput(spec.name, binary) for spec in outputs)


def _requested_outputs(
    entries: object, signature: ModelSignature, binary_default: bool
) -> tuple[RequestedOutput, ...]:
    if entries is None or entries == []:
        return _every_output(signature.outputs, binary_default)
    if not isinstance(entries, list):
        raise InputError("'outputs' must be a list of {\"name\": ...} objects")
    requested: list[RequestedOutput] = []
    for entry in entries:
        obj = check_keys(entry, "requested output", _OUTPUT_KEYS, _OUTPUT_REQUIRED)
        name = obj["name"]
        if not isinstance(name, str) or signature.output(name) is None:
            shown = name[:64] if isinstance(name, str) else "a non-string"
            raise InputError(
                f"unknown output {shown!r}; the model's outputs are {show_names(signature.outputs)}"
            )
        if any(item.name == name for item in requested):
            raise InputError(f"output {name!r} is requested more than once")
        parameters = check_parameters(obj.get("parameters"), f"output {name!r} parameters")
        binary = parameters.get("binary_data", binary_default)
        if type(binary) is not bool:
            raise InputError(f"output {name!r}: binary_data must be true or false")
        requested.append(RequestedOutput(name, binary))
    return tuple(requested)


def parse_infer_request(
    body: bytes,
    content_type: str | None,
    headers: Mapping[str, str],
    signature: ModelSignature,
    limits: InferLimits,
    *,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
) -> InferRequest:
    """Parse and validate an OIP ``infer`` request body against ``signature``.

    ``headers`` needs only ``Inference-Header-Content-Length`` when the binary extension is
    used (names are matched case-insensitively). ``value_ranges`` maps numeric input names
    to inclusive (low, high) bounds. Raises UnsupportedMediaTypeError, PayloadTooLargeError or
    InputError; UsageError when ``value_ranges`` does not fit ``signature``.
    """
    ranges = dict(value_ranges or {})
    _check_value_ranges(signature, ranges)
    json_part, binary = _split_body(body, content_type, headers, limits)
    document = check_keys(
        load_strict_json(json_part, max_depth=limits.max_json_depth),
        "inference request",
        _REQUEST_KEYS,
        _REQUEST_REQUIRED,
    )
    for ignored in ("model_name", "model_version"):  # some clients repeat the URL's; unused
        if not isinstance(document.get(ignored, ""), str):
            raise InputError(f"{ignored!r} must be a string")
    request_id = document.get("id")
    if request_id is not None and (
        not isinstance(request_id, str) or len(request_id) > 256 or not request_id.isprintable()
    ):
        raise InputError("'id' must be printable text of at most 256 characters")
    parameters = check_parameters(document.get("parameters"), "request parameters")
    binary_default = parameters.get("binary_data_output", False)
    if type(binary_default) is not bool:
        raise InputError("binary_data_output must be true or false")
    outputs = _requested_outputs(document.get("outputs"), signature, binary_default)
    entries = document["inputs"]
    if not isinstance(entries, list):
        raise InputError("'inputs' must be a list of request inputs")
    if len(entries) > limits.max_inputs:
        raise InputError(f"the request has {len(entries)} inputs; the limit is {limits.max_inputs}")
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    pending: list[_PendingBinary] = []
    for entry in entries:
        _read_input(entry, signature, limits, inputs, pending)
    if pending or binary is not None:
        inputs.update(_decode_binary(pending, binary, limits))
    if len(inputs) != len(signature.inputs):  # each name in inputs is declared, and once
        missing = [spec for spec in signature.inputs if spec.name not in inputs]
        raise InputError(f"missing input(s) {show_names(missing)}; send every declared input")
    for name, bounds in ranges.items():
        _check_in_range(inputs[name], bounds, f"input {name!r}")
    ordered = {spec.name: inputs[spec.name] for spec in signature.inputs}
    return InferRequest(request_id, parameters, ordered, outputs)
