"""Access to the real hub: API keys on every route, the built-in roles, and the audit trail.

Every route but ``/livez`` needs a key (the routes are read from the application,
so a new one is covered without touching this file). Keys are shown once, stored
hashed, expire and can be revoked. Every state-changing request and every pull,
allowed or denied, leaves an audit entry naming who, what, which resource, the
outcome, where from, and the request id the caller was given.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

import bastion
from bastion.api import create_app
from bastion.client import Client
from tests.integration.hub.conftest import (
    RunningHub,
    assert_problem,
    bearer,
    make_key,
    open_upload,
    put_file,
    sign_beside,
)

_PARAMS = {
    "namespace": "med",
    "model": "xray",
    "version": "1.0.0",
    "alias": "prod",
    "path": "config.json",
    "upload_id": "0" * 32,
    "key_id": "a" * 16,
}


def _operations(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path template) of every route: the OpenAPI document, plus routes left out of it."""
    found = {
        (method.upper(), path)
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
    }
    for route in app.routes:
        if isinstance(route, APIRoute):
            found |= {(m, route.path_format) for m in route.methods or () if m != "HEAD"}
    return found


def _fill(template: str) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: _PARAMS.get(m.group(1), "x1"), template)


def _secret(token: str) -> str:
    """The secret part of ``bst_<16-character id>_<secret>`` (the secret may hold '_')."""
    assert re.fullmatch(r"bst_[a-z2-7]{16}_[A-Za-z0-9_-]{43}", token)
    return token[len("bst_") + 16 + 1 :]


def _entries(admin: Client) -> dict[str, dict[str, Any]]:
    """The audit log by request id (the last entry wins where a test reuses one)."""
    return {e["request_id"]: e for e in (json.loads(line) for line in admin.audit_lines())}


#: Routes anyone may call: liveness, signing in, and enrolment with its one-time code.
PUBLIC = {
    ("GET", "/livez"),
    ("GET", "/v2/health/live"),
    ("POST", "/api/v1/sessions"),
    ("POST", "/api/v1/enrolment/password"),
    ("POST", "/api/v1/enrolment/totp"),
}


def test_every_route_but_the_public_ones_needs_a_credential(
    hub: RunningHub, admin: Client, med: str
) -> None:
    operations = _operations(create_app(hub.services))
    assert len(operations) >= 40
    assert operations >= PUBLIC
    request_ids: dict[str, tuple[str, str]] = {}
    with httpx.Client(base_url=hub.url) as anonymous:
        for method, template in sorted(operations):
            body: dict[str, object] | None = {} if method in ("POST", "PUT", "PATCH") else None
            response = anonymous.request(method, _fill(template), json=body)
            if (method, template) in PUBLIC:
                assert response.status_code in (200, 400), (method, template)
                continue
            problem = assert_problem(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "bst_" in problem["detail"]
            request_ids[response.headers["x-request-id"]] = (method, template)
    # Every refused change and pull is in the audit log, made by nobody; refused plain reads
    # are counted against the address instead (a flood must not write the log at its rate),
    # and so are refused inferences, which leave an inference record.
    entries = _entries(admin)
    audited_reads = {"version.pull", "audit.export"}
    for request_id, (method, template) in request_ids.items():
        plain_read = method == "GET" and "/files/" not in template
        if (plain_read and not template.endswith("/entries")) or template.endswith("/infer"):
            assert request_id not in entries, (method, template)
            continue
        entry = entries[request_id]
        assert entry["actor"] == "anonymous", (method, template)
        assert entry["outcome"] == "denied", (method, template)
        assert entry["details"]["status"] == 401
        assert method != "GET" or entry["action"] in audited_reads


_MALFORMED = (
    "Bearer",
    "Bearer bst_",
    "Bearer bst_abc_def",
    "Bearer not-a-key-at-all",
    "Bearer bst_aaaaaaaaaaaaaaaa_" + "A" * 43,  # the right shape, an unknown key
    "Basic YWRtaW46YWRtaW4=",
    "bst_aaaaaaaaaaaaaaaa_" + "A" * 43,  # no scheme
)


def test_malformed_and_unknown_tokens_are_refused(hub: RunningHub) -> None:
    with httpx.Client(base_url=hub.url) as client:
        for authorization in _MALFORMED:
            headers = {"authorization": authorization}
            response = client.get("/api/v1/whoami", headers=headers)
            assert_problem(response, 401, "unauthenticated")
            response = client.post("/api/v1/namespaces", json={}, headers=headers)
            assert_problem(response, 401, "unauthenticated")


def test_a_wrong_secret_for_a_real_key_is_refused(hub: RunningHub) -> None:
    secret = _secret(hub.admin_token)
    forged = hub.admin_token[: -len(secret)] + ("B" if secret[0] != "B" else "C") + secret[1:]
    with httpx.Client(base_url=hub.url, headers=bearer(forged)) as client:
        assert_problem(client.get("/api/v1/whoami"), 401, "unauthenticated")


def test_a_reader_reads_and_changes_nothing(
    hub: RunningHub,
    admin: Client,
    http: httpx.Client,
    med: str,
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    signed = sign_beside(safe_model, signing_key)
    upload = open_upload(http, "med/xray", "2.0.0", signed)
    with hub.client(make_key(admin, ("med", "consumer"))) as reader:
        assert reader.pull("med/xray@1.0.0", tmp_path / "pulled")["files"] == 3
        assert [m["name"] for m in reader.models()] == ["med/xray"]
        with pytest.raises(bastion.PermissionDeniedError, match=r"version\.push on Model"):
            reader.push(safe_model, "med/xray@3.0.0", key=signing_key)
        with pytest.raises(bastion.PermissionDeniedError):
            reader.set_alias("med/xray", "prod", "1.0.0")
        with pytest.raises(bastion.PermissionDeniedError):
            reader.yank("med/xray@1.0.0", "not mine to yank")
        with pytest.raises(bastion.PermissionDeniedError):
            reader.create_namespace("lab", bastion.TrustPolicy.for_keys([signing_key.public_key]))
        with pytest.raises(bastion.PermissionDeniedError):
            reader.rotate_kek()
        with pytest.raises(bastion.PermissionDeniedError):
            reader.api_keys()
        with pytest.raises(bastion.PermissionDeniedError):
            list(reader.audit_lines())
    token = make_key(admin, ("med", "consumer"))
    with httpx.Client(base_url=hub.url, headers=bearer(token)) as raw:
        name = next(iter(signed.files))
        assert_problem(put_file(raw, upload, name, b"x"), 403, "forbidden")
        assert_problem(raw.post(f"/api/v1/uploads/{upload}/commit"), 403, "forbidden")
        assert_problem(raw.delete(f"/api/v1/uploads/{upload}"), 403, "forbidden")
    shown = admin.show("med/xray@1.0.0")
    assert shown["aliases"] == []
    assert shown["yanked"] is False
    assert [v["version"] for v in admin.versions("med/xray")] == ["1.0.0"]
    assert admin.namespaces()[0]["name"] == "med"
    assert len(admin.namespaces()) == 1


def test_a_publisher_of_one_namespace_cannot_touch_another(
    hub: RunningHub,
    admin: Client,
    med: str,
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    admin.create_namespace("lab", bastion.TrustPolicy.for_keys([signing_key.public_key]))
    admin.push(safe_model, "lab/probe@1.0.0", key=signing_key)
    with hub.client(make_key(admin, ("med", "publisher"))) as publisher:
        assert publisher.push(safe_model, "med/xray@1.0.0", key=signing_key)["state"] == (
            "published"
        )
        publisher.set_alias("med/xray", "prod", "1.0.0")
        assert [n["name"] for n in publisher.namespaces()] == ["med"]
        assert [m["name"] for m in publisher.models()] == ["med/xray"]
        with pytest.raises(bastion.PermissionDeniedError, match="lab/probe"):
            publisher.push(safe_model, "lab/probe@2.0.0", key=signing_key)
        with pytest.raises(bastion.PermissionDeniedError):
            publisher.pull("lab/probe@1.0.0", tmp_path / "stolen")
        assert not (tmp_path / "stolen").exists()
        with pytest.raises(bastion.PermissionDeniedError):
            publisher.show("lab/probe@1.0.0")
        with pytest.raises(bastion.PermissionDeniedError):
            publisher.versions("lab/probe")
        with pytest.raises(bastion.PermissionDeniedError):
            publisher.set_alias("lab/probe", "prod", "1.0.0")
        with pytest.raises(bastion.PermissionDeniedError):
            publisher.yank("lab/probe@1.0.0", "sabotage")
        with pytest.raises(bastion.PermissionDeniedError):  # the trust policy is admin's
            publisher.set_trust("med", bastion.TrustPolicy.for_keys([signing_key.public_key]))
    assert [v["version"] for v in admin.versions("lab/probe")] == ["1.0.0"]
    shown = admin.show("lab/probe@1.0.0")
    assert shown["aliases"] == []
    assert shown["yanked"] is False


def test_a_key_named_by_its_whole_token_is_revoked_and_its_secret_kept_out_of_the_log(
    hub: RunningHub, admin: Client, med: str
) -> None:
    # Revoking by the token (not its id) once echoed the secret and recorded it in the log.
    issued = admin.create_api_key("leaked", [("med", "consumer")], expires_in_days=1)
    token, secret = issued["token"], issued["token"].split("_", 2)[2]
    admin.revoke_api_key(token)
    with hub.client(token) as leaked, pytest.raises(bastion.AuthenticationError):
        leaked.whoami()
    other = admin.create_api_key("other", [("med", "consumer")], expires_in_days=1)
    with httpx.Client(base_url=hub.url, headers=bearer(hub.admin_token)) as http:
        rotated = http.post(f"/api/v1/api-keys/{other['token']}/rotate")  # another client
        assert rotated.status_code == 200, rotated.text
        assert rotated.json()["id"] == other["id"]
        typo = http.delete(f"/api/v1/api-keys/{other['token']}x")
        # A person's session token pasted instead: as much a secret as a key.
        session = "bss_" + "b" * 16 + "_" + "S" * 43
        assert_problem(http.delete(f"/api/v1/api-keys/{session}"), 404, "not_found")
    assert_problem(typo, 404, "not_found")
    assert other["token"] not in typo.text
    with pytest.raises(bastion.UsageError) as refused:
        admin.revoke_api_key(other["token"] + "x")
    assert other["token"] not in refused.value.message
    log = "\n".join(hub.services.audit_reader.entries(limit=10_000))
    for leaked_secret in (secret, other["token"].split("_", 2)[2], "S" * 43):
        assert leaked_secret not in log
    assert f"key:{issued['id']}" in log


def test_expired_and_revoked_keys_are_refused(hub: RunningHub, admin: Client, med: str) -> None:
    issued = admin.create_api_key("ci", [("med", "consumer")], expires_in_days=1)
    with hub.client(issued["token"]) as ci:
        assert ci.whoami()["key_id"] == issued["id"]
        admin.revoke_api_key(issued["id"])
        with pytest.raises(bastion.AuthenticationError):
            ci.whoami()
        with pytest.raises(bastion.AuthenticationError):
            ci.models()
    [listed] = [k for k in admin.api_keys() if k["id"] == issued["id"]]
    assert listed["revoked_at"] is not None

    now = datetime.now(UTC)
    expired = hub.services.api_keys.create(
        "old",
        [("med", "consumer")],
        created_by="test",
        now=now - timedelta(days=2),
        expires_at=now - timedelta(seconds=1),
    )
    with hub.client(expired.token) as old:
        with pytest.raises(bastion.AuthenticationError, match="expired"):
            old.whoami()
        with pytest.raises(bastion.AuthenticationError):
            old.namespaces()


def test_tokens_are_shown_once_and_never_logged(
    hub: RunningHub, admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey
) -> None:
    issued = admin.create_api_key("ci", [("med", "publisher")], expires_in_days=30)
    token = issued["token"]
    secret = _secret(token)
    assert token.startswith(f"bst_{issued['id']}_")
    with hub.client(token) as ci:
        ci.push(safe_model, "med/xray@1.0.0", key=signing_key)
        with pytest.raises(bastion.PermissionDeniedError):
            ci.rotate_kek()
    forged = token[:-1] + ("x" if token[-1] != "x" else "y")
    with httpx.Client(base_url=hub.url, headers=bearer(forged)) as wrong:
        response = wrong.post("/api/v1/namespaces", json={"name": "x", "trust_policy": ""})
        assert_problem(response, 401, "unauthenticated")

    listing = admin.api_keys()
    assert {k["id"] for k in listing} >= {issued["id"]}
    assert all("token" not in k and "secret_hash" not in k for k in listing)
    assert secret not in json.dumps(listing)
    audit = "\n".join(admin.audit_lines())
    assert issued["id"] in audit  # the key is named by its id ...
    assert secret not in audit  # ... never by its secret
    assert secret[:-1] not in audit
    assert _secret(hub.admin_token) not in audit
    stored = b"".join(p.read_bytes() for p in hub.data_dir.glob("hub.sqlite*"))
    assert secret.encode() not in stored
    assert _secret(hub.admin_token).encode() not in stored


# The audit trail --------------------------------------------------------------------------------


def test_every_change_and_every_pull_is_audited_with_its_request_id(
    hub: RunningHub,
    admin: Client,
    http: httpx.Client,
    med: str,
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    trust = bastion.TrustPolicy.for_keys([signing_key.public_key]).to_toml()
    signed = sign_beside(safe_model, signing_key)
    reader_of_lab = make_key(admin, ("lab", "consumer"))
    key_id = reader_of_lab.split("_")[1]
    pull_url = "/api/v1/models/med/xray/versions/1.0.0/files/config.json"
    expected: list[tuple[httpx.Response, str, str, str]] = []

    def step(
        client: httpx.Client,
        method: str,
        url: str,
        action: str,
        resource: str,
        outcome: str = "allowed",
        **kwargs: Any,
    ) -> httpx.Response:
        response = client.request(method, url, **kwargs)
        expected.append((response, action, resource, outcome))
        return response

    ref, ref2, alias = "med/xray@1.0.0", "med/xray@2.0.0", "med/xray:prod"
    versions = "/api/v1/models/med/xray/versions"
    aliases = "/api/v1/models/med/xray/aliases"
    trust_body = {"trust_policy": trust}
    lab, bad = {"name": "lab", **trust_body}, {"name": "Bad Name", **trust_body}
    first, second = signed.start_body("1.0.0"), signed.start_body("2.0.0")
    step(http, "POST", "/api/v1/namespaces", "namespace.create", "namespace:lab", json=lab)
    step(
        http,
        "PUT",
        "/api/v1/namespaces/lab/trust-policy",
        "namespace.trust",
        "namespace:lab",
        json=trust_body,
    )
    upload = step(http, "POST", versions, "version.push", ref, json=first).json()["upload_id"]
    for name in signed.files:
        data = (safe_model / name).read_bytes()
        step(
            http, "PUT", f"/api/v1/uploads/{upload}/files/{name}", "upload.file", ref, content=data
        )
    step(http, "POST", f"/api/v1/uploads/{upload}/commit", "upload.commit", ref)
    step(http, "PUT", f"{aliases}/prod", "alias.set", alias, json={"version": "1.0.0"})
    step(http, "DELETE", f"{aliases}/prod", "alias.delete", alias)
    step(http, "GET", pull_url, "version.pull", ref)
    with httpx.Client(base_url=hub.url, headers=bearer(reader_of_lab)) as outsider:
        step(outsider, "GET", pull_url, "version.pull", ref, "denied")
    with httpx.Client(base_url=hub.url) as anonymous:
        step(anonymous, "GET", pull_url, "version.pull", ref, "denied")
    step(http, "POST", f"{versions}/1.0.0/yank", "version.yank", ref, json={"reason": "CVE"})
    step(http, "GET", pull_url, "version.pull", ref, "failed")  # yanked: 410
    step(http, "GET", pull_url, "version.pull", ref, params={"allow_yanked": "true"})
    upload = step(http, "POST", versions, "version.push", ref2, json=second).json()["upload_id"]
    step(http, "DELETE", f"/api/v1/uploads/{upload}", "upload.abort", ref2)
    step(
        http,
        "POST",
        "/api/v1/namespaces",
        "namespace.create",
        "namespace:Bad Name",
        "failed",
        json=bad,
    )
    step(http, "POST", "/api/v1/admin/kek/rotate", "kek.rotate", "/api/v1/admin/kek/rotate")
    step(http, "POST", "/api/v1/audit/checkpoints", "audit.checkpoint", "/api/v1/audit/checkpoints")
    step(http, "DELETE", f"/api/v1/api-keys/{key_id}", "apikey.revoke", f"key:{key_id}")
    step(
        http,
        "POST",
        "/api/v1/api-keys",
        "apikey.create",
        "/api/v1/api-keys",
        "failed",
        json={"name": "n", "roles": []},
    )

    entries = _entries(admin)
    admin_actor = "key:" + hub.admin_token.split("_")[1]
    for response, action, resource, outcome in expected:
        entry = entries[response.headers["x-request-id"]]
        what = (action, resource, response.status_code)
        assert entry["action"] == action, what
        assert entry["resource"] == resource, what
        assert entry["outcome"] == outcome, what
        assert entry["source"] == "127.0.0.1", what
        assert entry["details"]["status"] == response.status_code, what
        assert entry["time"].endswith("Z"), what
        sent = response.request.headers.get("authorization")
        actor = {None: "anonymous", f"Bearer {reader_of_lab}": f"key:{key_id}"}
        assert entry["actor"] == actor.get(sent, admin_actor), what
    assert len({r.headers["x-request-id"] for r, *_ in expected}) == len(expected)


def test_a_refused_pull_through_the_sdk_is_audited(
    hub: RunningHub,
    admin: Client,
    med: str,
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> None:
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    token = make_key(admin, ("lab", "consumer"))
    with hub.client(token) as outsider, pytest.raises(bastion.PermissionDeniedError):
        outsider.pull("med/xray@1.0.0", tmp_path / "stolen")
    assert not (tmp_path / "stolen").exists()
    actor = "key:" + token.split("_")[1]
    refused = [e for e in _entries(admin).values() if e["actor"] == actor]
    assert refused
    assert {(e["resource"], e["outcome"]) for e in refused} == {("med/xray@1.0.0", "denied")}


def test_the_callers_request_id_is_kept_and_a_bad_one_replaced(
    hub: RunningHub, admin: Client, http: httpx.Client
) -> None:
    trust = bastion.TrustPolicy.for_keys([bastion.generate_key("ed25519").public_key]).to_toml()
    given = http.post(
        "/api/v1/namespaces",
        json={"name": "lab", "trust_policy": trust},
        headers={"x-request-id": "trace-0123456789"},
    )
    assert given.status_code == 201
    assert given.headers["x-request-id"] == "trace-0123456789"
    bad = http.post(
        "/api/v1/namespaces",
        json={"name": "lab2", "trust_policy": trust},
        headers={"x-request-id": "short"},
    )
    replaced = bad.headers["x-request-id"]
    assert replaced != "short"
    assert re.fullmatch(r"[A-Za-z0-9._-]{8,64}", replaced)
    entries = _entries(admin)
    assert entries["trace-0123456789"]["resource"] == "namespace:lab"
    assert entries[replaced]["resource"] == "namespace:lab2"
    assert "short" not in entries


def test_a_request_whose_audit_entry_cannot_be_written_is_not_answered_as_a_success(
    hub: RunningHub, admin: Client, signing_key: bastion.PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry is written before the response leaves; when that fails the caller gets a 500."""

    def failing(**_fields: object) -> None:
        raise OSError("the audit table is gone")

    monkeypatch.setattr(hub.services.audit, "record", failing)
    policy = bastion.TrustPolicy.for_keys([signing_key.public_key])
    with pytest.raises(bastion.InternalError, match="audit log"):
        admin.create_namespace("lab", policy)
    response = httpx.get(f"{hub.url}/livez")  # not audited, so still served
    assert response.status_code == 200


def test_the_openapi_document_describes_invalid_input_as_a_400_problem(hub: RunningHub) -> None:
    with httpx.Client(base_url=hub.url, headers=bearer(hub.admin_token)) as client:
        document = client.get("/api/v1/openapi.json").json()
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert not [op for op in operations if "422" in op["responses"]]
    with_bodies = [op for op in operations if "requestBody" in op]
    assert with_bodies
    for op in with_bodies:
        problem = op["responses"]["400"]["content"]["application/problem+json"]["schema"]
        assert "code" in problem["required"]
