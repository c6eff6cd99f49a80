"""The inference gate answers exactly as the full middleware stack and FastAPI route would.

Inference calls without an ``Origin`` header take the gate; the same call with one goes
through every middleware layer to FastAPI's route. Both must give the same status, body and
header names, for served calls and for each kind of refusal.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest

from bastion.api._hygiene import SECURITY_HEADERS
from tests.integration.gateway.conftest import Published
from tests.integration.hub.conftest import assert_problem, bearer
from tests.support.models import breast_cancer

#: An origin the hub does not allow: the request goes the long way, and gets no CORS grant.
OTHER_ORIGIN = {"origin": "https://elsewhere.example"}
#: Headers that differ between any two answers (problem documents from the access layer are
#: spaced JSON, FastAPI's are compact: the documents are compared, not their bytes).
_VARYING = {"x-request-id", "date", "ratelimit-remaining", "ratelimit-reset", "content-length"}


@pytest.fixture(scope="module")
def deployed(published: Published) -> str:
    published.admin.deploy("med/lr@1.0.0", name="gated")
    return "gated"


def _body(rows: int = 1, features: int = 30) -> dict[str, Any]:
    data = breast_cancer()[0][:rows, :features]
    return {
        "inputs": [
            {
                "name": "X",
                "shape": list(data.shape),
                "datatype": "FP32",
                "data": data.ravel().tolist(),
            }
        ]
    }


def _both(http: httpx.Client, path: str, **kwargs: Any) -> tuple[httpx.Response, httpx.Response]:
    headers = dict(kwargs.pop("headers", {}))
    gate = http.post(path, headers=headers, **kwargs)
    stack = http.post(path, headers={**headers, **OTHER_ORIGIN}, **kwargs)
    return gate, stack


def _same_answer(gate: httpx.Response, stack: httpx.Response) -> None:
    assert gate.status_code == stack.status_code, (gate.text, stack.text)
    assert set(gate.headers) == set(stack.headers)
    for name in set(gate.headers) - _VARYING:
        assert gate.headers[name] == stack.headers[name], name
    for name, value in SECURITY_HEADERS:
        assert gate.headers[name.decode()] == value.decode()
    assert gate.headers["cache-control"] == "no-store"
    assert gate.headers["x-request-id"]
    first, second = gate.json(), stack.json()
    for document in (first, second):
        document.pop("instance", None)  # the request id, in problem documents
    assert first == second


def test_a_served_call_is_answered_as_the_route_answers(
    published: Published, deployed: str
) -> None:
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        gate, stack = _both(http, f"/v2/models/{deployed}/infer", json=_body(3))
    assert gate.status_code == 200, gate.text
    assert gate.headers["ratelimit-limit"]
    _same_answer(gate, stack)


def test_each_refusal_is_answered_as_the_route_answers(published: Published, deployed: str) -> None:
    path = f"/v2/models/{deployed}/infer"
    with httpx.Client(base_url=published.hub.url) as http:
        gate, stack = _both(http, path, json=_body())
        assert_problem(gate, 401, "unauthenticated")
        assert gate.headers["www-authenticate"] == 'Bearer realm="bastion"'
        _same_answer(gate, stack)
        gate, stack = _both(http, path, json=_body(), headers=bearer(published.consumer))
        assert_problem(gate, 403, "forbidden")
        _same_answer(gate, stack)
        invoker = bearer(published.invoker)
        gate, stack = _both(http, path, json=_body(features=29), headers=invoker)
        assert_problem(gate, 400, "bad_input")
        _same_answer(gate, stack)
        text = {**invoker, "content-type": "text/plain"}
        gate, stack = _both(http, path, content=b"x=1", headers=text)
        assert_problem(gate, 415, "unsupported_media_type")
        _same_answer(gate, stack)
        too_big = b'{"inputs": [' + b" " * (published.hub.services.max_json_body + 1) + b"]}"
        json_type = {**invoker, "content-type": "application/json"}
        gate = http.post(path, content=too_big, headers=json_type)
        assert_problem(gate, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("header", "values"),
    [
        ("content-type", ("text/plain", "application/json")),
        ("inference-header-content-length", ("3", "7")),
    ],
)
def test_a_repeated_header_the_call_reads_is_refused_on_both_paths(
    published: Published, deployed: str, header: str, values: tuple[str, str]
) -> None:
    # The gate once kept a repeated header's last value and the route its first.
    path = f"/v2/models/{deployed}/infer"
    sent = [*bearer(published.invoker).items(), *((header, value) for value in values)]
    if header != "content-type":
        sent.append(("content-type", "application/octet-stream"))
    body = json.dumps(_body()).encode()
    with httpx.Client(base_url=published.hub.url) as http:
        gate = http.post(path, content=body, headers=sent)
        stack = http.post(path, content=body, headers=[*sent, *OTHER_ORIGIN.items()])
    assert_problem(gate, 400, "bad_input")
    assert f"gives its {header} header more than once" in gate.json()["detail"]
    _same_answer(gate, stack)


def test_a_policy_refusal_is_audited_and_other_calls_are_not(
    published: Published, deployed: str
) -> None:
    path = f"/v2/models/{deployed}/infer"
    with httpx.Client(base_url=published.hub.url) as http:
        denied = http.post(
            path, json=_body(), headers={**bearer(published.consumer), "x-request-id": "gate-403-a"}
        )
        served = http.post(
            path, json=_body(), headers={**bearer(published.invoker), "x-request-id": "gate-200-a"}
        )
    assert denied.status_code == 403
    assert served.status_code == 200
    assert denied.headers["x-request-id"] == "gate-403-a"
    entries = [json.loads(line) for line in published.admin.audit_lines()]
    by_request = {e["request_id"]: e for e in entries}
    entry = by_request["gate-403-a"]
    assert (entry["action"], entry["outcome"], entry["resource"]) == (
        "invoke",
        "denied",
        f"deployment:{deployed}",
    )
    assert "gate-200-a" not in by_request


def test_a_refusal_that_cannot_be_audited_is_answered_500(
    published: Published, deployed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: Any) -> None:
        raise OSError("the audit log's disk is gone")

    monkeypatch.setattr(published.hub.services.audit, "record", broken)
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.consumer)) as http:
        answer = http.post(f"/v2/models/{deployed}/infer", json=_body())
    problem = assert_problem(answer, 500, "internal")
    assert "audit log" in problem["detail"]
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_an_unexpected_failure_is_a_500_problem_without_its_detail(
    published: Published, deployed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(**_: Any) -> None:
        raise RuntimeError("the counters' store is gone: secret detail")

    monkeypatch.setattr(published.hub.services.limiter, "check", broken)
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        gate, stack = _both(http, f"/v2/models/{deployed}/infer", json=_body())
    problem = assert_problem(gate, 500, "internal")
    assert "secret" not in gate.text
    assert problem["detail"] == stack.json()["detail"]
    assert gate.headers["x-content-type-options"] == "nosniff"
    assert gate.headers["x-request-id"]


def test_a_call_whose_accounting_fails_is_still_answered_and_the_failure_logged(
    published: Published,
    deployed: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Metrics and the record are taken after the answer left: failing there, they cannot
    take the answer back, so the failure goes to the log."""

    def broken(*_: Any) -> None:
        raise RuntimeError("the metrics are gone")

    monkeypatch.setattr(published.hub.services.gateway.metrics, "served", broken)
    with (
        caplog.at_level("ERROR", logger="bastion.api._routes_gateway"),
        httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http,
    ):
        gate, stack = _both(http, f"/v2/models/{deployed}/infer", json=_body())
        assert gate.status_code == stack.status_code == 200
        assert gate.json()["outputs"] == stack.json()["outputs"]
        # The next call is served too: nothing was left half-done.
        assert http.post(f"/v2/models/{deployed}/infer", json=_body()).status_code == 200
    deadline = time.monotonic() + 10  # the last one is taken just after its answer left
    while len(failures := _accounting_failures(caplog)) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(failures) == 3
    assert all(r.exc_info and "metrics are gone" in str(r.exc_info[1]) for r in failures)


def _accounting_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "could not account" in r.getMessage()]


def test_other_shapes_of_path_and_method_go_through_the_router(
    published: Published, deployed: str
) -> None:
    with httpx.Client(base_url=published.hub.url, headers=bearer(published.invoker)) as http:
        assert http.post(f"/v2/models/{deployed}/extra/infer", json=_body()).status_code == 404
        assert http.post("/v2/models//infer", json=_body()).status_code == 404
        assert http.get(f"/v2/models/{deployed}/infer").status_code == 405


# The hub's transport writes the gate's answers itself, without an ASGI cycle: what that
# cycle did for every other route (keep-alive, pipelining, 100-continue, the body deadline,
# a failure's 500) it must do for inference calls too.


def _request(path: str, key: str, body: bytes, *extra: str) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        "host: hub",
        f"authorization: Bearer {key}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        *extra,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _answers(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read ``count`` answers (each with a content-length) from ``sock``."""
    buffered, answers = b"", []
    while len(answers) < count:
        while b"\r\n\r\n" not in buffered:
            chunk = sock.recv(65536)
            assert chunk, f"the connection closed after {len(answers)} answers"
            buffered += chunk
        head, buffered = buffered.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        length = int(headers["content-length"])
        while len(buffered) < length:
            chunk = sock.recv(65536)
            assert chunk, "the connection closed inside a body"
            buffered += chunk
        answers.append((int(status_line.split()[1]), headers, buffered[:length]))
        buffered = buffered[length:]
    return answers


def _connect(published: Published) -> socket.socket:
    url = httpx.URL(published.hub.url)
    sock = socket.create_connection((url.host, url.port or 80), timeout=10)
    return sock


def _closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_pipelined_calls_are_answered_in_order_on_one_connection(
    published: Published, deployed: str
) -> None:
    path = f"/v2/models/{deployed}/infer"
    one, three = json.dumps(_body(1)).encode(), json.dumps(_body(3)).encode()
    sent = [
        _request(path, published.invoker, one, "x-request-id: pipelined-1"),
        _request(path, published.invoker, three, "x-request-id: pipelined-2"),
        _request(path, "bst_unknown_key", one, "x-request-id: pipelined-3"),
    ]
    with _connect(published) as sock:
        sock.sendall(b"".join(sent))
        answers = _answers(sock, 3)
        assert [status for status, _, _ in answers] == [200, 200, 401]
        assert [h["x-request-id"] for _, h, _ in answers] == [
            "pipelined-1",
            "pipelined-2",
            "pipelined-3",
        ]
        rows = [json.loads(body)["outputs"][0]["shape"][0] for _, _, body in answers[:2]]
        assert rows == [1, 3]
        assert all("connection" not in headers for _, headers, _ in answers)
        sock.sendall(_request(path, published.invoker, one))  # the connection still serves
        assert _answers(sock, 1)[0][0] == 200


def test_a_call_asking_to_close_is_answered_then_the_connection_closed(
    published: Published, deployed: str
) -> None:
    body = json.dumps(_body()).encode()
    with _connect(published) as sock:
        sock.sendall(
            _request(f"/v2/models/{deployed}/infer", published.invoker, body, "connection: close")
        )
        [(status, headers, _)] = _answers(sock, 1)
        assert status == 200
        assert headers["connection"] == "close"
        assert _closed(sock)


def test_a_call_expecting_100_continue_gets_it_before_sending_its_body(
    published: Published, deployed: str
) -> None:
    body = json.dumps(_body()).encode()
    request = _request(
        f"/v2/models/{deployed}/infer", published.invoker, body, "expect: 100-continue"
    )
    head = request[: len(request) - len(body)]
    with _connect(published) as sock:
        sock.sendall(head)
        assert sock.recv(1024).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(body)
        assert _answers(sock, 1)[0][0] == 200


def test_a_call_whose_body_stalls_loses_its_connection(
    published: Published, deployed: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    limits = published.server.config.transport_limits
    monkeypatch.setattr(
        published.server.config, "transport_limits", replace(limits, body_idle_timeout=0.3)
    )
    body = json.dumps(_body()).encode()
    request = _request(f"/v2/models/{deployed}/infer", published.invoker, body)
    with _connect(published) as sock:
        sock.sendall(request[:-10])  # all but the body's last bytes, which never come
        started = time.monotonic()
        assert _closed(sock)
        assert time.monotonic() - started < 5  # the deadline, not the socket's own timeout


def test_a_failure_escaping_the_gate_is_uvicorns_500_and_closes_the_connection(
    published: Published,
    deployed: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gate = published.server.config.loaded_app.gate

    def broken(*_: Any) -> None:
        raise RuntimeError("the security headers are gone")

    monkeypatch.setattr(gate.security, "finish", broken)
    monkeypatch.setattr(gate.security, "finish_own", broken)
    body = json.dumps(_body()).encode()
    with caplog.at_level("ERROR"), _connect(published) as sock:
        sock.sendall(_request(f"/v2/models/{deployed}/infer", published.invoker, body))
        [(status, headers, text)] = _answers(sock, 1)
        assert (status, text) == (500, b"Internal Server Error")
        assert headers["connection"] == "close"
        assert _closed(sock)
    assert any("security headers are gone" in str(r.exc_info) for r in caplog.records)
