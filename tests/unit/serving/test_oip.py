"""The Open Inference Protocol codec: requests parsed strictly, responses encoded exactly."""

from __future__ import annotations

import contextlib
import json
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import (
    BastionError,
    InputError,
    InternalError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
)
from bastion.serving._oip import (
    InferLimits,
    InferRequest,
    RequestedOutput,
    parse_infer_request,
)
from bastion.serving._oip_response import encode_infer_response
from bastion.serving._tensor_data import tensor_from_binary, tensor_to_binary
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec

JSON = "application/json"
LIMITS = InferLimits()

#: Two rows of sample values per datatype, as a client would write them in JSON.
SAMPLES: dict[Datatype, list[Any]] = {
    Datatype.BOOL: [True, False, True, True],
    Datatype.UINT8: [0, 1, 254, 255],
    Datatype.UINT16: [0, 1, 65534, 65535],
    Datatype.UINT32: [0, 1, 2**32 - 2, 2**32 - 1],
    Datatype.UINT64: [0, 1, 2**64 - 2, 2**64 - 1],
    Datatype.INT8: [-128, -1, 0, 127],
    Datatype.INT16: [-(2**15), -1, 0, 2**15 - 1],
    Datatype.INT32: [-(2**31), -1, 0, 2**31 - 1],
    Datatype.INT64: [-(2**63), -1, 0, 2**63 - 1],
    Datatype.FP16: [-1.5, 0.0, 0.25, 65504.0],
    Datatype.FP32: [-1.5, 0.0, 3, 2.0**100],
    Datatype.FP64: [-1.5, 0.0, 3, 1e300],
    Datatype.BYTES: ["", "a", "héllo", "\u2603"],
}
ALL_TYPES = ModelSignature(
    tuple(TensorSpec(f"in_{d.value}", d, (-1, 2)) for d in Datatype),
    tuple(TensorSpec(f"out_{d.value}", d, (-1, 2)) for d in Datatype),
)
IRIS = ModelSignature(
    (TensorSpec("x", Datatype.FP32, (-1, 4)),),
    (TensorSpec("label", Datatype.INT64, (-1,)), TensorSpec("proba", Datatype.FP32, (-1, 3))),
)


def expected_array(datatype: Datatype, values: list[Any]) -> np.ndarray[Any, Any]:
    if datatype is Datatype.BYTES:
        array = np.empty(len(values), dtype=object)
        array[:] = [value.encode("utf-8") for value in values]
        return array.reshape(2, 2)
    return np.array(values, dtype=datatype.numpy_dtype).reshape(2, 2)


def iris_input(**overrides: object) -> dict[str, object]:
    entry: dict[str, object] = {
        "name": "x",
        "shape": [2, 4],
        "datatype": "FP32",
        "data": [5.1, 3.5, 1.4, 0.2, 6.2, 2.9, 4.3, 1.3],
    }
    entry.update(overrides)
    return entry


def parse(document: object, signature: ModelSignature = IRIS, **kwargs: Any) -> InferRequest:
    body = json.dumps(document).encode()
    return parse_infer_request(body, JSON, {}, signature, kwargs.pop("limits", LIMITS), **kwargs)


def binary_body(header: object, *blobs: bytes) -> tuple[bytes, dict[str, str]]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs), {"inference-header-content-length": str(len(head))}


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize("nested", [False, True])
def test_json_round_trip_for_every_datatype(nested: bool) -> None:
    inputs = [
        {
            "name": f"in_{d.value}",
            "shape": [2, 2],
            "datatype": d.value,
            "data": [values[:2], values[2:]] if nested else values,
        }
        for d, values in SAMPLES.items()
    ]
    request = parse({"inputs": inputs}, ALL_TYPES)
    for datatype, values in SAMPLES.items():
        got = request.inputs[f"in_{datatype.value}"]
        np.testing.assert_array_equal(got, expected_array(datatype, values))
        assert got.dtype == datatype.numpy_dtype
    outputs = {f"out_{d.value}": request.inputs[f"in_{d.value}"] for d in Datatype}
    body, headers = encode_infer_response("m", "1", None, outputs, signature=ALL_TYPES)
    assert headers == {"Content-Type": "application/json"}
    rendered = {entry["name"]: entry for entry in json.loads(body)["outputs"]}
    for datatype, values in SAMPLES.items():
        entry = rendered[f"out_{datatype.value}"]
        assert entry["datatype"] == datatype.value
        assert entry["shape"] == [2, 2]
        assert entry["data"] == values


def test_binary_round_trip_for_every_datatype() -> None:
    arrays = {d: expected_array(d, values) for d, values in SAMPLES.items()}
    blobs = [tensor_to_binary(d, arrays[d]) for d in Datatype]
    inputs = [
        {
            "name": f"in_{d.value}",
            "shape": [2, 2],
            "datatype": d.value,
            "parameters": {"binary_data_size": len(blob)},
        }
        for d, blob in zip(Datatype, blobs, strict=True)
    ]
    body, headers = binary_body({"inputs": inputs}, *blobs)
    request = parse_infer_request(body, "application/octet-stream", headers, ALL_TYPES, LIMITS)
    for datatype, array in arrays.items():
        np.testing.assert_array_equal(request.inputs[f"in_{datatype.value}"], array)
    outputs = {f"out_{d.value}": arrays[d] for d in Datatype}
    body, headers = encode_infer_response(
        "m", None, "7", outputs, signature=ALL_TYPES, binary=set(outputs)
    )
    assert headers["Content-Type"] == "application/octet-stream"
    split = int(headers["Inference-Header-Content-Length"])
    document, rest = json.loads(body[:split]), body[split:]
    assert document["id"] == "7"
    assert "model_version" not in document
    for entry in document["outputs"]:
        datatype = Datatype(entry["datatype"])
        size = entry["parameters"]["binary_data_size"]
        decoded = tensor_from_binary(
            datatype, entry["shape"], rest[:size], max_bytes_element=100, what="out"
        )
        np.testing.assert_array_equal(decoded, arrays[datatype])
        rest = rest[size:]
    assert rest == b""


def test_binary_layout_is_little_endian_with_length_prefixed_bytes() -> None:
    assert tensor_to_binary(Datatype.UINT16, np.array([1, 258], dtype="<u2")) == b"\x01\x00\x02\x01"
    assert tensor_to_binary(Datatype.BOOL, np.array([True, False])) == b"\x01\x00"
    strings = np.array([b"ab", b""], dtype=object)
    assert tensor_to_binary(Datatype.BYTES, strings) == b"\x02\x00\x00\x00ab\x00\x00\x00\x00"


def test_the_exact_response_json_for_a_known_case() -> None:
    outputs = {
        "label": np.array([0, 2], dtype=np.int64),
        "proba": np.array([[0.5, 0.25, 0.25], [0.0, 0.0, 1.0]]),
    }
    body, headers = encode_infer_response("iris", "3", "req-1", outputs, signature=IRIS)
    assert headers == {"Content-Type": "application/json"}
    assert json.loads(body) == {
        "model_name": "iris",
        "model_version": "3",
        "id": "req-1",
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 2]},
            {
                "name": "proba",
                "datatype": "FP32",
                "shape": [2, 3],
                "data": [0.5, 0.25, 0.25, 0.0, 0.0, 1.0],
            },
        ],
    }


@pytest.mark.parametrize(
    ("outputs", "message"),
    [
        ({"proba": np.array([[np.nan, 0.0, 0.0]])}, "NaN"),
        ({"proba": np.array([[np.inf, 0.0, 0.0]])}, "NaN"),
        ({"proba": np.array([[1e39, 0.0, 0.0]])}, "out of range"),
        ({"proba": np.zeros((1, 4))}, "shape"),
        ({"label": np.array([0.5])}, "declares INT64"),
        ({"extra": np.zeros(1)}, "not declared"),
    ],
)
def test_responses_that_do_not_fit_the_model_are_internal_errors(
    outputs: dict[str, object], message: str
) -> None:
    with pytest.raises(InternalError, match=message):
        encode_infer_response("iris", None, None, outputs, signature=IRIS)


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(
        st.floats(width=32) | st.sampled_from([0.0, -0.0, 1e39, -1e308, 7e4, 2**62]),
        min_size=1,
        max_size=4,
    ),
    dtype=st.sampled_from(["float16", "float32", "float64", ">f8", "int32"]),
    declared=st.sampled_from([Datatype.FP16, Datatype.FP32, Datatype.FP64, Datatype.INT64]),
)
def test_small_outputs_encode_exactly_as_large_ones(
    values: list[float], dtype: str, declared: Datatype
) -> None:
    """Up to 64 values are checked for NaN in Python, more by numpy: both must agree."""
    signature = ModelSignature(IRIS.inputs, (TensorSpec("o", declared, (-1, -1)),))
    with np.errstate(all="ignore"):
        small = np.array([values]).astype(dtype)

    def encoded(array: np.ndarray[Any, Any]) -> object:
        try:
            body, _ = encode_infer_response("m", None, None, {"o": array}, signature=signature)
        except InternalError as exc:
            return exc.message
        return [repr(value) for value in json.loads(body)["outputs"][0]["data"]][: len(values)]

    assert encoded(small) == encoded(np.tile(small, (40, 1)))


# -- the KServe / Triton documented request shapes -------------------------------------------

DOC_MODEL = ModelSignature(
    (TensorSpec("input0", Datatype.UINT32, (2, 2)), TensorSpec("input1", Datatype.BOOL, (3,))),
    (TensorSpec("output0", Datatype.FP32, (3, 2)), TensorSpec("output1", Datatype.BYTES, (1,))),
)


def test_the_documented_json_request_parses() -> None:
    body = b"""{
      "id" : "42",
      "inputs" : [
        {"name" : "input0", "shape" : [ 2, 2 ], "datatype" : "UINT32", "data" : [ 1, 2, 3, 4 ]},
        {"name" : "input1", "shape" : [ 3 ], "datatype" : "BOOL", "data" : [ true, false, true ]}
      ],
      "outputs" : [ {"name" : "output0"} ]
    }"""
    request = parse_infer_request(body, "application/json", {}, DOC_MODEL, LIMITS)
    assert request.id == "42"
    np.testing.assert_array_equal(request.inputs["input0"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(request.inputs["input1"], [True, False, True])
    assert request.requested_outputs == (RequestedOutput("output0", binary_data=False),)


def test_the_documented_binary_request_parses() -> None:
    header = {
        "model_name": "mymodel",
        "inputs": [
            {"name": "input0", "shape": [2, 2], "datatype": "UINT32",
             "parameters": {"binary_data_size": 16}},
            {"name": "input1", "shape": [3], "datatype": "BOOL",
             "parameters": {"binary_data_size": 3}},
        ],
        "outputs": [{"name": "output0", "parameters": {"binary_data": True}},
                    {"name": "output1"}],
    }  # fmt: skip
    body, headers = binary_body(header, struct.pack("<4I", 1, 2, 3, 4), b"\x01\x00\x01")
    headers["Inference-Header-Content-Length"] = headers.pop("inference-header-content-length")
    request = parse_infer_request(body, "application/octet-stream", headers, DOC_MODEL, LIMITS)
    np.testing.assert_array_equal(request.inputs["input0"], [[1, 2], [3, 4]])
    np.testing.assert_array_equal(request.inputs["input1"], [True, False, True])
    assert request.requested_outputs == (
        RequestedOutput("output0", binary_data=True),
        RequestedOutput("output1", binary_data=False),
    )


def test_binary_data_output_applies_to_every_output_unless_overridden() -> None:
    request = parse({"inputs": [iris_input()], "parameters": {"binary_data_output": True}})
    assert request.parameters == {"binary_data_output": True}
    assert [o.binary_data for o in request.requested_outputs] == [True, True]
    request = parse(
        {
            "inputs": [iris_input()],
            "parameters": {"binary_data_output": True},
            "outputs": [{"name": "proba", "parameters": {"binary_data": False}}],
        }
    )
    assert request.requested_outputs == (RequestedOutput("proba", binary_data=False),)


def test_charset_utf8_is_accepted() -> None:
    body = json.dumps({"inputs": [iris_input()]}).encode()
    request = parse_infer_request(body, "Application/JSON; charset=UTF-8", {}, IRIS, LIMITS)
    assert request.inputs["x"].shape == (2, 4)


def test_value_ranges_are_inclusive_and_name_the_element() -> None:
    ranges = {"x": (0.2, 6.2)}
    assert parse({"inputs": [iris_input()]}, value_ranges=ranges).inputs["x"].shape == (2, 4)
    with pytest.raises(InputError, match=r"input 'x': element 3 is outside .*\[0.5, 6.2\]"):
        parse({"inputs": [iris_input()]}, value_ranges={"x": (0.5, 6.2)})


# -- every class of bad input gets its specific error ----------------------------------------


def refused(body: bytes, content_type: str | None = JSON, **headers: str) -> BastionError:
    with pytest.raises(BastionError) as caught:
        parse_infer_request(body, content_type, headers, IRIS, LIMITS)
    return caught.value


def doc(*inputs: object, **top: object) -> bytes:
    return json.dumps({"inputs": list(inputs), **top}).encode()


def test_an_oversized_body_is_refused_before_anything_else() -> None:
    error = refused(b"x" * (LIMITS.max_body_bytes + 1), "text/plain")
    assert isinstance(error, PayloadTooLargeError)
    assert "limit is 4194304 bytes" in error.message


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/json; charset=latin-1", "application/xml",
     "application/octet-stream; x=1", "multipart/form-data", ""],
)  # fmt: skip
def test_content_types_other_than_json_or_binary_are_415(content_type: str) -> None:
    error = refused(doc(iris_input()), content_type)
    assert isinstance(error, UnsupportedMediaTypeError)
    assert error.code == "unsupported_media_type"


def test_no_content_type_reads_json_or_with_the_binary_header_binary() -> None:
    """Triton's clients declare no content type; the binary extension's header tells which."""
    as_json = parse_infer_request(doc(iris_input()), None, {}, IRIS, LIMITS)
    assert as_json.inputs["x"].shape == (2, 4)
    rows = np.arange(8, dtype="<f4").reshape(2, 4)
    sized = {"name": "x", "shape": [2, 4], "datatype": "FP32",
             "parameters": {"binary_data_size": rows.nbytes}}  # fmt: skip
    body, headers = binary_body({"inputs": [sized]}, rows.tobytes())
    as_binary = parse_infer_request(body, None, headers, IRIS, LIMITS)
    np.testing.assert_array_equal(as_binary.inputs["x"], rows)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"inputs": [', "malformed JSON"),
        (b"\xff\xfe{}", "not valid UTF-8"),
        (b'{"inputs": [], "inputs": []}', "appears twice"),
        (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
         b'"data": [NaN, 1, 2, 3]}]}', "NaN is not a JSON number"),
        (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
         b'"data": [-Infinity, 1, 2, 3]}]}', "Infinity is not a JSON number"),
        (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", '
         b'"data": [1e999, 1, 2, 3]}]}', "overflows"),
        (b'{"inputs": [1' + b"0" * 5000 + b"]}", "cannot be read"),
        (b"[" * 100_000 + b"]" * 100_000, "nests more than 8 levels"),
        (b"[" * (1024 * 1024), "nests more than 8 levels"),
        (b'"' + b"\\\"" * 1000, "erminated"),
        (b"[]", "expected a JSON object"),
        (b'{"inputs": [], "extra": 1}', "unknown field 'extra'"),
        (b'{"outputs": []}', "missing field(s) inputs"),
    ],
)  # fmt: skip
def test_malformed_json_is_refused(body: bytes, message: str) -> None:
    error = refused(body)
    assert type(error) is InputError
    assert message in error.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (doc(iris_input(datatype="FP64")), "input 'x': expected datatype FP32, got 'FP64'"),
        (doc(iris_input(shape=[2, 3])), "input 'x': expected shape [-1, 4], got [2, 3]"),
        (doc(iris_input(shape=[8])), "input 'x': expected shape [-1, 4], got [8]"),
        (doc(iris_input(shape=[2, -4])), "non-negative integers"),
        (doc(iris_input(shape=[2.0, 4])), "non-negative integers"),
        (doc(iris_input(data=[1.0] * 7)), "needs 8 values, got 7"),
        (doc(iris_input(data=[[1.0] * 4, [1.0] * 3])), "does not match shape"),
        (doc(iris_input(data=[1.0] * 7 + ["8"])), "element 7 is not a number"),
        (doc(iris_input(data=[1.0] * 7 + [True])), "element 7 is not a number"),
        (doc(iris_input(data="1,2,3")), "'data' must be a list"),
        (doc(iris_input(data=[1.0] * 7 + [1e39])), "out of range for FP32"),
        (doc(iris_input(), iris_input()), "input 'x' is given more than once"),
        (doc(iris_input(), iris_input(name="y")), "unknown input 'y'"),
        (doc(), "missing input(s) 'x'"),
        (doc(iris_input(shape=[257, 4], data=[0.0] * 1028)), "batch size 257 is over"),
        (doc(iris_input(parameters={"shared_memory_region": "r"})), "shared memory"),
        (doc({"name": "x", "shape": [2, 4], "datatype": "FP32",
              "parameters": {"binary_data_size": 32}}), "no binary part"),
        (doc(iris_input(parameters={"binary_data_size": 32})), "not both"),
        (doc(iris_input(parameters={"binary_data_size": -1})), "non-negative integer"),
        (doc(iris_input(parameters={"p": [1]})), "string, number or boolean"),
        (doc(iris_input(), id=5), "'id' must be printable text"),
        (doc(iris_input(), outputs=[{"name": "nope"}]), "unknown output 'nope'"),
        (doc(iris_input(), outputs=[{"name": "label"}] * 2), "requested more than once"),
        (doc(iris_input(), outputs=[{"name": "label", "parameters": {"binary_data": 1}}]),
         "binary_data must be true or false"),
        (doc(iris_input(), outputs=[{"name": "label", "parameters": {"classification": 2}}]),
         "classification"),
        (doc(*[iris_input()] * 17), "17 inputs; the limit is 16"),
        (doc(iris_input(shape=[0, 4], data=[])), "input 'x': shape [0, 4] holds no elements"),
        # Outputs are checked before any input is decoded.
        (doc(iris_input(shape=[2, 3]), outputs=[{"name": "nope"}]), "unknown output 'nope'"),
    ],
)  # fmt: skip
def test_requests_that_do_not_fit_the_signature_are_refused(body: bytes, message: str) -> None:
    error = refused(body)
    assert type(error) is InputError
    assert message in error.message


def test_integer_and_bool_elements_are_checked_by_type_and_range() -> None:
    signature = ModelSignature(
        (TensorSpec("i", Datatype.INT8, (2,)), TensorSpec("b", Datatype.BOOL, (1,))),
        (TensorSpec("o", Datatype.INT8, (1,)),),
    )
    good_b = {"name": "b", "shape": [1], "datatype": "BOOL", "data": [True]}
    for data, message in [([1, 128], r"'i': element 1 is not an integer in \[-128, 127\]"),
                          ([1, 2.0], "element 1 is not an integer"),
                          ([False, 2], "element 0 is not an integer")]:  # fmt: skip
        with pytest.raises(InputError, match=message):
            parse({"inputs": [{"name": "i", "shape": [2], "datatype": "INT8", "data": data},
                              good_b]}, signature)  # fmt: skip
    with pytest.raises(InputError, match="element 0 is not a boolean"):
        parse({"inputs": [{"name": "i", "shape": [2], "datatype": "INT8", "data": [1, 2]},
                          {**good_b, "data": [1]}]}, signature)  # fmt: skip


def test_an_empty_tensor_is_refused_whatever_its_other_dimensions() -> None:
    # numpy cannot lay out [0, 2**62] of FP32: without the check it raised a bare ValueError.
    signature = ModelSignature(
        (TensorSpec("x", Datatype.FP32, (-1, -1)),), (TensorSpec("o", Datatype.FP32, (-1,)),)
    )
    for shape in ([0, 30], [3, 0], [0, 2**62], [0, 2**70]):
        with pytest.raises(InputError, match="holds no elements"):
            parse({"inputs": [{"name": "x", "shape": shape, "datatype": "FP32", "data": []}]},
                  signature)  # fmt: skip
        header = {"inputs": [{"name": "x", "shape": shape, "datatype": "FP32",
                              "parameters": {"binary_data_size": 0}}]}  # fmt: skip
        body, headers = binary_body(header, b"")
        with pytest.raises(InputError, match="holds no elements"):
            parse_infer_request(body, "application/octet-stream", headers, signature, LIMITS)


def test_too_many_elements_are_refused_before_reading_data() -> None:
    limits = InferLimits(max_elements=100)
    with pytest.raises(InputError, match="400 elements is over the limit of 100"):
        parse({"inputs": [iris_input(shape=[100, 4], data=[])]}, limits=limits)


def test_bytes_elements_over_the_size_limit_are_refused() -> None:
    signature = ModelSignature(
        (TensorSpec("s", Datatype.BYTES, (1,)),), (TensorSpec("o", Datatype.FP32, (1,)),)
    )
    entry = {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["x" * 11]}
    with pytest.raises(InputError, match="element 0 is 11 bytes; the limit is 10"):
        parse({"inputs": [entry]}, signature, limits=InferLimits(max_bytes_element=10))
    blob = struct.pack("<I", 11) + b"x" * 11
    body, headers = binary_body(
        {"inputs": [{**entry, "data": None} | {"parameters": {"binary_data_size": len(blob)}}]},
        blob,
    )
    body = body.replace(b', "data": null', b"")
    headers["inference-header-content-length"] = str(len(body) - len(blob))
    with pytest.raises(InputError, match="element 0 is 11 bytes; the limit is 10"):
        parse_infer_request(body, JSON, headers, signature, InferLimits(max_bytes_element=10))


def binary_iris(blob: bytes, size: int | None = None) -> tuple[bytes, dict[str, str]]:
    parameters = {"binary_data_size": len(blob) if size is None else size}
    header = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                          "parameters": parameters}]}  # fmt: skip
    return binary_body(header, blob)


@pytest.mark.parametrize(
    ("blob", "size", "message"),
    [
        (np.array([1, 2, np.inf, 4], "<f4").tobytes(), None, "element 2 is NaN, infinite"),
        (np.array([1, 2, 3, np.nan], "<f4").tobytes(), None, "element 3 is NaN, infinite"),
        (np.zeros(4, "<f4").tobytes(), 12, "add up to 12 bytes but 16 bytes follow"),
        (np.zeros(3, "<f4").tobytes(), None, "needs 16 bytes of binary data, got 12"),
        (np.zeros(4, "<f4").tobytes()[:-1], 16, "add up to 16 bytes but 15 bytes follow"),
    ],
)
def test_bad_binary_data_is_refused(blob: bytes, size: int | None, message: str) -> None:
    body, headers = binary_iris(blob, size)
    error = refused(body, "application/octet-stream", **headers)
    assert type(error) is InputError
    assert message in error.message


def test_truncated_or_padded_binary_bytes_elements_are_refused() -> None:
    signature = ModelSignature(
        (TensorSpec("s", Datatype.BYTES, (2,)),), (TensorSpec("o", Datatype.FP32, (1,)),)
    )
    for blob, message in [
        (struct.pack("<I", 1) + b"a", "ends before element 1's length"),
        (struct.pack("<I", 1) + b"a" + struct.pack("<I", 5) + b"abc", "ends inside element 1"),
        (struct.pack("<I", 0) * 3, "follow the last of 2 elements"),
    ]:
        header = {"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES",
                              "parameters": {"binary_data_size": len(blob)}}]}  # fmt: skip
        body, headers = binary_body(header, blob)
        with pytest.raises(InputError, match=message):
            parse_infer_request(body, "application/octet-stream", headers, signature, LIMITS)


def test_binary_header_length_must_be_present_and_sane() -> None:
    body, _headers = binary_iris(np.zeros(4, "<f4").tobytes())
    assert (
        "needs the Inference-Header-Content-Length"
        in refused(body, "application/octet-stream").message
    )
    for bad in ["-1", "abc", str(len(body) + 1), "1e3"]:
        error = refused(
            body, "application/octet-stream", **{"Inference-Header-Content-Length": bad}
        )
        assert "must be a whole number" in error.message


def test_messages_never_echo_large_data() -> None:
    error = refused(doc(iris_input(name="n" * 10_000)))
    assert len(error.message) < 400


# -- properties: nothing but Bastion errors, whatever the body -------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.sampled_from(["in_FP32", "in_BYTES", "FP32", "BYTES", "out_BOOL"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                ["inputs", "name", "shape", "datatype", "data", "parameters", "outputs", "id", "x"]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=512), binary=st.booleans(), split=st.integers(0, 600))
def test_arbitrary_bytes_raise_only_bastion_errors(body: bytes, binary: bool, split: int) -> None:
    headers = {"Inference-Header-Content-Length": str(split)} if binary else {}
    with contextlib.suppress(BastionError):
        parse_infer_request(body, JSON, headers, ALL_TYPES, LIMITS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=JSON_VALUES)
def test_arbitrary_json_documents_raise_only_bastion_errors(document: object) -> None:
    with contextlib.suppress(BastionError):
        parse({"inputs": [document]} if isinstance(document, dict) else document, ALL_TYPES)


@settings(max_examples=100, deadline=None)
@given(
    values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=4,
                    max_size=4),
    nested=st.booleans(),
)  # fmt: skip
def test_every_finite_fp32_request_round_trips(values: list[float], nested: bool) -> None:
    data: list[Any] = [values] if nested else values
    request = parse({"inputs": [iris_input(shape=[1, 4], data=data)]})
    np.testing.assert_array_equal(request.inputs["x"], np.array([values], dtype=np.float32))
