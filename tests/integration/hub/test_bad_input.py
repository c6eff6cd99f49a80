"""Bad input against the real hub: a clear problem document, and nothing lost or left behind.

Names outside the pattern, path traversal in declared and uploaded file names,
uploads over the size limit or longer than declared, commits with files missing
or racing each other, a client that hangs up mid-upload, and JSON bodies over
the limit. Requests the SDK would refuse to send go over raw HTTP or a raw socket.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import bastion
from bastion.client import Client
from tests.integration.hub.conftest import (
    RunningHub,
    SignedModel,
    assert_problem,
    bearer,
    open_upload,
    put_file,
    sign_beside,
    upload_all,
    write_safe_model,
)

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_JSON = {"content-type": "application/json"}
_PROPERTY = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture
def signed(safe_model: Path, signing_key: bastion.PrivateKey) -> SignedModel:
    return sign_beside(safe_model, signing_key)


def _store_files(hub: RunningHub) -> list[Path]:
    return [p for p in (hub.data_dir / "store").rglob("*") if p.is_file()]


def _raw(hub: RunningHub, request: bytes, *, hang_up: bool = False) -> int | None:
    """Send ``request`` bytes as they are; the response's status, or None after hanging up."""
    where = urlsplit(hub.url)
    with socket.create_connection((where.hostname, where.port), timeout=20) as sock:
        sock.sendall(request)
        if hang_up:
            return None
        reply = b""
        while b"\r\n" not in reply and (chunk := sock.recv(4096)):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def _head(hub: RunningHub, method: str, target: str, **headers: str) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", f"host: {urlsplit(hub.url).netloc}"]
    lines += [f"authorization: Bearer {hub.admin_token}", "connection: close"]
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _until(condition: Callable[[], bool], what: str) -> None:
    """Wait for the server to finish with a request it handles after the client left."""
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the hub never got to: {what}")
        time.sleep(0.05)


# Names --------------------------------------------------------------------------------------------

_BAD_NAMES = ["Med", "-med", "med-", "m..d", "../med", "a/b", "", "x" * 65, "mé", "med\n", "*"]
_BAD_VERSIONS = ["", "-1", "1.0.", "1..0", "../1", "1/0", "v" * 65, "1 0", "1.0\x00"]


def test_names_outside_the_pattern_are_refused(
    admin: Client, http: httpx.Client, med: str, signed: SignedModel, safe_model: Path
) -> None:
    before = admin.namespaces()  # just med
    trust = bastion.TrustPolicy.for_keys([bastion.generate_key("ed25519").public_key]).to_toml()
    for name in _BAD_NAMES:
        response = http.post("/api/v1/namespaces", json={"name": name, "trust_policy": trust})
        assert "name" in assert_problem(response, 400, "bad_input")["detail"]
    for model in ["Xray", "-xray", "x..y", "x" * 65, "x%20y", "x%00y"]:
        response = http.post(f"/api/v1/models/med/{model}/versions", json=signed.start_body("1"))
        assert_problem(response, 400, "bad_input")
    for version in _BAD_VERSIONS:
        response = http.post("/api/v1/models/med/xray/versions", json=signed.start_body(version))
        assert_problem(response, 400, "bad_input")
    for alias in ["Prod", "1prod", "pr..od"]:
        response = http.put(f"/api/v1/models/med/xray/aliases/{alias}", json={"version": "1"})
        assert_problem(response, 400, "bad_input")
    assert admin.namespaces() == before
    assert admin.models() == []
    with pytest.raises(bastion.InputError):  # the SDK refuses before sending anything
        admin.push(safe_model, "med/X-Ray@1.0.0")


@_PROPERTY
@given(name=st.text(max_size=80))
def test_random_namespace_names_are_created_only_when_valid(
    hub: RunningHub, http: httpx.Client, name: str
) -> None:
    trust = bastion.TrustPolicy.for_keys([bastion.generate_key("ed25519").public_key]).to_toml()
    response = http.post("/api/v1/namespaces", json={"name": name, "trust_policy": trust})
    valid = bool(_NAME.fullmatch(name)) and ".." not in name
    if response.status_code == 201:
        assert valid, name
        assert response.json()["name"] == name
    elif response.status_code == 409:
        assert valid, name  # hypothesis tried the same name twice
    else:
        assert not valid, name
        assert_problem(response, 400, "bad_input")


# Path traversal -----------------------------------------------------------------------------------

_TRAVERSALS = [
    "../evil.bin",
    "sub/../../evil.bin",
    "/etc/passwd",
    "sub\\..\\evil.bin",
    "C:\\evil.bin",
    "./config.json",
    "sub//README.md",
    "sub/",
    "a\x00b",
    "a\nb",
    "x" * 1025,
]


def test_traversal_in_declared_file_names_is_refused(
    admin: Client, http: httpx.Client, med: str, signed: SignedModel
) -> None:
    for bad in _TRAVERSALS:
        body = signed.start_body("1.0.0")
        body["files"] = {**signed.files, bad: 3}
        response = http.post("/api/v1/models/med/xray/versions", json=body)
        assert_problem(response, 400, "bad_input")
    body = signed.start_body("1.0.0")
    body["files"] = {**signed.files, "extra.bin": 3}  # a plain name the signature does not cover
    detail = assert_problem(
        http.post("/api/v1/models/med/xray/versions", json=body), 400, "bad_input"
    )
    assert "not signed: extra.bin" in detail["detail"]
    with pytest.raises(bastion.NotFoundError):
        admin.versions("med/xray")


def test_traversal_in_upload_paths_is_refused(
    hub: RunningHub,
    admin: Client,
    http: httpx.Client,
    med: str,
    signed: SignedModel,
    tmp_path: Path,
) -> None:
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    base = f"/api/v1/uploads/{upload}/files/"
    encoded = [
        "%2e%2e/config.json",
        "%2E%2E%2Fconfig.json",
        "sub/%2e%2e/%2e%2e/config.json",
        "sub%2F..%2F..%2Fconfig.json",
        "sub%5C..%5Cconfig.json",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "config.json%00",
        "..%5cconfig.json",
    ]
    for target in encoded:
        response = http.put(httpx.URL(hub.url + base + target), content=b"{}")
        assert response.status_code in (400, 404), (target, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    for literal in ["../config.json", "sub/../../config.json", "./config.json", "../../../x"]:
        request = _head(hub, "PUT", base + literal, content_length="2") + b"{}"
        assert _raw(hub, request) in (400, 404), literal
    assert _store_files(hub) == []
    assert not list(tmp_path.rglob("passwd"))
    # None of it counted: the real files go up and the version is published.
    upload_all(http, upload, signed)
    assert http.post(f"/api/v1/uploads/{upload}/commit").json()["state"] == "published"


@_PROPERTY
@given(path=st.text(min_size=1, max_size=40))
def test_random_upload_paths_never_store_anything_undeclared(
    hub: RunningHub, http: httpx.Client, signed: SignedModel, med: str, path: str
) -> None:
    # "." and ".." stay dot segments after quoting, and the HTTP client removes them from
    # the URL (RFC 3986), so the hub is sent another path than the one generated.
    assume(path not in (".", ".."))
    upload = open_upload(http, "med/fuzz", f"1.0.{abs(hash(path)) % 10**9}", signed)
    try:
        response = http.put(f"/api/v1/uploads/{upload}/files/{quote(path, safe='')}", content=b"")
        assert response.status_code < 500, response.text
        if response.status_code == 201:
            assert path in signed.files
        else:
            assert response.headers["content-type"].startswith("application/problem+json")
    finally:
        assert http.delete(f"/api/v1/uploads/{upload}").status_code == 204
    assert _store_files(hub) == []


# Sizes ----------------------------------------------------------------------------------------


def test_a_version_over_the_size_limit_is_refused(
    hub_with: Callable[..., RunningHub],
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    total = sum(p.stat().st_size for p in safe_model.rglob("*") if p.is_file())
    hub = hub_with(max_version_bytes=total)
    bigger = write_safe_model(tmp_path / "bigger", size=65)
    with hub.client() as admin:
        admin.create_namespace("med", bastion.TrustPolicy.for_keys([signing_key.public_key]))
        assert admin.push(safe_model, "med/xray@1.0.0", key=signing_key)["state"] == "published"
        with pytest.raises(bastion.PayloadTooLargeError, match=str(total)):
            admin.push(bigger, "med/xray@2.0.0", key=signing_key)
        assert [v["version"] for v in admin.versions("med/xray")] == ["1.0.0"]
    signed = sign_beside(bigger, signing_key)
    with httpx.Client(base_url=hub.url, headers=bearer(hub.admin_token)) as http:
        response = http.post("/api/v1/models/med/xray/versions", json=signed.start_body("2.0.0"))
        assert_problem(response, 413, "payload_too_large")
        body = signed.start_body("2.0.0")
        body["files"] = dict.fromkeys(signed.files, 0) | {"model.safetensors": total + 1}
        response = http.post("/api/v1/models/med/xray/versions", json=body)
        assert_problem(response, 413, "payload_too_large")
    assert len(_store_files(hub)) == 3  # the three files of 1.0.0, nothing else


def _chunks(data: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_a_file_longer_or_shorter_than_declared_is_refused(
    hub: RunningHub, http: httpx.Client, med: str, signed: SignedModel
) -> None:
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    data = (signed.folder / "model.safetensors").read_bytes()
    url = f"/api/v1/uploads/{upload}/files/model.safetensors"
    assert_problem(http.put(url, content=data + b"extra"), 413, "payload_too_large")
    assert_problem(http.put(url, content=_chunks(data + b"extra")), 413, "payload_too_large")
    assert _store_files(hub) == []
    assert_problem(http.put(url, content=_chunks(data[:-1])), 400, "bad_input")
    assert _store_files(hub) == []
    assert put_file(http, upload, "model.safetensors", data).status_code == 201
    assert_problem(put_file(http, upload, "model.safetensors", data), 409, "conflict")
    for name in ("config.json", "sub/README.md"):
        assert put_file(http, upload, name, (signed.folder / name).read_bytes()).status_code == 201
    assert http.post(f"/api/v1/uploads/{upload}/commit").json()["state"] == "published"
    assert len(_store_files(hub)) == 3


# Commits ------------------------------------------------------------------------------------------


def test_a_commit_with_files_missing_is_refused(
    admin: Client, http: httpx.Client, med: str, signed: SignedModel
) -> None:
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    config = (signed.folder / "config.json").read_bytes()
    assert put_file(http, upload, "config.json", config).status_code == 201
    body = assert_problem(http.post(f"/api/v1/uploads/{upload}/commit"), 409, "conflict")
    assert "2 declared file(s) are not uploaded yet" in body["detail"]
    with pytest.raises(bastion.NotFoundError):  # still uploading: not in the catalogue
        admin.show("med/xray@1.0.0")
    for name in ("model.safetensors", "sub/README.md"):
        assert put_file(http, upload, name, (signed.folder / name).read_bytes()).status_code == 201
    assert http.post(f"/api/v1/uploads/{upload}/commit").json()["state"] == "published"


def test_racing_commits_exactly_one_wins(
    hub: RunningHub, admin: Client, http: httpx.Client, med: str, signed: SignedModel
) -> None:
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    upload_all(http, upload, signed)
    barrier = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def commit() -> None:
        with httpx.Client(base_url=hub.url, headers=bearer(hub.admin_token)) as client:
            barrier.wait()
            answers.append(client.post(f"/api/v1/uploads/{upload}/commit"))

    racers = [threading.Thread(target=commit) for _ in range(2)]
    for racer in racers:
        racer.start()
    for racer in racers:
        racer.join(timeout=60)
    assert sorted(r.status_code for r in answers) == [200, 409]
    [loser] = [r for r in answers if r.status_code == 409]
    assert_problem(loser, 409, "conflict")
    assert admin.show("med/xray@1.0.0")["state"] == "published"
    assert len(_store_files(hub)) == 3


# A client that hangs up -----------------------------------------------------------------------


def test_a_client_that_disconnects_mid_upload_leaves_nothing(
    hub: RunningHub, admin: Client, http: httpx.Client, med: str, signed: SignedModel
) -> None:
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    data = (signed.folder / "model.safetensors").read_bytes()
    target = f"/api/v1/uploads/{upload}/files/model.safetensors"
    request_id = "hangup-0123456789"
    head = _head(hub, "PUT", target, content_length=str(len(data)), x_request_id=request_id)
    _raw(hub, head + data[: len(data) // 3], hang_up=True)

    def handled() -> bool:
        return any(json.loads(line)["request_id"] == request_id for line in admin.audit_lines())

    _until(handled, "record the interrupted upload")
    [entry] = [e for e in map(json.loads, admin.audit_lines()) if e["request_id"] == request_id]
    assert entry["action"] == "upload.file"
    assert entry["outcome"] == "failed"
    assert _store_files(hub) == []

    # The file can be sent again, and aborting the upload removes the version and its blobs.
    assert put_file(http, upload, "model.safetensors", data).status_code == 201
    assert len(_store_files(hub)) == 1
    assert http.delete(f"/api/v1/uploads/{upload}").status_code == 204
    assert _store_files(hub) == []
    assert_problem(put_file(http, upload, "config.json", b"{}"), 404, "not_found")
    with pytest.raises(bastion.NotFoundError):
        admin.show("med/xray@1.0.0")
    # The version number is free again.
    upload = open_upload(http, "med/xray", "1.0.0", signed)
    upload_all(http, upload, signed)
    assert http.post(f"/api/v1/uploads/{upload}/commit").json()["state"] == "published"


# JSON bodies and problem documents ---------------------------------------------------------------


def test_json_bodies_over_the_limit_are_refused(hub: RunningHub, http: httpx.Client) -> None:
    limit = hub.services.max_json_body
    too_big = json.dumps({"name": "lab", "trust_policy": "#" * limit}).encode()
    head = _head(hub, "POST", "/api/v1/namespaces", content_length=str(len(too_big)))
    assert _raw(hub, head) == 413  # refused on the declared length, before any body
    response = http.post(
        "/api/v1/namespaces",
        content=_chunks(too_big, 64 << 10),  # no content-length: counted as it arrives
        headers={"content-type": "application/json"},
    )
    body = assert_problem(response, 413, "payload_too_large")
    assert str(limit) in body["detail"]
    assert http.get("/api/v1/namespaces").json() == []


def test_errors_are_problem_documents(hub: RunningHub, http: httpx.Client, med: str) -> None:
    bad_policy = {"name": "lab", "trust_policy": "[["}
    cases: list[tuple[httpx.Response, int, str]] = [
        (http.get("/api/v1/no-such-route"), 404, "not_found"),
        (http.patch("/api/v1/namespaces"), 405, "method_not_allowed"),
        (http.get("/api/v1/models/med/xray/versions"), 404, "not_found"),
        (
            http.post("/api/v1/namespaces", content=b"{not json", headers=_JSON),
            400,
            "bad_input",
        ),
        (http.post("/api/v1/namespaces", json={"name": 3}), 400, "bad_input"),
        (http.post("/api/v1/namespaces", json=bad_policy), 400, "trust_policy_invalid"),
    ]
    for response, status, code in cases:
        body = assert_problem(response, status, code)
        assert body["instance"] == f"urn:bastion:request:{response.headers['x-request-id']}"


@pytest.mark.parametrize("path", ["/api/v1/namespaces/", "/api/v1/models/", "/livez/"])
def test_a_stray_trailing_slash_is_not_found_and_never_redirected(
    hub: RunningHub, http: httpx.Client, path: str
) -> None:
    """Starlette would answer 307 to the other spelling, built from the Host header."""
    response = http.get(path, headers={"host": "evil.example"})
    assert "location" not in response.headers
    assert_problem(response, 404, "not_found")


def test_an_audit_position_beyond_the_log_format_is_bad_input(
    hub: RunningHub, http: httpx.Client
) -> None:
    # Found by the API fuzz run: these answered 500 (the position did not fit the audit
    # entry's JSON integers, then SQLite's INTEGER).
    for after in (2**53, 10**23):
        response = http.get("/api/v1/audit/entries", params={"after": after})
        assert_problem(response, 400, "bad_input")
    assert http.get("/api/v1/audit/entries", params={"after": 2**53 - 1}).status_code == 200
