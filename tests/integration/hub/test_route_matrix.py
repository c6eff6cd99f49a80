"""Every route of the hub against the expected allow/deny matrix for every role.

The routes are read from the application, so a route added without a row in
``REQUESTS`` fails ``test_every_route_is_in_the_matrix``; the roles each action allows
come from the policy tests' matrix (``tests/unit/auth/test_policy.py``). Each role gets
an API key on every namespace with every action in its scope, so only the role decides.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import bastion
from bastion.api import create_app
from bastion.auth import ACTIONS, POLICY_ROLES
from bastion.client import Client
from tests.integration.hub.conftest import RunningHub, bearer, sign_beside
from tests.integration.hub.test_access import PUBLIC, _operations
from tests.support.models import write_onnx_model
from tests.unit.auth.test_policy import EXPECTED

_ROLE = {"namespace": "med", "role": "consumer"}
#: (method, path template) -> (action, path, JSON body or raw bytes). ``{upload}`` is an
#: open upload; version 1.0.0 of med/xray is published; everything else named is absent.
REQUESTS: dict[tuple[str, str], tuple[str, str, Any]] = {
    ("GET", "/api/v1/openapi.json"): ("openapi", "/api/v1/openapi.json", None),
    ("GET", "/api/v1/namespaces"): ("namespace.list", "/api/v1/namespaces", None),
    ("POST", "/api/v1/namespaces"): (
        "namespace.create",
        "/api/v1/namespaces",
        {"name": "lab", "trust_policy": "not toml ["},
    ),
    ("GET", "/api/v1/namespaces/{namespace}"): ("namespace.show", "/api/v1/namespaces/med", None),
    ("PUT", "/api/v1/namespaces/{namespace}/trust-policy"): (
        "namespace.trust",
        "/api/v1/namespaces/med/trust-policy",
        {"trust_policy": "not toml ["},
    ),
    ("GET", "/api/v1/models"): ("model.list", "/api/v1/models", None),
    ("GET", "/api/v1/models/{namespace}/{model}/versions"): (
        "version.list",
        "/api/v1/models/med/xray/versions",
        None,
    ),
    ("GET", "/api/v1/models/{namespace}/{model}/versions/{version}"): (
        "version.show",
        "/api/v1/models/med/xray/versions/1.0.0",
        None,
    ),
    ("GET", "/api/v1/models/{namespace}/{model}/aliases/{alias}"): (
        "alias.show",
        "/api/v1/models/med/xray/aliases/nosuch",
        None,
    ),
    ("PUT", "/api/v1/models/{namespace}/{model}/aliases/{alias}"): (
        "alias.set",
        "/api/v1/models/med/xray/aliases/prod",
        {"version": "9.9.9"},
    ),
    ("DELETE", "/api/v1/models/{namespace}/{model}/aliases/{alias}"): (
        "alias.delete",
        "/api/v1/models/med/xray/aliases/nosuch",
        None,
    ),
    ("PUT", "/api/v1/models/{namespace}/{model}/classification"): (
        "model.classify",
        "/api/v1/models/med/xray/classification",
        {"classification": "restricted"},
    ),
    ("POST", "/api/v1/models/{namespace}/{model}/versions/{version}/yank"): (
        "version.yank",
        "/api/v1/models/med/xray/versions/9.9.9/yank",
        {"reason": "matrix"},
    ),
    ("GET", "/api/v1/models/{namespace}/{model}/versions/{version}/files/{path}"): (
        "version.pull",
        "/api/v1/models/med/xray/versions/1.0.0/files/config.json",
        None,
    ),
    ("POST", "/api/v1/api-keys"): (
        "apikey.create",
        "/api/v1/api-keys",
        {"name": "made", "roles": [_ROLE]},
    ),
    ("GET", "/api/v1/api-keys"): ("apikey.list", "/api/v1/api-keys", None),
    ("DELETE", "/api/v1/api-keys/{key_id}"): (
        "apikey.revoke",
        "/api/v1/api-keys/" + "a" * 16,
        None,
    ),
    ("POST", "/api/v1/api-keys/{key_id}/rotate"): (
        "apikey.rotate",
        "/api/v1/api-keys/" + "a" * 16 + "/rotate",
        None,
    ),
    ("GET", "/api/v1/whoami"): ("whoami", "/api/v1/whoami", None),
    ("POST", "/api/v1/admin/kek/rotate"): ("kek.rotate", "/api/v1/admin/kek/rotate", None),
    ("GET", "/api/v1/audit/entries"): ("audit.export", "/api/v1/audit/entries", None),
    ("GET", "/api/v1/audit/checkpoints"): ("audit.checkpoints", "/api/v1/audit/checkpoints", None),
    ("POST", "/api/v1/audit/checkpoints"): ("audit.checkpoint", "/api/v1/audit/checkpoints", None),
    ("GET", "/api/v1/audit/key"): ("audit.key", "/api/v1/audit/key", None),
    ("POST", "/api/v1/models/{namespace}/{model}/versions"): (
        "version.push",
        "/api/v1/models/med/xray/versions",
        {"version": "9.0.0", "signature": base64.b64encode(b"{}").decode(), "files": {"a": 1}},
    ),
    ("PUT", "/api/v1/uploads/{upload_id}/files/{path}"): (
        "upload.file",
        "/api/v1/uploads/{upload}/files/config.json",
        b"{}",
    ),
    ("POST", "/api/v1/uploads/{upload_id}/commit"): (
        "upload.commit",
        "/api/v1/uploads/{upload}/commit",
        None,
    ),
    ("DELETE", "/api/v1/uploads/{upload_id}"): ("upload.abort", "/api/v1/uploads/{upload}", None),
    ("POST", "/api/v1/sessions/current/mfa"): (
        "session.mfa",
        "/api/v1/sessions/current/mfa",
        {"code": "123456"},
    ),
    ("DELETE", "/api/v1/sessions/current"): ("session.delete", "/api/v1/sessions/current", None),
    ("GET", "/api/v1/users"): ("user.list", "/api/v1/users", None),
    ("POST", "/api/v1/users"): ("user.create", "/api/v1/users", {"name": "x", "roles": [_ROLE]}),
    ("PUT", "/api/v1/users/{name}/roles"): (
        "user.update",
        "/api/v1/users/nosuch/roles",
        {"roles": [_ROLE]},
    ),
    ("POST", "/api/v1/users/{name}/reset"): ("user.reset", "/api/v1/users/nosuch/reset", None),
    ("POST", "/api/v1/users/{name}/unlock"): ("user.unlock", "/api/v1/users/nosuch/unlock", None),
    ("DELETE", "/api/v1/users/{name}"): ("user.delete", "/api/v1/users/nosuch", None),
    ("GET", "/api/v1/policies"): ("policy.show", "/api/v1/policies", None),
    ("GET", "/api/v1/policies/history"): ("policy.history", "/api/v1/policies/history", None),
    ("PUT", "/api/v1/policies"): (
        "policy.apply",
        "/api/v1/policies",
        {"files": [{"name": "broken.cedar", "text": "permit (principal"}]},
    ),
    # The gateway: med/cancer@1.0.0 (ONNX) is deployed as "cancer".
    ("GET", "/v2"): ("gateway.status", "/v2", None),
    ("GET", "/v2/health/ready"): ("gateway.status", "/v2/health/ready", None),
    ("GET", "/v2/models/{deployment}"): ("invoke", "/v2/models/cancer", None),
    ("GET", "/v2/models/{deployment}/ready"): ("invoke", "/v2/models/cancer/ready", None),
    ("POST", "/v2/models/{deployment}/infer"): (
        "invoke",
        "/v2/models/cancer/infer",
        {"inputs": [{"name": "X", "shape": [1, 30], "datatype": "FP32", "data": [0.5] * 30}]},
    ),
    ("GET", "/metrics"): ("gateway.metrics", "/metrics", None),
    ("GET", "/api/v1/deployments"): ("deployment.list", "/api/v1/deployments", None),
    ("GET", "/api/v1/deployments/{deployment}"): (
        "deployment.show",
        "/api/v1/deployments/cancer",
        None,
    ),
    ("POST", "/api/v1/deployments"): (
        "deploy",
        "/api/v1/deployments",
        {"name": "other", "versions": ["med/cancer@9.9.9"]},
    ),
    ("POST", "/api/v1/deployments/{deployment}/promote"): (
        "deployment.manage",
        "/api/v1/deployments/cancer/promote",
        None,
    ),
    ("POST", "/api/v1/deployments/{deployment}/rollback"): (
        "deployment.manage",
        "/api/v1/deployments/cancer/rollback",
        {"reason": "matrix"},
    ),
    ("DELETE", "/api/v1/deployments/{deployment}"): (
        "deployment.manage",
        "/api/v1/deployments/nosuch",
        None,
    ),
    ("GET", "/api/v1/inference-records"): (
        "inference.records",
        "/api/v1/inference-records",
        None,
    ),
}


#: Lists that span namespaces: a decision per namespace filters them, so a caller allowed
#: nowhere gets an empty list, not a refusal.
FILTERED = {"model.list", "deployment.list"}


def _normalise(template: str) -> str:
    return template.replace("{path:path}", "{path}")


def test_every_route_is_in_the_matrix(hub: RunningHub) -> None:
    operations = {(m, _normalise(t)) for m, t in _operations(create_app(hub.services))}
    assert operations - PUBLIC == set(REQUESTS)
    assert {action for action, _, _ in REQUESTS.values()} <= set(ACTIONS)
    assert set(EXPECTED) == set(ACTIONS)


@pytest.fixture
def published(
    hub: RunningHub,
    admin: Client,
    med: str,
    safe_model: Path,
    signing_key: bastion.PrivateKey,
    tmp_path: Path,
) -> str:
    """Publish med/xray@1.0.0 and open an upload of 2.0.0; the upload's id. Also publish
    med/cancer@1.0.0 (ONNX) and deploy it as "cancer"."""
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    admin.push(write_onnx_model(tmp_path / "cancer"), "med/cancer@1.0.0", key=signing_key)
    admin.deploy("med/cancer@1.0.0", name="cancer")
    signed = sign_beside(safe_model, signing_key)
    with httpx.Client(base_url=hub.url, headers=bearer(hub.admin_token)) as h:
        response = h.post("/api/v1/models/med/xray/versions", json=signed.start_body("2.0.0"))
        assert response.status_code == 201, response.text
        upload_id: str = response.json()["upload_id"]
    return upload_id


def test_every_route_allows_exactly_the_roles_the_matrix_names(
    hub: RunningHub, admin: Client, published: str
) -> None:
    keys = {
        role: admin.create_api_key(f"matrix-{role}", [("*", role)], scope=["*"])["token"]
        for role in POLICY_ROLES
    }
    checked = 0
    # The upload is aborted last: the other upload routes need it open.
    ordered = sorted(REQUESTS.items(), key=lambda item: (item[1][0] == "upload.abort", item[0]))
    for (method, _template), (action, path, body) in ordered:
        allowed_roles = set(EXPECTED[action].split())
        # Denied roles first: an allowed request may consume what it names (an upload).
        for role in sorted(POLICY_ROLES, key=lambda r: (r in allowed_roles, r)):
            url = hub.url + path.replace("{upload}", published)
            kwargs: dict[str, Any] = {}
            if isinstance(body, bytes):
                kwargs["content"] = body
            elif body is not None:
                kwargs["json"] = body
            response = httpx.request(method, url, headers=bearer(keys[role]), **kwargs)
            what = (method, path, role, response.status_code, response.text[:300])
            assert response.status_code < 500, what
            if role in allowed_roles:
                assert response.status_code not in (401, 403), what
            elif action in FILTERED:
                assert response.status_code == 200, what
                assert response.json() == [], what
            else:
                assert response.status_code == 403, what
                assert response.json()["code"] == "forbidden", what
            checked += 1
    assert checked == len(REQUESTS) * len(POLICY_ROLES)


def test_denials_are_audited_with_the_deciding_policies(
    hub: RunningHub, admin: Client, med: str
) -> None:
    scoped = admin.create_api_key("pull-only", [("med", "publisher")], scope=["consume"])
    with httpx.Client(base_url=hub.url, headers=bearer(scoped["token"])) as client:
        response = client.put("/api/v1/models/med/xray/aliases/prod", json={"version": "1.0.0"})
    assert response.status_code == 403
    request_id = response.headers["x-request-id"]
    [entry] = [
        e
        for e in (json.loads(line) for line in admin.audit_lines())
        if e["request_id"] == request_id
    ]
    assert entry["outcome"] == "denied"
    assert entry["action"] == "alias.set"
    assert entry["details"]["policy"] == {
        "decision": "deny",
        "reasons": ["guard.key-scope"],
        "errors": [],
    }


def test_a_policy_can_keep_restricted_models_to_an_address_range(
    hub: RunningHub, admin: Client, published: str
) -> None:
    """The model's classification reaches the policies: a forbid on it takes effect."""
    reader = admin.create_api_key("reader", [("med", "consumer")])["token"]
    pull = "/api/v1/models/med/xray/versions/1.0.0/files/config.json"
    with httpx.Client(base_url=hub.url, headers=bearer(reader)) as client:
        assert client.get(pull).status_code == 200
        assert admin.classify("med/xray", "restricted")["classification"] == "restricted"
        assert client.get(pull).status_code == 200  # the defaults do not look at it
        current = admin.policies()["files"]
        restricted = (
            '@id("restricted-from-10-only")\n'
            'forbid (principal, action == Bastion::Action::"version.pull", resource)\n'
            'when { resource is Bastion::Version && resource.classification == "restricted" }\n'
            'unless { context.source_ip.isInRange(ip("10.0.0.0/8")) };\n'
        )
        admin.apply_policies({**current, "restricted.cedar": restricted}, comment="matrix")
        refused = client.get(pull)
        assert refused.status_code == 403
        assert client.get("/api/v1/models/med/xray/versions/1.0.0").status_code == 200
    classes = {m["name"]: m["classification"] for m in admin.models()}
    assert classes == {"med/cancer": "internal", "med/xray": "restricted"}
