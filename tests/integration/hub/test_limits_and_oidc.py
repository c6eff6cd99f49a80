"""Rate limits and OIDC bearer tokens on the real hub.

Limits answer 429 with ``Retry-After`` and ``RateLimit-*`` headers, before routing, and are
counted rather than written to the audit log one by one; a bearer JWT from a configured
issuer is a principal whose roles come from its groups.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

import bastion
from bastion.auth._ratelimit import RateLimits
from bastion.client import Client
from tests.integration.hub.conftest import RunningHub, assert_problem, bearer
from tests.support.oidc_provider import OidcProvider


def test_a_caller_over_its_limit_gets_429_with_the_headers(
    hub_with: Callable[..., RunningHub],
) -> None:
    limits = RateLimits(principal="5/minute", anonymous="3/minute", models={"*": "50/minute"})
    hub = hub_with(limits=limits)
    seen = []
    with httpx.Client(base_url=hub.url, headers=bearer(hub.admin_token)) as http:
        for _ in range(5):
            response = http.get("/api/v1/whoami")
            assert response.status_code == 200
            assert response.headers["ratelimit-limit"] == "5"
            seen.append(int(response.headers["ratelimit-remaining"]))
        assert seen == [4, 3, 2, 1, 0]
        refused = http.get("/api/v1/whoami")
    problem = assert_problem(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert problem["retry_after"] == int(refused.headers["retry-after"])
    assert refused.headers["ratelimit-remaining"] == "0"
    assert "w=60" in refused.headers["ratelimit-policy"]
    # The refusal is counted, not audited; callers without a credential have their own
    # limit per address, and liveness has none.
    audited = {json.loads(line)["request_id"] for line in _lines(hub)}
    assert refused.headers["x-request-id"] not in audited
    with httpx.Client(base_url=hub.url) as anon:
        for _ in range(3):
            assert anon.post("/api/v1/sessions", json={}).status_code == 400
        assert_problem(anon.post("/api/v1/sessions", json={}), 429, "rate_limited")
        assert anon.get("/livez").status_code == 200


def test_a_flood_of_bad_keys_is_refused_before_the_keys_are_looked_at(
    hub_with: Callable[..., RunningHub],
) -> None:
    limits = RateLimits(login_failure_limit="4/minute", principal="1000/minute")
    hub = hub_with(limits=limits)
    forged = "bst_" + "a" * 16 + "_" + "A" * 43
    with httpx.Client(base_url=hub.url, headers=bearer(forged)) as http:
        statuses = [http.get("/api/v1/whoami").status_code for _ in range(6)]
        # Once blocked, changes are refused before their credential is looked at too.
        posts = [http.post("/api/v1/namespaces", json={}).status_code for _ in range(2)]
    assert statuses == [401, 401, 401, 401, 429, 429]
    assert posts == [429, 429]
    entries = [json.loads(line) for line in _lines(hub)]
    # Refused plain reads are counted against the address, not written one by one.
    assert [e for e in entries if e["action"] == "whoami"] == []


def test_refused_changes_are_audited(hub_with: Callable[..., RunningHub]) -> None:
    hub = hub_with()
    forged = "bst_" + "a" * 16 + "_" + "A" * 43
    with httpx.Client(base_url=hub.url, headers=bearer(forged)) as http:
        response = http.post("/api/v1/namespaces", json={})
    assert response.status_code == 401
    entries = {json.loads(line)["request_id"]: json.loads(line) for line in _lines(hub)}
    entry = entries[response.headers["x-request-id"]]
    assert (entry["action"], entry["outcome"], entry["actor"]) == (
        "namespace.create",
        "denied",
        "anonymous",
    )


def _lines(hub: RunningHub) -> list[str]:
    return list(hub.services.audit_reader.entries(after=0, limit=10_000))


def test_an_oidc_token_is_a_principal_with_roles_from_its_groups(
    hub_with: Callable[..., RunningHub], tmp_path: Path
) -> None:
    with OidcProvider(("RS256",)) as idp:
        config = tmp_path / "access.toml"
        config.write_text(
            "[[oidc]]\n"
            f'issuer = "{idp.issuer}"\n'
            'audience = "https://hub.example.test"\n'
            'roles = { ml-eng = ["publisher:med"], auditors = "auditor:*" }\n'
        )
        hub = hub_with(access_config=config)
        now = datetime.now(UTC)
        token = idp.mint(idp.claims(now=now) | {"groups": ["ml-eng"]})
        with httpx.Client(base_url=hub.url, headers=bearer(token)) as http:
            who = http.get("/api/v1/whoami")
            assert who.status_code == 200, who.text
            body = who.json()
            assert body["kind"] == "OidcSubject"
            assert body["auth_method"] == "oidc"
            assert body["roles"] == [{"namespace": "med", "role": "publisher"}]
            assert body["actor"] == f"oidc:{idp.issuer}#user-123"
            denied = http.post("/api/v1/namespaces", json={"name": "lab", "trust_policy": "x"})
            assert_problem(denied, 403, "forbidden")
        wrong_audience = idp.mint(idp.claims(now=now) | {"aud": "https://elsewhere.test"})
        stranger = idp.mint(idp.claims(now=now) | {"groups": ["visitors"]})
        with httpx.Client(base_url=hub.url) as http:
            refused = http.get("/api/v1/whoami", headers=bearer(wrong_audience))
            assert_problem(refused, 401, "unauthenticated")
            nobody = http.get("/api/v1/whoami", headers=bearer(stranger))
            assert nobody.json()["roles"] == []
            listing = http.get("/api/v1/namespaces", headers=bearer(stranger))
            assert listing.json() == []


def test_a_refusal_to_wait_tells_the_sdk_how_long(hub: RunningHub) -> None:
    # The SDK once dropped the hub's retry_after and always reported 1 s.
    with httpx.Client(base_url=hub.url) as anon:
        for _ in range(10):  # failed sign-ins for one name: a progressive delay
            refused = anon.post(
                "/api/v1/sessions", json={"user": "ghost", "password": "wrong", "code": "000000"}
            )
            if refused.status_code == 429:
                break
    problem = assert_problem(refused, 429, "rate_limited")
    assert problem["retry_after"] == int(refused.headers["retry-after"]) >= 1
    with Client(hub.url) as sdk, pytest.raises(bastion.RateLimitedError) as waited:
        sdk.sign_in("ghost", "wrong", "000000")
    assert waited.value.retry_after == waited.value.to_dict()["retry_after"]
    assert f"{waited.value.retry_after} s" in waited.value.message
