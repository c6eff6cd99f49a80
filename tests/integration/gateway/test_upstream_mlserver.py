"""Upstream mode against a real MLServer 1.7 serving the breast-cancer logistic regression.

MLServer runs from ``.venv-mlserver`` with the tests' ONNX runtime; the client sends what
the gateway would send (a body already validated by ``parse_infer_request``) and reads the
answer with ``parse_infer_answer``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import onnxruntime
import pytest

from bastion.errors import InputError, UpstreamError
from bastion.serving._oip import InferLimits, parse_infer_request
from bastion.serving._oip_answer import OipAnswer, parse_infer_answer
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec
from bastion.serving._upstream import UpstreamClient
from tests.support.mlserver import running_mlserver
from tests.support.models import breast_cancer, onnx_bytes

pytestmark = pytest.mark.slow

T = TypeVar("T")
JSON = "application/json"
SIGNATURE = ModelSignature(
    (TensorSpec("X", Datatype.FP32, (-1, 30)),),
    (
        TensorSpec("label", Datatype.INT64, (-1,)),
        TensorSpec("probabilities", Datatype.FP32, (-1, 2)),
    ),
)


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


def request_body(rows: np.ndarray[Any, Any], *, request_id: str = "req-1") -> bytes:
    document = {
        "id": request_id,
        "inputs": [
            {
                "name": "X",
                "datatype": "FP32",
                "shape": list(rows.shape),
                "data": rows.reshape(-1).tolist(),
            }
        ],
    }
    return json.dumps(document).encode()


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("upstream-model") / "cancer.onnx"
    path.write_bytes(onnx_bytes("logistic"))
    return path


@pytest.fixture(scope="module")
def upstream(onnx_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_mlserver(
        {"cancer": onnx_file}, workdir=tmp_path_factory.mktemp("mlserver")
    ) as url:
        yield url


def test_readiness_and_metadata_come_from_mlserver(upstream: str) -> None:
    async def scenario() -> tuple[bool, bool, bool, ModelSignature]:
        async with UpstreamClient(upstream) as client:
            return (
                await client.ready(),
                await client.model_ready("cancer"),
                await client.model_ready("absent"),
                await client.model_metadata("cancer"),
            )

    assert run(scenario()) == (True, True, False, SIGNATURE)


def test_mlserver_answers_as_onnxruntime_does_in_process(upstream: str, onnx_file: Path) -> None:
    rows = breast_cancer()[0][:7]
    body = request_body(rows, request_id="req-7")
    parse_infer_request(body, JSON, {}, SIGNATURE, InferLimits())  # what the gateway checks

    async def scenario() -> OipAnswer:
        async with UpstreamClient(upstream) as client:
            signature = await client.model_metadata("cancer")
            answer = await client.infer("cancer", body, content_type=JSON, request_id="req-7")
            assert answer.status == 200
            return parse_infer_answer(
                answer.body, answer.content_type, answer.header_length, signature
            )

    answer = run(scenario())
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(["label", "probabilities"], {"X": rows})
    assert (answer.model_name, answer.id) == ("cancer", "req-7")
    assert list(answer.outputs) == ["label", "probabilities"]
    np.testing.assert_array_equal(answer.outputs["label"], label)
    np.testing.assert_allclose(answer.outputs["probabilities"], probabilities, rtol=1e-6)
    assert answer.outputs["probabilities"].dtype == np.float32
    assert 0 < probabilities.min() < probabilities.max() < 1  # not a degenerate model


def test_requests_mlserver_refuses(upstream: str) -> None:
    """ONNX Runtime refusing a shape is a 500 ("Internal Server Error", the traceback only in
    MLServer's log): UpstreamError. The runtime's own check is MLServer's 400 with an
    ``error`` text: InputError with that text. An unknown model is a 404: UpstreamError."""
    rows = breast_cancer()[0][:2]
    wrong_width = request_body(rows[:, :29])
    miscounted = json.dumps(
        {"inputs": [{"name": "X", "datatype": "FP32", "shape": [2, 30], "data": [0.5] * 59}]}
    ).encode()

    async def refusal(model: str, body: bytes) -> Exception:
        async with UpstreamClient(upstream) as client:
            try:
                await client.infer(model, body, content_type=JSON)
            except (InputError, UpstreamError) as exc:
                return exc
        raise AssertionError("MLServer accepted the request")

    error = run(refusal("cancer", wrong_width))
    assert type(error) is UpstreamError
    assert "failed with status 500 for model 'cancer'" in str(error)
    assert "ONNXRuntimeError" not in str(error)
    error = run(refusal("cancer", miscounted))
    assert type(error) is InputError
    assert "(status 400): input X: shape [2, 30] does not match its 59 values" in str(error)
    error = run(refusal("absent", request_body(rows)))
    assert type(error) is UpstreamError
    assert "status 404: it has no such model" in str(error)


def test_a_stopped_upstream_is_an_upstream_error(onnx_file: Path, tmp_path: Path) -> None:
    body = request_body(breast_cancer()[0][:1])

    async def scenario(server: ExitStack, url: str) -> tuple[bool, str]:
        async with UpstreamClient(url, timeout=10) as client:
            await client.infer("cancer", body, content_type=JSON)
            server.close()  # MLServer stops; the pooled keep-alive connection goes with it
            ready = await client.ready()
            with pytest.raises(UpstreamError) as caught:
                await client.infer("cancer", body, content_type=JSON)
            return ready, caught.value.message

    with ExitStack() as server:
        url = server.enter_context(running_mlserver({"cancer": onnx_file}, workdir=tmp_path))
        ready, message = run(scenario(server, url))
    assert not ready
    assert f"upstream server at {url}" in message
