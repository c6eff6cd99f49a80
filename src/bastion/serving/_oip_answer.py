"""Open Inference Protocol inference answers from a fronted server, parsed strictly.

:func:`parse_infer_answer` is the other direction of ``encode_infer_response``: it reads
the answer an upstream OIP server (Triton, KServe, MLServer) sent for an inference request,
in JSON or in the binary tensor data extension, and checks it against the model's
signature: known fields only, every output declared, with its declared datatype and a shape
that fits the declaration, data of exactly that many elements, binary parts that add up to
exactly what follows the JSON part. The upstream server is not trusted more than a caller:
any violation raises :class:`UpstreamError` (HTTP 502), never a parse error of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bastion.errors import InputError, UpstreamError
from bastion.serving._oip import BINARY_CONTENT_TYPE, HEADER_LENGTH_HEADER, JSON_CONTENT_TYPE
from bastion.serving._oip_fields import check_keys, check_parameters, check_shape, show_names
from bastion.serving._strict_json import load_strict_json
from bastion.serving._tensor_data import tensor_from_binary, tensor_from_json
from bastion.serving._tensors import MAX_RANK, ModelSignature, TensorSpec

__all__ = ["OipAnswer", "parse_infer_answer"]

#: Deepest JSON nesting of an answer: document, outputs list, output, data nested as the shape.
MAX_ANSWER_DEPTH = MAX_RANK + 3
#: Longest ``model_name``, ``model_version`` or ``id`` accepted, in characters.
MAX_ANSWER_TEXT = 256
_INVALID = "the upstream server sent an invalid inference answer"


@dataclass(frozen=True)
class OipAnswer:
    """A validated inference answer: its outputs decoded, shaped and typed as declared."""

    model_name: str
    model_version: str | None
    id: str | None
    outputs: dict[str, np.ndarray[Any, Any]] = field(repr=False)


@dataclass(frozen=True)
class _BinaryOutput:
    spec: TensorSpec
    shape: tuple[int, ...]
    size: int


def _split(
    body: bytes, content_type: str | None, header_length: int | None
) -> tuple[bytes, bytes | None]:
    """The JSON part and the binary part (None without the binary extension) of ``body``."""
    if content_type is None:
        raise InputError(f"no content type; expected {JSON_CONTENT_TYPE}")
    media, *parameters = (part.strip() for part in content_type.split(";"))
    media = media.lower()
    if media not in (JSON_CONTENT_TYPE, BINARY_CONTENT_TYPE):
        raise InputError(
            f"content type {content_type[:80]!r}; expected {JSON_CONTENT_TYPE} or "
            f"{BINARY_CONTENT_TYPE}"
        )
    for parameter in parameters:
        key, _, value = parameter.partition("=")
        if key.strip().lower() != "charset" or value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            raise InputError(f"content type {content_type[:80]!r}: only UTF-8 is read")
    if header_length is None:
        if media == BINARY_CONTENT_TYPE:
            raise InputError(f"a {BINARY_CONTENT_TYPE} answer without {HEADER_LENGTH_HEADER}")
        return body, None
    if type(header_length) is not int or not 0 <= header_length <= len(body):
        raise InputError(
            f"{HEADER_LENGTH_HEADER} is not a length within the body ({len(body)} bytes)"
        )
    return body[:header_length], body[header_length:]


def _optional_text(document: Any, key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_ANSWER_TEXT or not value.isprintable():
        raise InputError(f"{key!r} must be printable text of at most {MAX_ANSWER_TEXT} characters")
    return value


def _read_output(
    entry: object,
    signature: ModelSignature,
    max_elements: int,
    max_bytes_element: int,
    decoded: dict[str, np.ndarray[Any, Any]],
    binary: list[_BinaryOutput],
) -> str:
    """Decode one answer output into ``decoded``, or queue it in ``binary``; its name."""
    obj = check_keys(
        entry,
        "answer output",
        {"name", "datatype", "shape", "parameters", "data"},
        {"name", "datatype", "shape"},
    )
    name = obj["name"]
    spec = signature.output(name) if isinstance(name, str) else None
    if spec is None:
        shown = name[:64] if isinstance(name, str) else "a non-string"
        raise InputError(
            f"output {shown!r} is not declared; the model's outputs are "
            f"{show_names(signature.outputs)}"
        )
    what = f"output {spec.name[:64]!r}"
    if spec.name in decoded or any(item.spec.name == spec.name for item in binary):
        raise InputError(f"{what} appears more than once")
    if obj["datatype"] != spec.datatype.value:
        shown = obj["datatype"][:16] if isinstance(obj["datatype"], str) else "a non-string"
        raise InputError(f"{what}: datatype {shown!r}, but the model declares {spec.datatype}")
    shape = check_shape(
        obj["shape"],
        spec,
        max_batch=max_elements,
        max_elements=max_elements,
        what=what,
        empty=True,
    )
    size = check_parameters(obj.get("parameters"), f"{what} parameters").get("binary_data_size")
    if size is None:
        if "data" not in obj:
            raise InputError(f"{what}: neither 'data' nor binary_data_size")
        decoded[spec.name] = tensor_from_json(
            spec.datatype, shape, obj["data"], max_bytes_element=max_bytes_element, what=what
        )
        return spec.name
    if type(size) is not int or size < 0:
        raise InputError(f"{what}: binary_data_size is not a non-negative integer")
    if "data" in obj:
        raise InputError(f"{what}: both 'data' and binary_data_size")
    binary.append(_BinaryOutput(spec, shape, size))
    return spec.name


def _decode_binary(
    pending: list[_BinaryOutput], blob: bytes | None, max_bytes_element: int
) -> dict[str, np.ndarray[Any, Any]]:
    """The binary outputs, cut from ``blob`` in answer order; sizes must add up exactly."""
    if blob is None:
        if pending:
            raise InputError(
                f"output {pending[0].spec.name[:64]!r} has binary_data_size but the answer "
                f"has no {HEADER_LENGTH_HEADER}"
            )
        return {}
    total = sum(item.size for item in pending)
    if total != len(blob):
        raise InputError(
            f"the binary_data_size values add up to {total} bytes but {len(blob)} bytes "
            "follow the JSON part"
        )
    decoded: dict[str, np.ndarray[Any, Any]] = {}
    offset = 0
    for item in pending:
        decoded[item.spec.name] = tensor_from_binary(
            item.spec.datatype,
            item.shape,
            blob[offset : offset + item.size],
            max_bytes_element=max_bytes_element,
            what=f"output {item.spec.name[:64]!r}",
        )
        offset += item.size
    return decoded


def _parse(
    body: bytes,
    content_type: str | None,
    header_length: int | None,
    signature: ModelSignature,
    max_elements: int,
) -> OipAnswer:
    json_part, blob = _split(body, content_type, header_length)
    document = check_keys(
        load_strict_json(json_part, max_depth=MAX_ANSWER_DEPTH),
        "answer",
        {"model_name", "model_version", "id", "parameters", "outputs"},
        {"model_name", "outputs"},
    )
    model_name = _optional_text(document, "model_name")
    if model_name is None:
        raise InputError("'model_name' must be printable text, not null")
    model_version = _optional_text(document, "model_version")
    answer_id = _optional_text(document, "id")
    check_parameters(document.get("parameters"), "answer parameters")
    entries = document["outputs"]
    if not isinstance(entries, list) or not entries:
        raise InputError("'outputs' must be a non-empty list of output tensors")
    if len(entries) > len(signature.outputs):
        raise InputError(f"{len(entries)} outputs, but the model declares {len(signature.outputs)}")
    # A BYTES element cannot be longer than the body that carries it.
    max_bytes_element = max(len(body), 1)
    outputs: dict[str, np.ndarray[Any, Any]] = {}
    pending: list[_BinaryOutput] = []
    names = [
        _read_output(entry, signature, max_elements, max_bytes_element, outputs, pending)
        for entry in entries
    ]
    outputs.update(_decode_binary(pending, blob, max_bytes_element))
    ordered = {name: outputs[name] for name in names}
    return OipAnswer(model_name, model_version, answer_id, ordered)


def parse_infer_answer(
    body: bytes,
    content_type: str | None,
    header_length: int | None,
    signature: ModelSignature,
    *,
    max_elements: int = 10_000_000,
) -> OipAnswer:
    """Parse and validate an upstream server's OIP ``infer`` answer against ``signature``.

    ``header_length`` is the answer's ``Inference-Header-Content-Length`` (None when the
    binary extension is not used). Outputs keep the answer's order. Each output may hold at
    most ``max_elements`` elements. Raises UpstreamError for anything that is not a valid
    answer for this model.
    """
    try:
        return _parse(body, content_type, header_length, signature, max_elements)
    except InputError as exc:
        raise UpstreamError(
            f"{_INVALID}: {exc.message}; check the upstream server's model against the "
            "deployment's signature"
        ) from exc
