"""Model workers as real processes: serving, pipelining, crashes, hangs and restarts."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import numpy as np
import onnxruntime
import pandas as pd
import pytest
import skops.io
import uvloop
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

from bastion.errors import InputError, ModelUnavailableError, PayloadTooLargeError, UsageError
from bastion.serving._runtimes import RuntimeKind
from bastion.serving._tensors import Datatype, TensorSpec
from bastion.serving._worker import Worker, WorkerLimits
from bastion.serving._worker_supervisor import WorkerSupervisor

T = TypeVar("T")
LIMITS = WorkerLimits(memory_bytes=2 << 30, infer_seconds=10.0, start_seconds=60.0)
OUTPUTS = ("label", "probabilities")


@functools.cache
def cancer() -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    x, y = load_breast_cancer(return_X_y=True)
    return ((x - x.mean(axis=0)) / x.std(axis=0)).astype(np.float32), y


@functools.cache
def onnx_model(kind: str) -> bytes:
    x, y = cancer()
    model: Any = (
        LogisticRegression(max_iter=2000)
        if kind == "logistic"
        else RandomForestClassifier(n_estimators=8, max_depth=6, random_state=0)
    )
    model.fit(x, y)
    data: bytes = to_onnx(model, x[:1], options={"zipmap": False}).SerializeToString()
    return data


@functools.cache
def skops_classifier() -> tuple[LogisticRegression, pd.DataFrame, bytes]:
    """Fitted on a DataFrame: given plain arrays, scikit-learn warns (on the worker's stderr)."""
    x, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(x, columns=["a", "b", "c", "d"])
    model = LogisticRegression(max_iter=500).fit(frame, y)
    return model, frame, skops.io.dumps(model)


def expected(kind: str, x: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
    session = onnxruntime.InferenceSession(onnx_model(kind), providers=["CPUExecutionProvider"])
    label, probabilities = session.run(list(OUTPUTS), {"X": x})
    return {"label": label, "probabilities": probabilities}


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    yield running
    running.close()


def run(loop: asyncio.AbstractEventLoop, work: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    return loop.run_until_complete(asyncio.wait_for(work, timeout))


def started(
    loop: asyncio.AbstractEventLoop, runtime: RuntimeKind, model: bytes
) -> Iterator[Worker]:
    worker = Worker(label=f"test-{runtime}", runtime=runtime, model=model, limits=LIMITS)
    run(loop, worker.start())
    yield worker
    run(loop, worker.stop())


@pytest.fixture(scope="module")
def logistic(loop: asyncio.AbstractEventLoop) -> Iterator[Worker]:
    yield from started(loop, RuntimeKind.ONNX, onnx_model("logistic"))


@pytest.fixture(scope="module")
def forest(loop: asyncio.AbstractEventLoop) -> Iterator[Worker]:
    yield from started(loop, RuntimeKind.ONNX, onnx_model("forest"))


def loader(runtime: RuntimeKind, model: bytes, calls: list[str]) -> Callable[[], Awaitable[Any]]:
    async def load() -> tuple[RuntimeKind, bytes]:
        calls.append("load")
        return runtime, model

    return load


async def until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.02)


def test_onnx_models_answer_as_they_do_in_process(
    loop: asyncio.AbstractEventLoop, logistic: Worker, forest: Worker
) -> None:
    x, _ = cancer()
    for worker, kind in ((logistic, "logistic"), (forest, "forest")):
        got = run(loop, worker.infer({"X": x[:16]}, OUTPUTS))
        want = expected(kind, x[:16])
        assert set(got) == set(OUTPUTS)
        assert np.array_equal(got["label"], want["label"])
        assert np.allclose(got["probabilities"], want["probabilities"], rtol=0, atol=1e-6)
    only = run(loop, logistic.infer({"X": x[:2]}, ["probabilities"]))
    assert list(only) == ["probabilities"]


def test_a_worker_reports_its_signature_and_protections(
    loop: asyncio.AbstractEventLoop, logistic: Worker
) -> None:
    assert logistic.alive
    assert {"memory-limit", "no-file-writes", "audit-hook", "no-new-privileges"} <= set(
        logistic.protections
    )
    assert any(name.endswith("network-namespace") for name in logistic.protections)


def test_a_worker_has_a_minimal_environment_and_an_empty_private_directory(
    loop: asyncio.AbstractEventLoop,
) -> None:
    os.environ["BASTION_TEST_SECRET"] = "must-not-leak"
    worker = Worker(
        label="env", runtime=RuntimeKind.ONNX, model=onnx_model("logistic"), limits=LIMITS
    )
    try:
        run(loop, worker.start())
        with open(f"/proc/{worker.pid}/environ", "rb") as environ:
            variables = dict(item.split(b"=", 1) for item in environ.read().split(b"\0") if item)
        assert variables == {
            b"PATH": b"/usr/bin:/bin",
            b"LANG": b"C.UTF-8",
            b"OMP_NUM_THREADS": b"1",
        }
        cwd = os.readlink(f"/proc/{worker.pid}/cwd")
        assert cwd.startswith(tempfile.gettempdir() + "/bastion-worker-")
        assert os.listdir(cwd) == []
        assert os.stat(cwd).st_mode & 0o777 == 0o700
        assert os.readlink(f"/proc/{worker.pid}/ns/net") != os.readlink("/proc/self/ns/net")
    finally:
        del os.environ["BASTION_TEST_SECRET"]
        run(loop, worker.stop())
    assert not os.path.exists(cwd)
    assert not worker.alive


def test_a_skops_classifier_answers_as_scikit_learn_and_its_stderr_is_logged(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    model, frame, data = skops_classifier()
    caplog.set_level(logging.WARNING, logger="bastion.serving._worker")
    for worker in started(loop, RuntimeKind.SKOPS, data):
        assert worker.signature is not None
        assert worker.signature.inputs == (TensorSpec("input", Datatype.FP64, (-1, 4)),)
        got = run(loop, worker.infer({"input": frame.to_numpy()}, OUTPUTS))
        assert np.array_equal(got["label"], model.predict(frame))
        assert np.array_equal(got["probabilities"], model.predict_proba(frame))

        async def logged() -> None:
            await until(lambda: "valid feature names" in caplog.text)

        run(loop, logged(), timeout=10)  # scikit-learn's warning, from the worker's stderr
    assert "model worker test-skops" in caplog.text


def test_concurrent_requests_in_flight_are_all_answered_in_their_order(
    loop: asyncio.AbstractEventLoop, forest: Worker
) -> None:
    x, _ = cancer()
    want = expected("forest", x[:200])

    async def many() -> list[dict[str, np.ndarray[Any, Any]]]:
        return await asyncio.gather(
            *(forest.infer({"X": x[i : i + 1]}, OUTPUTS) for i in range(200))
        )

    for index, got in enumerate(run(loop, many())):
        assert got["label"][0] == want["label"][index]
        assert np.allclose(got["probabilities"][0], want["probabilities"][index], atol=1e-6)


def test_calls_asked_alone_or_among_others_are_answered_in_their_order(
    loop: asyncio.AbstractEventLoop, forest: Worker
) -> None:
    """A call asked alone is written at once, unless others are in flight: then it waits
    for the shared write like them, and every answer still goes to its own caller."""
    x, _ = cancer()
    want = expected("forest", x[:60])

    async def mixed() -> list[dict[str, np.ndarray[Any, Any]]]:
        first = await forest.infer({"X": x[:1]}, OUTPUTS, alone=True)
        rest = await asyncio.gather(
            *(forest.infer({"X": x[i : i + 1]}, OUTPUTS, alone=i % 2 == 0) for i in range(1, 60))
        )
        return [first, *rest]

    for index, got in enumerate(run(loop, mixed())):
        assert got["label"][0] == want["label"][index]
        assert np.allclose(got["probabilities"][0], want["probabilities"][index], atol=1e-6)


def test_a_caller_that_gives_up_does_not_disturb_the_others(
    loop: asyncio.AbstractEventLoop, logistic: Worker
) -> None:
    x, _ = cancer()

    async def scenario() -> list[Any]:
        calls = [
            asyncio.ensure_future(logistic.infer({"X": x[i : i + 1]}, ["label"])) for i in range(6)
        ]
        await asyncio.sleep(0)
        calls[2].cancel()
        return await asyncio.gather(*calls, return_exceptions=True)

    results = run(loop, scenario())
    assert isinstance(results[2], asyncio.CancelledError)
    want = expected("logistic", x[:6])["label"]
    assert [int(r["label"][0]) for i, r in enumerate(results) if i != 2] == [
        int(v) for i, v in enumerate(want) if i != 2
    ]
    assert run(loop, logistic.infer({"X": x[:1]}, ["label"]))["label"][0] == want[0]


def test_an_input_the_runtime_refuses_is_an_input_error_and_the_worker_keeps_serving(
    loop: asyncio.AbstractEventLoop, logistic: Worker
) -> None:
    with pytest.raises(InputError, match="the model refused the input") as caught:
        run(loop, logistic.infer({"X": np.zeros((1, 29), np.float32)}, OUTPUTS))
    assert "\n" not in caught.value.message
    assert logistic.alive
    x, _ = cancer()
    assert run(loop, logistic.infer({"X": x[:1]}, ["label"]))["label"].shape == (1,)


def test_models_that_do_not_load_are_input_errors_with_the_reason(
    loop: asyncio.AbstractEventLoop,
) -> None:
    bad_onnx = Worker(
        label="bad", runtime=RuntimeKind.ONNX, model=b"\x08\x07garbage", limits=LIMITS
    )
    with pytest.raises(InputError, match="ONNX Runtime cannot load the model"):
        run(loop, bad_onnx.start())
    assert not bad_onnx.alive
    untrusted = skops.io.dumps(make_pipeline(FunctionTransformer(eval), LogisticRegression()))
    bad_skops = Worker(label="bad", runtime=RuntimeKind.SKOPS, model=untrusted, limits=LIMITS)
    with pytest.raises(InputError, match=r"not trusted for serving: .*builtins\.eval"):
        run(loop, bad_skops.start())
    with pytest.raises(ModelUnavailableError):
        run(loop, bad_skops.infer({"input": np.zeros((1, 4))}, ["label"]))


def test_inputs_over_the_frame_limit_are_refused_before_they_reach_the_worker(
    loop: asyncio.AbstractEventLoop,
) -> None:
    small = WorkerLimits(max_frame_bytes=4096)
    worker = Worker(
        label="small", runtime=RuntimeKind.ONNX, model=onnx_model("logistic"), limits=small
    )
    run(loop, worker.start())
    x, _ = cancer()
    try:
        with pytest.raises(PayloadTooLargeError, match="at most 4096 bytes"):
            run(loop, worker.infer({"X": x[:100]}, OUTPUTS))
        assert run(loop, worker.infer({"X": x[:2]}, ["label"]))["label"].shape == (2,)
    finally:
        run(loop, worker.stop())


@pytest.mark.parametrize(
    "limits",
    [{"memory_bytes": 1.5}, {"infer_seconds": 0}, {"threads": True}, {"start_seconds": -1}],
)
def test_limits_must_be_positive_numbers(limits: dict[str, Any]) -> None:
    with pytest.raises(UsageError, match="must be a positive"):
        WorkerLimits(**limits)


def test_a_killed_worker_fails_its_callers_and_is_restarted_while_others_serve(
    loop: asyncio.AbstractEventLoop,
) -> None:
    x, _ = cancer()
    calls: list[str] = []
    reasons: list[str] = []
    first = WorkerSupervisor(
        label="first",
        load=loader(RuntimeKind.ONNX, onnx_model("logistic"), calls),
        limits=LIMITS,
        on_restart=reasons.append,
        backoff=lambda attempt: 0.05,
    )
    other = WorkerSupervisor(
        label="other", load=loader(RuntimeKind.ONNX, onnx_model("forest"), []), limits=LIMITS
    )

    async def scenario() -> None:
        await asyncio.gather(first.start(), other.start())
        old = first.pid
        assert old is not None
        os.kill(old, signal.SIGSTOP)  # hold the requests in flight, then kill
        in_flight = [
            asyncio.ensure_future(first.infer({"X": x[i : i + 1]}, OUTPUTS)) for i in range(5)
        ]
        await asyncio.sleep(0.1)
        os.kill(old, signal.SIGKILL)
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        assert all(isinstance(result, ModelUnavailableError) for result in results)
        with pytest.raises(ModelUnavailableError, match="retry"):
            await first.infer({"X": x[:1]}, OUTPUTS)
        got = await other.infer({"X": x[:4]}, OUTPUTS)  # another deployment keeps serving
        assert np.array_equal(got["label"], expected("forest", x[:4])["label"])
        await first.wait_serving()
        assert first.pid not in (None, old)
        assert (calls, reasons, first.restarts) == (["load", "load"], ["crashed"], 1)
        got = await first.infer({"X": x[:4]}, OUTPUTS)
        assert np.array_equal(got["label"], expected("logistic", x[:4])["label"])
        await asyncio.gather(first.stop(), other.stop())

    run(loop, scenario())


def test_a_hung_worker_is_killed_and_restarted(loop: asyncio.AbstractEventLoop) -> None:
    x, _ = cancer()
    reasons: list[str] = []
    supervisor = WorkerSupervisor(
        label="hangs",
        load=loader(RuntimeKind.ONNX, onnx_model("logistic"), []),
        limits=WorkerLimits(infer_seconds=0.5),
        on_restart=reasons.append,
        backoff=lambda attempt: 0.05,
    )

    async def scenario() -> None:
        await supervisor.start()
        stuck = supervisor.pid
        assert stuck is not None
        os.kill(stuck, signal.SIGSTOP)
        with pytest.raises(ModelUnavailableError, match=r"did not answer within 0\.5 s"):
            await supervisor.infer({"X": x[:1]}, OUTPUTS)
        await supervisor.wait_serving()
        assert reasons == ["hung"]
        assert supervisor.pid != stuck
        assert _zombie_or_gone(stuck)
        got = await supervisor.infer({"X": x[:3]}, OUTPUTS)
        assert np.array_equal(got["label"], expected("logistic", x[:3])["label"])
        await supervisor.stop()

    run(loop, scenario())


def _zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1].startswith(("Z", "X"))
    except FileNotFoundError:
        return True


def test_a_failing_load_keeps_the_deployment_down_until_a_later_retry_works(
    loop: asyncio.AbstractEventLoop,
) -> None:
    x, _ = cancer()
    failing = {"now": False}
    attempts: list[str] = []

    async def load() -> tuple[RuntimeKind, bytes]:
        attempts.append("failed" if failing["now"] else "loaded")
        if failing["now"]:
            raise InputError("the model no longer verifies")
        return RuntimeKind.ONNX, onnx_model("logistic")

    supervisor = WorkerSupervisor(
        label="flaky", load=load, limits=LIMITS, backoff=lambda attempt: 0.05
    )

    async def scenario() -> None:
        await supervisor.start()
        failing["now"] = True
        pid = supervisor.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        await until(lambda: attempts.count("failed") >= 2)
        assert not supervisor.alive
        with pytest.raises(ModelUnavailableError):
            await supervisor.infer({"X": x[:1]}, OUTPUTS)
        failing["now"] = False
        await supervisor.wait_serving()
        assert attempts[-1] == "loaded"
        assert (await supervisor.infer({"X": x[:1]}, ["label"]))["label"].shape == (1,)
        await supervisor.stop()

    run(loop, scenario())


def test_a_first_start_raises_what_the_load_raised(loop: asyncio.AbstractEventLoop) -> None:
    async def load() -> tuple[RuntimeKind, bytes]:
        raise InputError("not verified")

    supervisor = WorkerSupervisor(label="never", load=load, limits=LIMITS)
    with pytest.raises(InputError, match="not verified"):
        run(loop, supervisor.start())
    with pytest.raises(ModelUnavailableError):
        run(loop, supervisor.infer({"X": np.zeros((1, 30), np.float32)}, OUTPUTS))


def test_a_worker_runs_on_uvloop() -> None:
    x, _ = cancer()
    worker = Worker(
        label="uvloop", runtime=RuntimeKind.ONNX, model=onnx_model("logistic"), limits=LIMITS
    )

    async def scenario() -> np.ndarray[Any, Any]:
        signature = await worker.start()
        assert signature.inputs == (TensorSpec("X", Datatype.FP32, (-1, 30)),)
        try:
            return (await worker.infer({"X": x[:5]}, ["label"]))["label"]
        finally:
            await worker.stop()

    other = uvloop.new_event_loop()
    try:
        labels = other.run_until_complete(asyncio.wait_for(scenario(), 60))
    finally:
        other.close()
    assert np.array_equal(labels, expected("logistic", x[:5])["label"])


def _open_descriptors() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_workers_stopped_killed_or_failing_to_load_leave_no_descriptor_open(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """The gateway reads each worker's answers from a pipe of its own: every way a worker
    ends must close it, or a server that restarts workers runs out of descriptors."""
    x, _ = cancer()

    async def scenario() -> None:
        stopped = Worker(label="stopped", runtime=RuntimeKind.ONNX, model=onnx_model("logistic"),
                         limits=LIMITS)  # fmt: skip
        await stopped.start()
        assert (await stopped.infer({"X": x[:2]}, OUTPUTS))["label"].shape == (2,)
        await stopped.stop()
        killed = Worker(label="killed", runtime=RuntimeKind.ONNX, model=onnx_model("logistic"),
                        limits=LIMITS)  # fmt: skip
        await killed.start()
        assert killed.pid is not None
        os.kill(killed.pid, signal.SIGKILL)
        assert await killed.wait() == "crashed"
        await killed.stop()
        broken = Worker(label="broken", runtime=RuntimeKind.ONNX, model=b"not a model",
                        limits=LIMITS)  # fmt: skip
        with pytest.raises(InputError):
            await broken.start()

    before = _open_descriptors()
    run(loop, scenario())
    assert _open_descriptors() - before == set()
