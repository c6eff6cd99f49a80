"""An API fuzz run with schemathesis against the OpenAPI document of a real, running hub.

The document is fetched once from ``GET /api/v1/openapi.json`` and every operation in it
is fuzzed over HTTP against the live server (middleware, authentication, policy and
audit included), with valid and invalid inputs, under four credentials:

- an admin key and a consumer key, each on every namespace: never 401, never 403 where
  the role matrix (``test_route_matrix.py``) allows the action, never 2xx where it denies
  it (the filtered lists answer an empty list instead);
- an unknown key of the right shape, and no ``Authorization`` header at all: every route
  but the public ones answers 401, whatever the input (authentication comes first), and
  no public route signs anyone in.

Whoever asks, no answer is a 5xx, every answer is JSON, a problem document, an octet
stream or JSON lines, and every error is a problem document. Schemathesis' strict schema
conformance checks are not run: Bastion answers invalid input with 400, not FastAPI's
documented 422. Half the cases of an operation with path parameters name what exists
(namespace ``med``, model ``med/xray@1.0.0``, an open upload), so refusals are checked
where they matter; the rest are generated freely. Failures are collected, not raised one
by one, so a run names every broken operation; hypothesis does not shrink them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.core import NotSet
from schemathesis.core.result import Ok
from schemathesis.errors import FailureGroup

import bastion
from bastion.client import Client
from tests.integration.hub.conftest import RunningHub, bearer, sign_beside
from tests.integration.hub.test_access import PUBLIC
from tests.integration.hub.test_route_matrix import FILTERED, REQUESTS
from tests.unit.auth.test_policy import EXPECTED

#: Cases per operation: enough to reach past validation, short enough for a 2-core machine.
EXAMPLES_PER_OPERATION = 20
#: An API key of the right shape (``bst_<16 base32>_<43 urlsafe>``) that the hub never issued.
UNKNOWN_KEY = "bst_aaaaaaaaaaaaaaaa_" + "A" * 43
#: What a response may be: JSON, a problem document, a pulled file, or audit JSON lines.
CONTENT_TYPES = (
    "application/json",
    "application/problem+json",
    "application/octet-stream",
    "application/x-ndjson",
    "text/plain",  # Prometheus metrics
)
_TOKEN = re.compile(r"bst_[A-Za-z0-9_-]+")

#: A generated case (of any operation) and an operation of the hub's document.
AnyCase = Case[Any]
AnyOperation = APIOperation[Any, Any, Any, Any]
#: A check of one answer: what is wrong with it, or None.
Check = Callable[[AnyCase, Response], str | None]


@pytest.fixture
def openapi(hub: RunningHub) -> dict[str, Any]:
    """The hub's OpenAPI document, as the admin reads it."""
    response = httpx.get(f"{hub.url}/api/v1/openapi.json", headers=bearer(hub.admin_token))
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


@pytest.fixture
def existing(
    hub: RunningHub, admin: Client, med: str, safe_model: Path, signing_key: bastion.PrivateKey
) -> dict[str, str]:
    """Publish med/xray@1.0.0 and open an upload of 2.0.0; path parameters naming them."""
    admin.push(safe_model, "med/xray@1.0.0", key=signing_key)
    signed = sign_beside(safe_model, signing_key)
    with httpx.Client(base_url=hub.url, headers=bearer(hub.admin_token)) as http:
        response = http.post("/api/v1/models/med/xray/versions", json=signed.start_body("2.0.0"))
        assert response.status_code == 201, response.text
        upload_id: str = response.json()["upload_id"]
    return {
        "namespace": med,
        "model": "xray",
        "version": "1.0.0",
        "alias": "prod",
        "path": "config.json",
        "upload_id": upload_id,
    }


def _route(operation: AnyOperation) -> tuple[str, str]:
    """(method, path template) as the matrix names it (``{path:path}`` is ``{path}``)."""
    return operation.method.upper(), operation.path.replace("{path:path}", "{path}")


def _content_type(response: Response) -> str:
    for name, values in response.headers.items():
        if name.lower() == "content-type" and values:
            return values[0].split(";")[0].strip().lower()
    return ""


def _describe(case: AnyCase, response: Response) -> str:
    """The request and the answer, for a failure report (tokens redacted)."""
    body = "" if isinstance(case.body, NotSet) else repr(case.body)
    answer = response.content[:300].decode(errors="replace") if response.status_code >= 400 else ""
    text = (
        f"{case.method} {case.formatted_path} query={case.query!r} body={body[:200]}"
        f" -> {response.status_code} {_content_type(response)} {answer}"
    )
    return _TOKEN.sub("bst_<redacted>", text)


def _answers_well(case: AnyCase, response: Response) -> str | None:
    """What every answer must be, whoever asks: no 5xx, and a documented content type."""
    try:
        case.validate_response(response, checks=[not_a_server_error])
    except FailureGroup as failures:  # its message holds the request headers: the key
        return "; ".join(failure.title for failure in failures.exceptions)
    content_type = _content_type(response)
    if response.status_code == 204 and not response.content:
        return None
    if content_type not in CONTENT_TYPES:
        return f"undocumented content type {content_type!r}"
    if response.status_code >= 400 and content_type != "application/problem+json":
        return "an error answered without a problem document"
    return None


def _fuzz(
    hub: RunningHub,
    openapi: dict[str, Any],
    existing: dict[str, str],
    headers: dict[str, str],
    check: Check,
) -> dict[tuple[str, str], int]:
    """Fuzz every operation with ``headers``; assert ``check`` found nothing; cases sent."""
    schema = schemathesis.openapi.from_dict(openapi)
    failures: list[str] = []
    sent: dict[tuple[str, str], int] = {}
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the hub's document has an invalid operation: {result}"
        operation = result.ok()
        sent[_route(operation)] = 0
        names = set(re.findall(r"\{(\w+)", operation.path))
        pinned = {name: value for name, value in existing.items() if name in names}
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        strategies = [operation.as_strategy(mode) for mode in modes]
        if pinned:
            strategies += [operation.as_strategy(m, path_parameters=pinned) for m in modes]
        cases = st.one_of(strategies)

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            database=None,
            deadline=None,
            phases=(Phase.generate,),
            # Each case is a request to a live server: slow by hypothesis' measure, and
            # negative generation filters much of what it draws.
            suppress_health_check=(
                HealthCheck.too_slow,
                HealthCheck.filter_too_much,
                HealthCheck.data_too_large,
                HealthCheck.large_base_example,
            ),
        )
        @given(case=cases)
        def send(case: AnyCase) -> None:
            response = case.call(base_url=hub.url, headers=headers, timeout=30)
            sent[_route(case.operation)] += 1
            problem = _answers_well(case, response) or check(case, response)
            if problem is not None:
                failures.append(f"{problem}: {_describe(case, response)}")

        send()
    assert not failures, "\n".join(failures)
    return sent


def _is_public(case: AnyCase) -> bool:
    return _route(case.operation) in PUBLIC


def _refused_unless_public(case: AnyCase, response: Response) -> str | None:
    """Without a valid key: 401 everywhere but the public routes, which never sign one in.

    The conftest hub's rate limits are far above what this run sends, so a 429 is a failure.
    """
    if _is_public(case):
        if case.operation.path not in ("/livez", "/v2/health/live") and response.status_code < 300:
            return "a public route let generated credentials in"
        return None
    if response.status_code != 401:
        return "a route answered a caller without a valid key with other than 401"
    return None


def _within_the_matrix(role: str) -> Check:
    """A check that a key with ``role`` on every namespace gets what the matrix says.

    Never 401 (the key is valid); never 403 where the matrix allows the action (a
    generated input may still be refused as invalid or absent); never 2xx where it
    denies it, except the filtered lists, which answer an empty list.
    """

    def check(case: AnyCase, response: Response) -> str | None:
        if _is_public(case):
            return None
        if response.status_code == 401:
            return "a valid key was refused as unauthenticated"
        action = REQUESTS[_route(case.operation)][0]
        allowed = role in EXPECTED[action].split()
        if allowed and response.status_code == 403:
            return f"{action} is allowed to {role} but was refused"
        if allowed or not 200 <= response.status_code < 300:
            return None
        if action in FILTERED and response.json() == []:
            return None
        return f"{action} is denied to {role} but answered {response.status_code}"

    return check


def _every_operation(openapi: dict[str, Any]) -> set[tuple[str, str]]:
    """(method, path template) of every operation the document describes."""
    return {(method.upper(), path) for path, item in openapi["paths"].items() for method in item}


def test_every_documented_route_is_in_the_matrix(openapi: dict[str, Any]) -> None:
    assert _every_operation(openapi) - PUBLIC <= set(REQUESTS)


def test_fuzz_with_a_valid_admin_key(
    hub: RunningHub, openapi: dict[str, Any], existing: dict[str, str]
) -> None:
    # Nothing is excluded: rotating the KEK and signing out (a no-op for a key) leave the
    # key as it was, and the hub refuses a policy set without a policy, while generated
    # text never parses as Cedar, so the admin keeps its rights for the cases that follow.
    sent = _fuzz(hub, openapi, existing, bearer(hub.admin_token), _within_the_matrix("admin"))
    assert _every_operation(openapi) == {route for route, count in sent.items() if count}


def test_fuzz_with_an_unknown_key(
    hub: RunningHub, openapi: dict[str, Any], existing: dict[str, str]
) -> None:
    sent = _fuzz(hub, openapi, existing, bearer(UNKNOWN_KEY), _refused_unless_public)
    assert _every_operation(openapi) == {route for route, count in sent.items() if count}


def test_fuzz_without_credentials(
    hub: RunningHub, openapi: dict[str, Any], existing: dict[str, str]
) -> None:
    sent = _fuzz(hub, openapi, existing, {}, _refused_unless_public)
    assert _every_operation(openapi) == {route for route, count in sent.items() if count}


def test_fuzz_with_a_consumer_key(
    hub: RunningHub, admin: Client, openapi: dict[str, Any], existing: dict[str, str]
) -> None:
    token = admin.create_api_key("c", [("*", "consumer")], scope=["*"])["token"]
    sent = _fuzz(hub, openapi, existing, bearer(token), _within_the_matrix("consumer"))
    assert _every_operation(openapi) == {route for route, count in sent.items() if count}
