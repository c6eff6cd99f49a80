"""The gateway end to end: deploy hub versions, call them over the Open Inference Protocol,
change their routing, and see every refusal, record and metric."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
from prometheus_client.parser import text_string_to_metric_families

import bastion
from bastion.errors import ConflictError, InputError, QuarantinedError, VersionYankedError
from tests.integration.gateway.conftest import Published
from tests.integration.hub.conftest import assert_problem, bearer
from tests.support.models import breast_cancer, onnx_bytes


def _request(rows: np.ndarray[Any, Any], **extra: Any) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "X",
                "shape": list(rows.shape),
                "datatype": "FP32",
                "data": rows.ravel().tolist(),
            }
        ],
        **extra,
    }


def _expected(rows: np.ndarray[Any, Any], kind: str = "logistic", seed: int = 0) -> Any:
    session = ort.InferenceSession(onnx_bytes(kind, seed=seed))
    return session.run(None, {"X": rows})


def _outputs(body: dict[str, Any]) -> dict[str, np.ndarray[Any, Any]]:
    return {o["name"]: np.asarray(o["data"]).reshape(o["shape"]) for o in body["outputs"]}


@pytest.fixture(scope="module")
def lr(published: Published) -> str:
    published.admin.deploy("med/lr@1.0.0", name="cancer")
    return "cancer"


def test_a_deployed_version_answers_exactly_as_onnx_runtime(published: Published, lr: str) -> None:
    rows = breast_cancer()[0][:5]
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        meta = http.get(f"/v2/models/{lr}").json()
        assert meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 30]}]
        assert {o["name"] for o in meta["outputs"]} == {"label", "probabilities"}
        assert meta["versions"] == ["1.0.0"]
        assert http.get(f"/v2/models/{lr}/ready").json() == {"name": lr, "ready": True}
        response = http.post(f"/v2/models/{lr}/infer", json=_request(rows, id="r-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == lr
    assert body["model_version"] == "1.0.0"
    assert body["id"] == "r-1"
    labels, probabilities = _expected(rows)
    got = _outputs(body)
    np.testing.assert_array_equal(got["label"], labels)
    np.testing.assert_allclose(got["probabilities"], probabilities, rtol=1e-6)


def test_bad_requests_get_clear_4xx_errors(published: Published, lr: str) -> None:
    rows = breast_cancer()[0][:1]
    url = f"/v2/models/{lr}/infer"
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        wrong = {"inputs": [{"name": "X", "shape": [1, 29], "datatype": "FP32", "data": [0] * 29}]}
        problem = assert_problem(http.post(url, json=wrong), 400, "bad_input")
        assert "[-1, 30]" in problem["detail"]
        nan = _request(rows)
        nan["inputs"][0]["data"][0] = "NaN"
        assert_problem(http.post(url, json=nan), 400, "bad_input")
        assert_problem(
            http.post(url, content=b"x=1", headers={"content-type": "text/plain"}),
            415,
            "unsupported_media_type",
        )
        deep = b"[" * 50 + b"]" * 50
        assert_problem(
            http.post(url, content=deep, headers={"content-type": "application/json"}),
            400,
            "bad_input",
        )
        assert_problem(http.post("/v2/models/nosuch/infer", json=_request(rows)), 403, "forbidden")
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.consumer)) as http:
        assert_problem(http.post(url, json=_request(rows)), 403, "forbidden")
    with httpx.Client(base_url=published.hub.url) as http:
        assert_problem(http.post(url, json=_request(rows)), 401, "unauthenticated")


def test_the_binary_tensor_extension_works_both_ways(published: Published, lr: str) -> None:
    rows = breast_cancer()[0][:3]
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": [3, 30],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": rows.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        response = http.post(
            f"/v2/models/{lr}/infer",
            content=header + rows.astype("<f4").tobytes(),
            headers={
                "content-type": "application/octet-stream",
                "inference-header-content-length": str(len(header)),
            },
        )
    assert response.status_code == 200, response.text
    length = int(response.headers["inference-header-content-length"])
    document = json.loads(response.content[:length])
    [output] = document["outputs"]
    got = np.frombuffer(response.content[length:], dtype="<f4").reshape(output["shape"])
    np.testing.assert_allclose(got, _expected(rows)[1], rtol=1e-6)


def test_tritonclient_works_unchanged(published: Published, lr: str) -> None:
    import tritonclient.http as triton

    rows = breast_cancer()[0][:4]
    client = triton.InferenceServerClient(url=published.hub.url.removeprefix("http://"))
    auth = f"Bearer {published.invoker}"
    try:
        assert client.is_model_ready(lr, headers={"Authorization": auth})
        metadata = client.get_model_metadata(lr, headers={"Authorization": auth})
        assert metadata["inputs"][0]["name"] == "X"
        given = triton.InferInput("X", list(rows.shape), "FP32")
        given.set_data_from_numpy(rows, binary_data=True)
        wanted = [triton.InferRequestedOutput("probabilities", binary_data=True)]
        result = client.infer(lr, [given], outputs=wanted, headers={"Authorization": auth})
        np.testing.assert_allclose(result.as_numpy("probabilities"), _expected(rows)[1], rtol=1e-6)
        as_json = triton.InferInput("X", list(rows.shape), "FP32")
        as_json.set_data_from_numpy(rows, binary_data=False)
        result = client.infer(lr, [as_json], headers={"Authorization": auth})
        np.testing.assert_array_equal(result.as_numpy("label"), _expected(rows)[0])
    finally:
        client.close()


def test_output_hardening_per_tier(published: Published) -> None:
    published.admin.deploy("med/lr@1.0.0", name="hardened", output="top-k=1,round=2")
    rows = breast_cancer()[0][:6]
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        meta = http.get("/v2/models/hardened").json()
        assert meta["outputs"] == [
            {"name": "scores", "datatype": "FP64", "shape": [-1, 1]},
            {"name": "classes", "datatype": "INT64", "shape": [-1, 1]},
        ]
        body = http.post("/v2/models/hardened/infer", json=_request(rows)).json()
    got = _outputs(body)
    probabilities = _expected(rows)[1]
    np.testing.assert_array_equal(got["classes"][:, 0], probabilities.argmax(axis=1))
    np.testing.assert_allclose(got["scores"][:, 0], probabilities.max(axis=1).round(2), atol=1e-9)
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        # A batch of no rows once reached the hardening, which refused it as the model's fault.
        empty = http.post("/v2/models/hardened/infer", json=_request(rows[:0]))
    assert_problem(empty, 400, "bad_input")
    assert "holds no elements" in empty.json()["detail"]
    published.admin.undeploy("hardened")


def test_canary_is_sticky_per_caller_then_promote_and_rollback(published: Published) -> None:
    admin = published.admin
    admin.deploy("med/lr@1.0.0", name="rollout")
    admin.deploy("med/lr@2.0.0", name="rollout", canary=50)
    rows = breast_cancer()[0][:1]
    seen: dict[str, set[str]] = {}
    callers = [published.invoker] + [
        admin.create_api_key(f"caller-{i}", [("med", "invoker")])["token"] for i in range(7)
    ]
    for token in callers:
        with httpx.Client(base_url=published.hub.url, headers=bearer(token)) as http:
            seen[token] = {
                http.post("/v2/models/rollout/infer", json=_request(rows)).json()["model_version"]
                for _ in range(4)
            }
    assert all(len(versions) == 1 for versions in seen.values())  # sticky
    assert set().union(*seen.values()) == {"1.0.0", "2.0.0"}  # 8 callers at 50%: both arms
    promoted = admin.promote("rollout")
    assert promoted["plan"]["stable"] == ["med/lr@2.0.0"]
    assert promoted["plan"]["candidate"] is None
    with pytest.raises(ConflictError):
        admin.rollback("rollout")
    admin.deploy("med/lr@1.0.0", name="rollout", shadow=True)
    rolled = admin.rollback("rollout", reason="not now")
    assert rolled["plan"]["candidate"] is None
    changes = [r["change"] for r in admin.deployment("rollout")["revisions"]]
    assert changes == ["rollback", "shadow", "promote", "canary", "deploy"]
    audited = [json.loads(line) for line in admin.audit_lines()]
    actions = [
        (e["action"], e["outcome"]) for e in audited if e["resource"] == "deployment:rollout"
    ]
    assert actions == [
        ("deploy", "allowed"),  # 1.0.0
        ("deploy", "allowed"),  # the canary
        ("deployment.manage", "allowed"),  # promote
        ("deployment.manage", "failed"),  # a rollback with no candidate: 409
        ("deploy", "allowed"),  # the shadow
        ("deployment.manage", "allowed"),  # rollback
    ]
    admin.undeploy("rollout")


def test_yanking_a_live_version_rolls_back_to_the_last_good_one(published: Published) -> None:
    admin = published.admin
    published.push("med/lr@3.0.0", seed=4)
    admin.deploy("med/lr@1.0.0", name="yanky")
    admin.deploy("med/lr@3.0.0", name="yanky")
    yanked = admin.yank("med/lr@3.0.0", "bad calibration")
    assert yanked["rolled_back"] == ["yanky"]
    now = admin.deployment("yanky")
    assert now["plan"]["stable"] == ["med/lr@1.0.0"]
    assert now["revisions"][0]["change"] == "yank-rollback"
    entries = [json.loads(line) for line in admin.audit_lines()]
    assert any(
        e["action"] == "deployment.rollback" and e["resource"] == "deployment:yanky"
        for e in entries
    )
    with pytest.raises(VersionYankedError):
        admin.deploy("med/lr@3.0.0", name="yanky")
    admin.undeploy("yanky")


def test_only_servable_model_files_are_deployed(published: Published, tmp_path: Any) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "weights.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    (folder / "README.md").write_text("no model here\n")
    try:
        published.admin.push(folder, "med/weights@1.0.0", key=published.key)
    except QuarantinedError:
        pytest.fail("a plain safetensors folder should be admitted")
    with pytest.raises(InputError, match="ONNX"):
        published.admin.deploy("med/weights@1.0.0", name="weights")
    with pytest.raises(InputError):
        published.admin.deploy("med/nosuch@1.0.0", name="weights")


def test_ensembles_vote_and_switches_pick_one(published: Published) -> None:
    admin = published.admin
    members = ["med/lr@1.0.0", "med/rf@1.0.0", "med/lr2@1.0.0"]
    admin.deploy(members, name="committee", ensemble="vote")
    rows = breast_cancer()[0][:20]
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        body = http.post("/v2/models/committee/infer", json=_request(rows)).json()
    labels = np.stack(
        [_expected(rows, "logistic", 0)[0], _expected(rows, "forest", 0)[0],
         _expected(rows, "logistic", 1)[0]]
    )  # fmt: skip
    majority = (labels.sum(axis=0) >= 2).astype(np.int64)
    np.testing.assert_array_equal(_outputs(body)["label"], majority)
    assert "model_version" not in body
    admin.deploy(["med/lr@1.0.0", "med/lr@2.0.0"], name="committee", switch="random")
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        versions = {
            http.post("/v2/models/committee/infer", json=_request(rows[:1])).json()["model_version"]
            for _ in range(30)
        }
    assert versions == {"1.0.0", "2.0.0"}
    admin.undeploy("committee")


def test_a_crashed_worker_is_restarted_and_others_keep_serving(
    published: Published, lr: str
) -> None:
    admin = published.admin
    admin.deploy("med/lr2@1.0.0", name="bystander")
    rows = breast_cancer()[0][:1]
    pid = admin.deployment(lr)["workers"]["med/lr@1.0.0"]["pid"]
    os.kill(pid, signal.SIGKILL)
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        assert http.post("/v2/models/bystander/infer", json=_request(rows)).status_code == 200
        deadline = time.monotonic() + 30
        statuses = []
        while time.monotonic() < deadline:
            response = http.post(f"/v2/models/{lr}/infer", json=_request(rows))
            statuses.append(response.status_code)
            if response.status_code == 200:
                break
            assert_problem(response, 503, "model_unavailable")
            time.sleep(0.1)
    assert statuses[-1] == 200
    worker = admin.deployment(lr)["workers"]["med/lr@1.0.0"]
    assert worker["pid"] != pid
    assert worker["restarts"] >= 1
    admin.undeploy("bystander")


def test_metrics_and_inference_records(published: Published, lr: str) -> None:
    rows = breast_cancer()[0][:2]
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        response = http.post(f"/v2/models/{lr}/infer", json=_request(rows, id="recorded"))
        assert response.status_code == 200
        http.post(f"/v2/models/{lr}/infer", json={"inputs": []})
        assert_problem(http.get("/metrics"), 403, "forbidden")
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.auditor)) as http:
        text = http.get("/metrics").text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    served_key = (
        "bastion_gateway_requests_total",
        (("code", "200"), ("deployment", lr), ("version", "1.0.0")),
    )
    refused_key = (
        "bastion_gateway_rejections_total",
        (("deployment", lr), ("reason", "bad_input")),
    )
    assert samples[served_key] >= 1
    assert samples[refused_key] >= 1
    with published.hub.client(published.auditor) as auditor:
        records = [json.loads(line) for line in auditor.inference_records(deployment=lr)]
    served = [r for r in records if r["outcome"] == "ok"]
    refused = [r for r in records if r["outcome"] == "bad_input"]
    assert served
    assert refused
    mine = served[-1]
    assert mine["principal"].startswith("key:")
    assert mine["version"] == "1.0.0"
    assert mine["input_digest"].startswith("sha256:")
    assert mine["latency_ms"] > 0
    # a summary of the outputs, never the tensors
    assert mine["output"]["probabilities"] == {
        "datatype": "FP32",
        "shape": [2, 2],
        "min": pytest.approx(mine["output"]["probabilities"]["min"]),
        "max": pytest.approx(mine["output"]["probabilities"]["max"]),
        "argmax": mine["output"]["label"]["values"],
    }


def test_a_worker_reload_verifies_the_model_again(published: Published) -> None:
    """Verification runs before every load: a restart under a trust policy that no longer
    trusts the signer stays down (503) until the policy trusts it again."""
    admin = published.admin
    admin.deploy("med/lr2@1.0.0", name="reverified")
    rows = breast_cancer()[0][:1]
    stranger = bastion.generate_key("ed25519")
    admin.set_trust("med", bastion.TrustPolicy.for_keys([stranger.public_key]))
    try:
        pid = admin.deployment("reverified")["workers"]["med/lr2@1.0.0"]["pid"]
        os.kill(pid, signal.SIGKILL)
        with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
            for _ in range(5):
                response = http.post("/v2/models/reverified/infer", json=_request(rows))
                assert_problem(response, 503, "model_unavailable")
                time.sleep(0.2)
    finally:
        admin.set_trust("med", bastion.TrustPolicy.for_keys([published.key.public_key]))
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = http.post("/v2/models/reverified/infer", json=_request(rows))
            if response.status_code == 200:
                break
            time.sleep(0.2)
    assert response.status_code == 200
    admin.undeploy("reverified")
