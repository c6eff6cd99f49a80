"""Inference answers from an upstream OIP server: decoded exactly, or refused as UpstreamError."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bastion.errors import UpstreamError
from bastion.serving._oip_answer import OipAnswer, parse_infer_answer
from bastion.serving._oip_response import encode_infer_response
from bastion.serving._tensor_data import tensor_to_binary
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec

JSON = "application/json"
BINARY = "application/octet-stream"
CANCER = ModelSignature(
    (TensorSpec("X", Datatype.FP32, (-1, 30)),),
    (
        TensorSpec("label", Datatype.INT64, (-1,)),
        TensorSpec("probabilities", Datatype.FP32, (-1, 2)),
    ),
)
ALL_TYPES = ModelSignature(
    (TensorSpec("x", Datatype.FP32, (-1,)),),
    tuple(TensorSpec(f"out_{d.value}", d, (-1, 2)) for d in Datatype),
)
#: What MLServer 1.7 sends (with the tests' ONNX runtime) for two rows.
MLSERVER_ANSWER = {
    "model_name": "cancer",
    "id": "442dcf0c-a2d6-44e8-90b6-7899d2eb7ff3",
    "parameters": {},
    "outputs": [
        {"name": "label", "shape": [2], "datatype": "INT64", "data": [0, 1]},
        {
            "name": "probabilities",
            "shape": [2, 2],
            "datatype": "FP32",
            "data": [0.75, 0.25, 0.125, 0.875],
            "parameters": {"content_type": "np"},
        },
    ],
}


def answer_of(document: object, signature: ModelSignature = CANCER) -> OipAnswer:
    return parse_infer_answer(json.dumps(document).encode(), JSON, None, signature)


def with_output(index: int, **changes: object) -> dict[str, Any]:
    document = json.loads(json.dumps(MLSERVER_ANSWER))
    document["outputs"][index].update(changes)
    for key, value in changes.items():
        if value is None:
            del document["outputs"][index][key]
    return document


def refused(body: bytes, content_type: str | None = JSON, header_length: int | None = None) -> str:
    with pytest.raises(UpstreamError) as caught:
        parse_infer_answer(body, content_type, header_length, CANCER)
    message = caught.value.message
    assert message.startswith("the upstream server sent an invalid inference answer: ")
    return message


# -- valid answers ---------------------------------------------------------------------------


def test_an_mlserver_answer_is_decoded_as_declared() -> None:
    answer = answer_of(MLSERVER_ANSWER)
    assert answer.model_name == "cancer"
    assert answer.model_version is None
    assert answer.id == "442dcf0c-a2d6-44e8-90b6-7899d2eb7ff3"
    assert list(answer.outputs) == ["label", "probabilities"]
    np.testing.assert_array_equal(answer.outputs["label"], np.array([0, 1], dtype=np.int64))
    probabilities = answer.outputs["probabilities"]
    assert probabilities.dtype == np.float32
    np.testing.assert_array_equal(probabilities, [[0.75, 0.25], [0.125, 0.875]])


def test_a_subset_of_outputs_and_nested_data_are_accepted() -> None:
    document = with_output(1, data=[[0.75, 0.25], [0.125, 0.875]])
    del document["outputs"][0]
    document["model_version"] = "3"
    answer = answer_of(document)
    assert list(answer.outputs) == ["probabilities"]
    assert answer.model_version == "3"


def test_a_binary_answer_is_cut_at_the_header_length() -> None:
    label = tensor_to_binary(Datatype.INT64, np.array([1, 0], dtype=np.int64))
    document = with_output(0, data=None, parameters={"binary_data_size": len(label)})
    header = json.dumps(document).encode()
    answer = parse_infer_answer(header + label, BINARY, len(header), CANCER)
    np.testing.assert_array_equal(answer.outputs["label"], [1, 0])
    assert list(answer.outputs) == ["label", "probabilities"]  # the answer's order


def test_json_with_a_utf8_charset_is_accepted() -> None:
    body = json.dumps(MLSERVER_ANSWER).encode()
    parse_infer_answer(body, "application/json; charset=UTF-8", None, CANCER)


# -- invalid answers -------------------------------------------------------------------------

BAD_DOCUMENTS: list[tuple[object, str]] = [
    ({**MLSERVER_ANSWER, "traceback": "..."}, "unknown field 'traceback'"),
    ({"outputs": MLSERVER_ANSWER["outputs"]}, "missing field"),
    ({**MLSERVER_ANSWER, "model_name": None}, "model_name"),
    ({**MLSERVER_ANSWER, "id": 7}, "'id' must be printable text"),
    ({**MLSERVER_ANSWER, "model_version": "v\n1"}, "model_version"),
    ({**MLSERVER_ANSWER, "outputs": []}, "non-empty list"),
    ({**MLSERVER_ANSWER, "outputs": {}}, "non-empty list"),
    ({**MLSERVER_ANSWER, "parameters": {"a": [1]}}, "answer parameters"),
    ([1, 2], "expected a JSON object"),
    (with_output(0, name="proba"), "output 'proba' is not declared"),
    (with_output(0, name=1), "a non-string"),
    (with_output(1, name="label"), "appears more than once"),
    (with_output(0, datatype="INT32"), "datatype 'INT32', but the model declares INT64"),
    (with_output(1, shape=[2, 3]), "expected shape [-1, 2], got [2, 3]"),
    (with_output(1, shape=[2]), "expected shape"),
    (with_output(0, data=[0]), "needs 2 values, got 1"),
    (with_output(0, data=[0, 1.5]), "not an integer"),
    (with_output(1, data=[0.5, "x", 0, 0]), "not a number"),
    (with_output(0, data=None), "neither 'data' nor binary_data_size"),
    (with_output(0, extra=1), "unknown field 'extra'"),
    (with_output(0, parameters={"binary_data_size": 16}), "both 'data' and binary_data_size"),
    (
        with_output(0, data=None, parameters={"binary_data_size": -1}),
        "not a non-negative integer",
    ),
    (with_output(0, data=None, parameters={"binary_data_size": 16}), "no Inference-Header"),
    (with_output(1, shape=[10**8, 2]), "over the limit of 10000000"),
]


@pytest.mark.parametrize(("document", "message"), BAD_DOCUMENTS)
def test_an_answer_that_breaks_the_protocol_or_signature_is_refused(
    document: object, message: str
) -> None:
    assert message in refused(json.dumps(document).encode())


def test_too_many_outputs_are_refused() -> None:
    document = json.loads(json.dumps(MLSERVER_ANSWER))
    document["outputs"].append(document["outputs"][0])
    assert "3 outputs, but the model declares 2" in refused(json.dumps(document).encode())


@pytest.mark.parametrize(
    ("body", "content_type", "header_length", "message"),
    [
        (b"{}", None, None, "no content type"),
        (b"<html>busy</html>", "text/html", None, "content type 'text/html'"),
        (b"{}", "application/json; charset=latin-1", None, "only UTF-8"),
        (b"{}", BINARY, None, "without Inference-Header-Content-Length"),
        (b"{}", BINARY, 3, "not a length within the body"),
        (b"{}", BINARY, -1, "not a length within the body"),
        (b"\xff{}", JSON, None, "not valid UTF-8"),
        (b'{"model_name": "m", "outputs": [NaN]}', JSON, None, "NaN is not a JSON number"),
        (b"[" * 100 + b"]" * 100, JSON, None, "nests more than"),
        (b"", JSON, None, "malformed JSON"),
    ],
)
def test_a_body_that_is_not_an_answer_is_refused(
    body: bytes, content_type: str | None, header_length: int | None, message: str
) -> None:
    assert message in refused(body, content_type, header_length)


def test_binary_sizes_must_add_up_exactly() -> None:
    label = tensor_to_binary(Datatype.INT64, np.array([1, 0], dtype=np.int64))
    document = with_output(0, data=None, parameters={"binary_data_size": len(label)})
    header = json.dumps(document).encode()
    for blob in (label + b"\x00", label[:-1]):
        message = refused(header + blob, BINARY, len(header))
        assert "add up to 16 bytes" in message or "needs 16 bytes" in message
    plain = json.dumps(MLSERVER_ANSWER).encode()
    assert "add up to 0 bytes but 2 bytes" in refused(plain + b"xx", BINARY, len(plain))


def test_non_finite_outputs_are_refused() -> None:
    blob = np.array([np.nan, 0, 1, 0], dtype="<f4").tobytes()
    document = with_output(1, data=None, parameters={"binary_data_size": len(blob)})
    header = json.dumps(document).encode()
    assert "NaN, infinite" in refused(header + blob, BINARY, len(header))


def test_the_error_does_not_repeat_a_long_upstream_text() -> None:
    message = refused(json.dumps(with_output(0, name="n" * 10_000)).encode())
    assert len(message) < 500


# -- properties ------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["label", "probabilities", "INT64", "FP32", "binary_data_size"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["model_name", "outputs", "name", "shape", "datatype", "data", "parameters", "id"]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.binary(max_size=512),
    content_type=st.sampled_from([JSON, BINARY, None, "text/plain"]),
    header_length=st.none() | st.integers(-2, 600),
)
def test_arbitrary_bytes_raise_only_upstream_errors(
    body: bytes, content_type: str | None, header_length: int | None
) -> None:
    with contextlib.suppress(UpstreamError):
        parse_infer_answer(body, content_type, header_length, ALL_TYPES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=JSON_VALUES, wrap=st.booleans())
def test_arbitrary_json_documents_raise_only_upstream_errors(document: object, wrap: bool) -> None:
    if wrap:
        document = {"model_name": "m", "outputs": [document]}
    with contextlib.suppress(UpstreamError):
        answer_of(document)


def _elements(datatype: Datatype, binary: bool) -> st.SearchStrategy[Any]:
    if datatype is Datatype.BYTES:
        return st.binary(max_size=6) if binary else st.text(max_size=4).map(str.encode)
    if datatype.is_float:
        return st.floats(
            allow_nan=False, allow_infinity=False, width=datatype.numpy_dtype.itemsize * 8
        )
    return hnp.from_dtype(datatype.numpy_dtype)


@st.composite
def output_sets(draw: st.DrawFn) -> tuple[dict[str, np.ndarray[Any, Any]], set[str]]:
    chosen = draw(st.lists(st.sampled_from(list(Datatype)), min_size=1, max_size=4, unique=True))
    rows = draw(st.integers(0, 3))
    outputs: dict[str, np.ndarray[Any, Any]] = {}
    binary: set[str] = set()
    for datatype in chosen:
        name = f"out_{datatype.value}"
        as_binary = draw(st.booleans())
        values = draw(
            st.lists(_elements(datatype, as_binary), min_size=rows * 2, max_size=rows * 2)
        )
        array = np.empty(rows * 2, dtype=datatype.numpy_dtype)
        array[:] = values
        outputs[name] = array.reshape(rows, 2)
        if as_binary:
            binary.add(name)
    return outputs, binary


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=output_sets(), request_id=st.none() | st.text(min_size=1, max_size=8))
def test_encoded_responses_round_trip(
    case: tuple[dict[str, np.ndarray[Any, Any]], set[str]], request_id: str | None
) -> None:
    outputs, binary = case
    if request_id is not None and not request_id.isprintable():
        request_id = None
    body, headers = encode_infer_response(
        "m", "2", request_id, outputs, signature=ALL_TYPES, binary=binary
    )
    length = headers.get("Inference-Header-Content-Length")
    answer = parse_infer_answer(
        body, headers["Content-Type"], None if length is None else int(length), ALL_TYPES
    )
    assert (answer.model_name, answer.model_version, answer.id) == ("m", "2", request_id)
    assert list(answer.outputs) == list(outputs)
    for name, array in outputs.items():
        got = answer.outputs[name]
        assert got.dtype == array.dtype
        assert got.shape == array.shape
        np.testing.assert_array_equal(got, array)


def test_an_empty_output_is_accepted_if_numpy_can_lay_it_out() -> None:
    signature = ModelSignature(CANCER.inputs, (TensorSpec("boxes", Datatype.FP32, (-1, -1)),))
    empty = {**MLSERVER_ANSWER, "outputs": [
        {"name": "boxes", "shape": [0, 4], "datatype": "FP32", "data": []}]}  # fmt: skip
    assert answer_of(empty, signature).outputs["boxes"].shape == (0, 4)
    for shape in ([0, 2**62], [0, 2**70]):
        huge = {**MLSERVER_ANSWER, "outputs": [
            {"name": "boxes", "shape": shape, "datatype": "FP32", "data": []}]}  # fmt: skip
        with pytest.raises(UpstreamError, match="in its non-zero dimensions"):
            answer_of(huge, signature)
