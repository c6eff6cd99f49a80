"""The gateway under stress and in its other modes: upstream deployments against a real
MLServer, automatic rollback of a failing candidate, and hostile callers mixed with normal
ones."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest

from tests.integration.gateway.conftest import Published
from tests.integration.hub.conftest import assert_problem, bearer, make_key
from tests.support.mlserver import running_mlserver
from tests.support.models import breast_cancer, onnx_bytes

#: A hostile request the gateway answered by closing the connection (a body over the limit).
HUNG_UP = -1
NAN_BODY = json.dumps(
    {"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": ["NaN"] * 30}]}
).encode()


def _request(rows: np.ndarray[Any, Any]) -> dict[str, Any]:
    data = rows.ravel().tolist()
    return {"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP32", "data": data}]}


@pytest.mark.slow
def test_an_upstream_deployment_fronts_a_real_mlserver(
    published: Published, tmp_path: Path
) -> None:
    onnx = tmp_path / "cancer.onnx"
    onnx.write_bytes(onnx_bytes("logistic"))
    rows = breast_cancer()[0][:3]
    with running_mlserver({"cancer": onnx}, workdir=tmp_path / "mlserver") as url:
        made = published.admin.deploy(
            name="fronted", upstream=url, upstream_model="cancer", namespace="med",
            output="top-k=1",
        )  # fmt: skip
        assert made["kind"] == "upstream"
        with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
            meta = http.get("/v2/models/fronted").json()
            assert meta["platform"] == "upstream"
            assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 30]}]
            body = http.post("/v2/models/fronted/infer", json=_request(rows)).json()
            expected = ort.InferenceSession(onnx_bytes("logistic")).run(None, {"X": rows})[1]
            classes = np.asarray(body["outputs"][1]["data"])
            np.testing.assert_array_equal(classes, expected.argmax(axis=1))
            # Bastion validates before forwarding: MLServer never sees a wrong shape.
            wrong = {"inputs": [{"name": "X", "shape": [1, 29], "datatype": "FP32",
                                 "data": [0.0] * 29}]}  # fmt: skip
            assert_problem(http.post("/v2/models/fronted/infer", json=wrong), 400, "bad_input")
    # MLServer is gone: the caller gets a 502 without the upstream's details.
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        gone = http.post("/v2/models/fronted/infer", json=_request(rows))
    assert_problem(gone, 502, "upstream_failed")
    published.admin.undeploy("fronted")


def test_a_candidate_slower_than_allowed_is_rolled_back_on_its_own(published: Published) -> None:
    admin = published.admin
    admin.deploy("med/lr@1.0.0", name="guarded")
    strict = {"min_requests": 5, "max_p99_seconds": 1e-6, "max_p99_ratio": None}
    admin.deploy("med/lr@2.0.0", name="guarded", canary=99.99, rollout=strict)
    rows = breast_cancer()[0][:1]
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        for _ in range(10):
            assert http.post("/v2/models/guarded/infer", json=_request(rows)).status_code == 200
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        shown = admin.deployment("guarded")
        if shown["plan"]["candidate"] is None:
            break
        time.sleep(0.2)
    assert shown["plan"]["candidate"] is None
    latest = shown["revisions"][0]
    assert latest["change"] == "auto-rollback"
    assert latest["changed_by"] == "system:gateway"
    assert "p99" in latest["reason"]
    deadline = time.monotonic() + 10  # the audit entry follows the new revision
    while time.monotonic() < deadline:
        entries = [json.loads(line) for line in admin.audit_lines()]
        audited = [
            e
            for e in entries
            if e["action"] == "deployment.rollback" and e["resource"] == "deployment:guarded"
        ]
        if audited:
            break
        time.sleep(0.2)
    assert [(e["actor"], e["details"]["cause"]) for e in audited] == [("system:gateway", "auto")]
    admin.undeploy("guarded")


def _slow_drip(url: str, token: str, stop: threading.Event) -> None:
    """Headers, then a body one byte at a time, far slower than any real client."""
    host, port = url.removeprefix("http://").split(":")
    while not stop.is_set():
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(
                f"POST /v2/models/calm/infer HTTP/1.1\r\nHost: x\r\n"
                f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
                f"Content-Length: 100000\r\n\r\n".encode()
            )
            try:
                for _ in range(20):
                    if stop.is_set():
                        return
                    s.sendall(b"[")
                    time.sleep(0.2)
            except OSError:
                pass  # the gateway hung up on it: what should happen


def test_hostile_callers_do_not_stop_normal_ones_being_served(published: Published) -> None:
    admin = published.admin
    admin.deploy("med/lr@1.0.0", name="calm")
    hostile_key = make_key(admin, ("med", "invoker"))
    url = published.hub.url
    stop = threading.Event()
    hostile_statuses: list[int] = []
    bad_bodies: list[tuple[bytes, str]] = [
        (b"x" * (5 << 20), "application/json"),  # over the body limit
        (b"[" * 10_000 + b"]" * 10_000, "application/json"),  # deeply nested
        (b'{"inputs": [', "application/json"),  # malformed
        (json.dumps(_request(np.zeros((300, 30), dtype=np.float32))).encode(), "application/json"),
        (b"<xml/>", "application/xml"),  # wrong type
        (NAN_BODY, "application/json"),  # not finite
    ]

    def hostile() -> None:
        with httpx.Client(base_url=url, headers=bearer(hostile_key), timeout=30) as http:
            while not stop.is_set():
                for body, content_type in bad_bodies:
                    try:
                        response = http.post(
                            "/v2/models/calm/infer",
                            content=body,
                            headers={"content-type": content_type},
                        )
                    except httpx.TransportError:  # refused before the whole body was read
                        hostile_statuses.append(HUNG_UP)
                        continue
                    hostile_statuses.append(response.status_code)
        with httpx.Client(base_url=url, headers=bearer("bst_" + "x" * 60)) as http:
            hostile_statuses.append(http.post("/v2/models/calm/infer", json={}).status_code)

    threads = [threading.Thread(target=hostile) for _ in range(3)]
    threads += [
        threading.Thread(target=_slow_drip, args=(url, hostile_key, stop)) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    rows = breast_cancer()[0][:2]
    served: list[int] = []
    try:
        with httpx.Client(base_url=url, headers=bearer(published.invoker), timeout=30) as http:
            for _ in range(60):
                served.append(http.post("/v2/models/calm/infer", json=_request(rows)).status_code)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)
    assert served == [200] * 60
    assert hostile_statuses
    refused = set(hostile_statuses)
    assert all(s == HUNG_UP or 400 <= s < 500 for s in refused), sorted(refused)
    admin.undeploy("calm")
