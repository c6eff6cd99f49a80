"""OIDC bearer tokens: discovery, JWKS caching and rotation, JWS and claim checks, refusals."""

from __future__ import annotations

import gzip
import json
import re
import string
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.auth import OidcAuthenticator, OidcIdentity, OidcIssuer, TokenRejectedError
from bastion.auth._jwk import parse_jwk
from bastion.errors import AuthenticationError, InputError
from tests.support.oidc_provider import AUDIENCE, OidcProvider, SigningKey, b64url, encode_jws

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
JWKS = "/jwks"
DISCOVERY = "/.well-known/openid-configuration"


@pytest.fixture
def idp() -> Iterator[OidcProvider]:
    with OidcProvider() as provider:
        yield provider


def authenticator(idp: OidcProvider, **settings_: Any) -> OidcAuthenticator:
    return OidcAuthenticator([idp.issuer_config(**settings_)], transport=httpx.HTTPTransport())


@pytest.fixture
def auth(idp: OidcProvider) -> Iterator[OidcAuthenticator]:
    with authenticator(idp) as a:
        yield a


def refused(auth: OidcAuthenticator, token: str, *, now: datetime = NOW) -> str:
    """Assert the token is refused with the one safe message; return the audit reason."""
    with pytest.raises(TokenRejectedError) as caught:
        auth.authenticate(token, now=now)
    error = caught.value
    assert isinstance(error, AuthenticationError)
    assert error.code == "unauthenticated"
    if token:
        assert token not in str(error)
        assert token not in error.reason
    assert "bearer token was refused" in error.message
    return error.reason


# --- valid tokens -----------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
def test_a_valid_token_gives_an_identity(
    idp: OidcProvider, auth: OidcAuthenticator, alg: str
) -> None:
    claims = idp.claims(now=NOW) | {"groups": ["ml-team", "ml-team", "ops"]}
    identity = auth.authenticate(idp.mint(claims, alg=alg), now=NOW)
    assert isinstance(identity, OidcIdentity)
    assert identity.issuer == idp.issuer
    assert identity.subject == identity.name == "user-123"
    assert identity.groups == ("ml-team", "ops")
    assert identity.expires_at == NOW + timedelta(minutes=5)
    assert identity.auth_method == "oidc"
    assert identity.actor == f"oidc:{idp.issuer}#user-123"
    assert dict(identity.claims) == {}


def test_ps256_and_es384_verify_when_allowed() -> None:
    with OidcProvider(("PS256", "ES384")) as idp:
        with authenticator(idp, algorithms=["PS256", "ES384"]) as auth:
            for alg in ("PS256", "ES384"):
                assert auth.authenticate(idp.mint(idp.claims(now=NOW), alg=alg), now=NOW)
        with authenticator(idp) as default:  # ES384 is not in the default allowlist
            assert "not allowed" in refused(default, idp.mint(idp.claims(now=NOW), alg="ES384"))


def test_keys_are_fetched_once_and_cached_for_the_ttl(
    idp: OidcProvider, auth: OidcAuthenticator
) -> None:
    token = idp.mint(idp.claims(now=NOW))
    for _ in range(5):
        auth.authenticate(token, now=NOW)
    assert idp.requests == {DISCOVERY: 1, JWKS: 1}
    later = NOW + timedelta(seconds=3601)
    auth.authenticate(idp.mint(idp.claims(now=later)), now=later)
    assert idp.requests == {DISCOVERY: 2, JWKS: 2}


# --- time and claims --------------------------------------------------------------------------


def test_expiry_is_checked_with_the_leeway(idp: OidcProvider, auth: OidcAuthenticator) -> None:
    token = idp.mint(idp.claims(now=NOW))
    assert auth.authenticate(token, now=NOW + timedelta(minutes=5, seconds=59))
    assert refused(auth, token, now=NOW + timedelta(minutes=6)) == "the token has expired"


def test_not_yet_valid_and_issued_in_the_future_are_refused(
    idp: OidcProvider, auth: OidcAuthenticator
) -> None:
    at = int(NOW.timestamp())
    early = idp.claims(now=NOW) | {"nbf": at + 120}
    assert "not valid yet" in refused(auth, idp.mint(early))
    future = idp.claims(now=NOW) | {"iat": at + 120, "nbf": at}
    assert "issued in the future" in refused(auth, idp.mint(future))
    assert auth.authenticate(idp.mint(idp.claims(now=NOW) | {"nbf": at + 30}), now=NOW)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"exp": None}, "no expiry"),
        ({"exp": "1893456000"}, "not a number"),
        ({"exp": True}, "not a number"),
        ({"exp": 10**20}, "out of range"),
        ({"aud": "https://other.example"}, "another audience"),
        ({"aud": []}, "no usable 'aud'"),
        ({"aud": None}, "no usable 'aud'"),
        ({"sub": ""}, "no usable subject"),
        ({"sub": None}, "no usable subject"),
    ],
)
def test_bad_registered_claims_are_refused(
    idp: OidcProvider, auth: OidcAuthenticator, change: dict[str, Any], reason: str
) -> None:
    claims = idp.claims(now=NOW) | change
    claims = {k: v for k, v in claims.items() if v is not None}
    assert reason in refused(auth, idp.mint(claims))


def test_one_of_several_audiences_is_enough(idp: OidcProvider, auth: OidcAuthenticator) -> None:
    claims = idp.claims(now=NOW) | {"aud": ["https://other.example", AUDIENCE]}
    assert auth.authenticate(idp.mint(claims), now=NOW).subject == "user-123"


def test_an_unconfigured_issuer_is_refused_without_any_request(
    idp: OidcProvider, auth: OidcAuthenticator
) -> None:
    claims = idp.claims(now=NOW) | {"iss": "https://evil.example"}
    assert "is not configured" in refused(auth, idp.mint(claims))
    claims = idp.claims(now=NOW) | {"iss": idp.issuer + "/"}
    assert "is not configured" in refused(auth, idp.mint(claims))
    assert idp.requests == {}


# --- algorithms and keys ----------------------------------------------------------------------


def test_alg_none_is_refused(idp: OidcProvider, auth: OidcAuthenticator) -> None:
    claims = idp.claims(now=NOW)
    for alg in ("none", "None", "NONE"):
        unsigned = encode_jws({"alg": alg, "typ": "JWT"}, claims, lambda _: b"")
        assert "unsigned" in refused(auth, unsigned)
        assert "unsigned" in refused(auth, unsigned + "AAAA")
    assert idp.requests == {}


def test_hmac_with_the_public_key_as_secret_is_refused(
    idp: OidcProvider, auth: OidcAuthenticator
) -> None:
    rsa_key = idp.key("RS256")
    claims = idp.claims(now=NOW)
    for secret in (rsa_key.public_pem(), json.dumps(rsa_key.jwk()).encode()):
        forged = idp.mint_hmac(claims, secret, kid=rsa_key.kid)
        assert "HMAC" in refused(auth, forged)
    with pytest.raises(InputError, match="HMAC and 'none' never are"):
        idp.issuer_config(algorithms=["HS256"])


def test_the_alg_must_match_the_key_type(idp: OidcProvider, auth: OidcAuthenticator) -> None:
    claims = idp.claims(now=NOW)
    rsa_key, ec_key = idp.key("RS256"), idp.key("ES256")
    # ES256 in the header, with the kid of the RSA key.
    token = encode_jws(
        {"alg": "ES256", "kid": rsa_key.kid}, claims, lambda d: ec_key.sign(d, "ES256")
    )
    assert "is not a key for algorithm 'ES256'" in refused(auth, token)
    # PS256 signed by the RSA key whose JWK says alg RS256.
    token = idp.mint(claims, alg="PS256", key=rsa_key)
    assert "is not a key for algorithm 'PS256'" in refused(auth, token)
    # EdDSA header with the EC key's kid.
    token = idp.mint(claims, alg="EdDSA", key=idp.key("EdDSA"), header={"kid": ec_key.kid})
    assert "is not a key for algorithm 'EdDSA'" in refused(auth, token)


def test_an_alg_outside_the_issuers_allowlist_is_refused(idp: OidcProvider) -> None:
    with authenticator(idp, algorithms=["ES256"]) as auth:
        assert "not allowed" in refused(auth, idp.mint(idp.claims(now=NOW), alg="RS256"))
        assert auth.authenticate(idp.mint(idp.claims(now=NOW), alg="ES256"), now=NOW)
    assert idp.requests[JWKS] == 1


def test_a_tampered_or_resigned_token_is_refused(
    idp: OidcProvider, auth: OidcAuthenticator
) -> None:
    token = idp.mint(idp.claims(now=NOW))
    header, _, signature = token.split(".")
    admin = b64url(json.dumps(idp.claims(now=NOW) | {"sub": "admin"}).encode())
    assert "does not verify" in refused(auth, f"{header}.{admin}.{signature}")
    stranger = SigningKey.generate(idp.key("RS256").kid, "RS256")
    assert "does not verify" in refused(auth, idp.mint(idp.claims(now=NOW), key=stranger))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"crit": ["exp"]}, "'crit'"),
        ({"jku": "https://evil.example/jwks"}, "names its own key"),
        ({"jwk": {"kty": "oct", "k": "c2VjcmV0"}}, "names its own key"),
        ({"typ": "dpop+jwt"}, "not a JWT"),
        ({"kid": 7}, "'kid'"),
    ],
)
def test_dangerous_headers_are_refused(
    idp: OidcProvider, auth: OidcAuthenticator, extra: dict[str, Any], reason: str
) -> None:
    assert reason in refused(auth, idp.mint(idp.claims(now=NOW), header=extra))


def test_a_token_without_kid_needs_an_issuer_with_one_key() -> None:
    with OidcProvider(("ES256",)) as idp, authenticator(idp) as auth:
        claims = idp.claims(now=NOW)
        key = idp.key("ES256")
        token = encode_jws({"alg": "ES256"}, claims, lambda d: key.sign(d, "ES256"))
        assert auth.authenticate(token, now=NOW).subject == "user-123"
        idp.rotate("EdDSA")
        with authenticator(idp) as fresh:
            assert "no 'kid'" in refused(fresh, token)


# --- rotation and rate limits -----------------------------------------------------------------


def test_an_unknown_kid_is_picked_up_by_one_refetch(
    idp: OidcProvider, auth: OidcAuthenticator
) -> None:
    old = idp.mint(idp.claims(now=NOW))
    auth.authenticate(old, now=NOW)
    new_key = idp.rotate("RS256")
    identity = auth.authenticate(idp.mint(idp.claims(now=NOW), key=new_key), now=NOW)
    assert identity.subject == "user-123"
    assert idp.requests[JWKS] == 2
    assert "has kid" in refused(auth, old)  # its key was withdrawn
    assert idp.requests[JWKS] == 2


def test_a_flood_of_random_kids_makes_at_most_one_refetch_per_interval(
    idp: OidcProvider, auth: OidcAuthenticator
) -> None:
    claims = idp.claims(now=NOW)
    auth.authenticate(idp.mint(claims), now=NOW)
    rsa_key = idp.key("RS256")
    for i in range(25):
        token = idp.mint(claims, key=SigningKey(f"random-{i}", "RS256", rsa_key.private))
        assert "has kid" in refused(auth, token, now=NOW + timedelta(seconds=i))
    assert idp.requests[JWKS] == 2
    later = NOW + timedelta(seconds=90)
    token = idp.mint(claims, key=SigningKey("random-late", "RS256", rsa_key.private))
    refused(auth, token, now=later)
    assert idp.requests[JWKS] == 3


def test_a_failing_provider_is_not_hammered_and_fails_closed(idp: OidcProvider) -> None:
    idp.jwks_override = b"{not json"
    with authenticator(idp) as auth:
        token = idp.mint(idp.claims(now=NOW))
        for _ in range(10):
            assert "is not JSON" in refused(auth, token)
        assert idp.requests[JWKS] == 1
        idp.jwks_override = None
        assert auth.authenticate(token, now=NOW + timedelta(seconds=60))
        assert idp.requests[JWKS] == 2


# --- discovery and JWKS documents -------------------------------------------------------------


def test_a_discovery_issuer_mismatch_is_refused(idp: OidcProvider) -> None:
    idp.discovery_override = {"issuer": idp.issuer + "/", "jwks_uri": f"{idp.issuer}/jwks"}
    with authenticator(idp) as auth:
        assert "discovery document names issuer" in refused(auth, idp.mint(idp.claims(now=NOW)))
    assert idp.requests[JWKS] == 0


@pytest.mark.parametrize(
    "jwks_uri",
    ["http://keys.example/jwks", "file:///etc/passwd", "https://u:p@keys.example/jwks", 42],
)
def test_an_unusable_jwks_uri_is_refused(idp: OidcProvider, jwks_uri: object) -> None:
    idp.discovery_override = {"issuer": idp.issuer, "jwks_uri": jwks_uri}
    with authenticator(idp) as auth:
        assert "no usable jwks_uri" in refused(auth, idp.mint(idp.claims(now=NOW)))


def test_oversize_responses_are_refused(idp: OidcProvider) -> None:
    idp.jwks_override = {"keys": [], "padding": "x" * 5000}
    with authenticator(idp, max_response_bytes=4096) as auth:
        assert "larger than 4096 bytes" in refused(auth, idp.mint(idp.claims(now=NOW)))


def test_unusable_jwks_entries_are_skipped(idp: OidcProvider) -> None:
    good = idp.key("ES256").jwk()
    idp.jwks_override = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            idp.key("RS256").jwk() | {"use": "enc"},
            good,
        ]
    }
    with authenticator(idp) as auth:
        assert auth.authenticate(idp.mint(idp.claims(now=NOW), alg="ES256"), now=NOW)
        assert "has kid" in refused(auth, idp.mint(idp.claims(now=NOW), alg="RS256"))


def _mock(handler: Any, **settings_: Any) -> OidcAuthenticator:
    issuer = OidcIssuer.from_dict(
        {"issuer": "https://idp.example", "audience": AUDIENCE} | settings_
    )
    return OidcAuthenticator([issuer], transport=httpx.MockTransport(handler))


def _token_for_mock() -> str:
    claims = {"iss": "https://idp.example", "aud": AUDIENCE, "sub": "x", "exp": 2_000_000_000}
    return encode_jws({"alg": "RS256", "kid": "k"}, claims, lambda _: b"\x00" * 256)


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        (httpx.Response(302, headers={"location": "https://evil.example/"}), "HTTP 302"),
        (httpx.Response(500), "HTTP 500"),
        (httpx.Response(200, content=b"[]"), "not a JSON object"),
        (
            httpx.Response(200, content=gzip.compress(b"{}"), headers={"content-encoding": "gzip"}),
            "compressed",
        ),
    ],
)
def test_bad_discovery_answers_are_refused(response: httpx.Response, reason: str) -> None:
    with _mock(lambda request: response) as auth:
        assert reason in refused(auth, _token_for_mock())


def test_an_unreachable_provider_is_a_refusal() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with _mock(down) as auth:
        assert "ConnectError" in refused(auth, _token_for_mock())


# --- malformed tokens -------------------------------------------------------------------------


DUPLICATE_ALG = b'{"alg":"RS256","alg":"none"}'
NAN_EXP = b'{"exp": NaN}'


def _part(value: object) -> str:
    return b64url(value if isinstance(value, bytes) else json.dumps(value).encode())


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "no bearer token"),
        ("a.b", "three dot-separated"),
        ("a.b.c.d.e", "encrypted (JWE)"),
        ("é.b.c", "outside base64url"),
        ("ab=.cd.ef", "outside base64url"),
        (f"{_part({'alg': 'RS256'})}.{_part([1])}.AAAA", "not a JSON object"),
        (f"{_part(b'{}{}')}.e30.AAAA", "not valid JSON"),
        (f"{_part(DUPLICATE_ALG)}.e30.AAAA", "not valid JSON"),
        (f"{_part({'alg': 'RS256'})}.{_part(NAN_EXP)}.AAAA", "not valid JSON"),
        (f"{_part({'alg': 'RS256'})}.{_part(b'[' * 5000)}.AAAA", "not valid JSON"),
        (f"{_part({'alg': 'RS256'})}.e30.", "no signature"),
        (f"{_part({'alg': 'RS256'})}.e30.AAB", "not base64url"),
        (f"{_part({'typ': 'JWT'})}.e30.AAAA", "no 'alg'"),
        (f"{_part({'alg': 'RS1'})}.e30.AAAA", "not supported"),
    ],
)
def test_malformed_tokens_are_refused(auth: OidcAuthenticator, token: str, reason: str) -> None:
    assert reason in refused(auth, token)


def test_oversize_tokens_are_refused_before_decoding(
    idp: OidcProvider, auth: OidcAuthenticator
) -> None:
    claims = idp.claims(now=NOW) | {"padding": "x" * 20_000}
    assert "longer than 16384 bytes" in refused(auth, idp.mint(claims))
    assert idp.requests == {}


# --- identity mapping -------------------------------------------------------------------------


def test_email_as_principal_must_be_verified(idp: OidcProvider) -> None:
    base = idp.claims(now=NOW) | {"email": "alice@example.org"}
    with authenticator(idp, principal_claim="email") as auth:
        verified = auth.authenticate(idp.mint(base | {"email_verified": True}), now=NOW)
        assert (verified.name, verified.subject) == ("alice@example.org", "user-123")
        assert "not verified" in refused(auth, idp.mint(base | {"email_verified": "true"}))
        assert "no usable 'email'" in refused(auth, idp.mint(idp.claims(now=NOW)))


def test_nested_groups_are_mapped_and_unmapped_ones_dropped(idp: OidcProvider) -> None:
    claims = idp.claims(now=NOW) | {"realm_access": {"roles": ["ml-admins", "offline_access"]}}
    with authenticator(
        idp, groups_claim="realm_access.roles", group_map={"ml-admins": "admin"}
    ) as auth:
        assert auth.authenticate(idp.mint(claims), now=NOW).groups == ("admin",)
        bad = idp.claims(now=NOW) | {"realm_access": {"roles": [1, 2]}}
        assert "other than names" in refused(auth, idp.mint(bad))


def test_groups_are_granted_the_roles_configured_for_them(idp: OidcProvider) -> None:
    settings_ = {
        "groups_claim": "realm_access.roles",
        "group_map": {"ml-admins": "admins", "ml-vision": "vision", "ml-all": "everyone"},
        "roles": {
            "admins": ["admin:*"],
            "vision": ["publisher:vision", "consumer:vision", "consumer:shared"],
            "everyone": "consumer:shared",
            "unused": ["auditor:*"],
        },
    }
    with authenticator(idp, **settings_) as auth:

        def roles_of(*groups: str) -> tuple[tuple[str, str], ...]:
            claims = idp.claims(now=NOW) | {"realm_access": {"roles": list(groups)}}
            return auth.authenticate(idp.mint(claims), now=NOW).roles

        assert roles_of("ml-vision", "ml-all", "offline_access") == (
            ("shared", "consumer"),
            ("vision", "consumer"),
            ("vision", "publisher"),
        )
        assert roles_of("ml-admins") == (("*", "admin"),)
        assert roles_of("offline_access", "admins", "unused") == ()  # only mapped groups count
        assert roles_of() == ()


def test_without_a_roles_table_a_token_grants_no_role(
    idp: OidcProvider, auth: OidcAuthenticator
) -> None:
    claims = idp.claims(now=NOW) | {"groups": ["admin", "publisher"]}
    identity = auth.authenticate(idp.mint(claims), now=NOW)
    assert identity.groups == ("admin", "publisher")
    assert identity.roles == ()


def test_required_claims_bind_a_github_actions_token(idp: OidcProvider) -> None:
    settings_ = {
        "groups_claim": "repository",
        "required_claims": {"repository": "acme/models", "ref": ["refs/heads/main"]},
        "keep_claims": ["repository", "ref", "sha"],
    }
    claims = idp.claims(now=NOW) | {
        "sub": "repo:acme/models:ref:refs/heads/main",
        "repository": "acme/models",
        "ref": "refs/heads/main",
        "sha": "0" * 40,
    }
    with authenticator(idp, **settings_) as auth:
        identity = auth.authenticate(idp.mint(claims), now=NOW)
        assert identity.groups == ("acme/models",)
        assert dict(identity.claims) == {
            "repository": "acme/models",
            "ref": "refs/heads/main",
            "sha": "0" * 40,
        }
        fork = claims | {"repository": "mallory/models"}
        assert "'repository' claim" in refused(auth, idp.mint(fork))
        branch = claims | {"ref": "refs/heads/feature"}
        assert "'ref' claim" in refused(auth, idp.mint(branch))


# --- configuration ----------------------------------------------------------------------------

GITHUB_TOML = """
[[issuers]]
issuer = "https://token.actions.githubusercontent.com"
audience = "https://hub.example.org"
algorithms = ["RS256"]
groups_claim = "repository"
keep_claims = ["repository", "ref", "sha", "workflow_ref"]

[issuers.required_claims]
repository_owner = "acme"
ref = ["refs/heads/main", "refs/tags/v1"]

[[issuers]]
issuer = "https://keycloak.example.org/realms/ml"
audience = ["bastion-hub", "https://hub.example.org"]
principal_claim = "email"
groups_claim = "realm_access.roles"
group_map = { ml-admins = "admin", ml-publishers = "publisher" }

[issuers.roles]
admin = ["admin:*"]
publisher = ["publisher:vision", "consumer:*", "publisher:vision"]
"""


def test_a_toml_configuration_is_parsed() -> None:
    github, keycloak = OidcIssuer.from_toml(GITHUB_TOML)
    assert github.issuer == "https://token.actions.githubusercontent.com"
    assert github.algorithms == ("RS256",)
    assert dict(github.required_claims) == {
        "repository_owner": ("acme",),
        "ref": ("refs/heads/main", "refs/tags/v1"),
    }
    assert github.discovery_url == (
        "https://token.actions.githubusercontent.com/.well-known/openid-configuration"
    )
    assert keycloak.audiences == ("bastion-hub", "https://hub.example.org")
    assert keycloak.group_map == {"ml-admins": "admin", "ml-publishers": "publisher"}
    assert keycloak.roles == {
        "admin": (("*", "admin"),),
        "publisher": (("*", "consumer"), ("vision", "publisher")),
    }
    assert github.roles == {}
    assert keycloak.leeway_seconds == 60


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"issuer": "https://idp.example", "audience": "a", "audiance": "b"}, "unknown"),
        ({"issuer": "http://idp.example", "audience": "a"}, "https://"),
        ({"issuer": "https://idp.example?x=1", "audience": "a"}, "https://"),
        ({"issuer": "https://idp.example", "audience": ""}, "non-empty"),
        ({"issuer": "https://idp.example", "audience": []}, "non-empty"),
        ({"issuer": "https://idp.example"}, "needs 'audience'"),
        ({"issuer": "https://idp.example", "audience": "a", "algorithms": ["none"]}, "never"),
        ({"issuer": "https://idp.example", "audience": "a", "leeway_seconds": 3600}, "0 to 300"),
        ({"issuer": "https://idp.example", "audience": "a", "leeway_seconds": True}, "number"),
        (
            {"issuer": "https://idp.example", "audience": "a", "max_response_bytes": 1.5e3},
            "number",
        ),
        ({"issuer": "https://idp.example", "audience": "a", "group_map": []}, "table"),
        ({"issuer": "https://idp.example", "audience": "a", "roles": ["admin:*"]}, "table"),
        (
            {"issuer": "https://idp.example", "audience": "a", "roles": {"g": "owner:*"}},
            "roles.'g'.*'owner:\\*' is not \"role:namespace\"",
        ),
        (
            {"issuer": "https://idp.example", "audience": "a", "roles": {"g": ["admin"]}},
            'not "role:namespace"',
        ),
        (
            {"issuer": "https://idp.example", "audience": "a", "roles": {"g": ["admin:Bad NS"]}},
            "namespace name or",
        ),
        (
            {"issuer": "https://idp.example", "audience": "a", "roles": {"g": ["admin:a..b"]}},
            'not "role:namespace"',
        ),
        ({"issuer": "https://idp.example", "audience": "a", "roles": {"g": []}}, "non-empty"),
        ({"issuer": "https://idp.example", "audience": "a", "roles": {"g": [1]}}, "role:"),
        ({"issuer": "https://idp.example", "audience": "a", "roles": {"": ["admin:*"]}}, "roles"),
    ],
)
def test_bad_issuer_settings_are_input_errors(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        OidcIssuer.from_dict(data)


def test_loopback_http_issuers_are_allowed() -> None:
    for url in ("http://127.0.0.1:8080", "http://localhost", "http://[::1]:9000/realm"):
        assert OidcIssuer.from_dict({"issuer": url, "audience": "a"}).issuer == url


def test_every_example_in_the_docs_is_a_valid_configuration() -> None:
    doc = (Path(__file__).resolve().parents[3] / "docs" / "access.md").read_text()
    examples = [e for e in re.findall(r"```toml\n(.*?)```", doc, flags=re.S) if "[[issuers]]" in e]
    assert len(examples) >= 5
    issuers = [OidcIssuer.from_toml(example)[0].issuer for example in examples]
    assert "https://token.actions.githubusercontent.com" in issuers


ONE_ISSUER = """
[[issuers]]
issuer = "https://idp.example"
audience = "a"
"""


def test_bad_toml_documents_are_input_errors() -> None:
    with pytest.raises(InputError, match="not valid TOML"):
        OidcIssuer.from_toml("[[issuers]")
    with pytest.raises(InputError, match="no \\[\\[issuers\\]\\]"):
        OidcIssuer.from_toml("")
    with pytest.raises(InputError, match="configured twice"):
        OidcIssuer.from_toml(ONE_ISSUER * 2)
    with pytest.raises(InputError, match="unknown top-level"):
        OidcIssuer.from_toml(ONE_ISSUER + "\n[other]\n")
    with pytest.raises(InputError, match="no OIDC issuer"):
        OidcAuthenticator([])


# --- property-based: nothing but AuthenticationError ------------------------------------------


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[OidcProvider, OidcAuthenticator, str]]:
    with OidcProvider() as idp, authenticator(idp) as auth:
        token = idp.mint(idp.claims(now=NOW) | {"groups": ["a"]}, alg="ES256")
        assert auth.authenticate(token, now=NOW)
        yield idp, auth, token


_TOKEN_CHARS = string.ascii_letters + string.digits + "-_.=+/ "


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=300), st.text(alphabet=_TOKEN_CHARS, max_size=400)))
def test_random_strings_are_only_ever_refused(
    shared: tuple[OidcProvider, OidcAuthenticator, str], text: str
) -> None:
    _, auth, _ = shared
    with pytest.raises(AuthenticationError):
        auth.authenticate(text, now=NOW)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_mutated_valid_tokens_are_only_ever_refused(
    shared: tuple[OidcProvider, OidcAuthenticator, str], data: st.DataObject
) -> None:
    _, auth, token = shared
    chars = list(token)
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, max(len(chars) - 1, 0)))
        op = data.draw(st.sampled_from(["replace", "delete", "insert", "truncate"]))
        char = data.draw(st.sampled_from(_TOKEN_CHARS))
        if op == "replace" and chars:
            chars[i] = char
        elif op == "delete" and chars:
            del chars[i]
        elif op == "insert":
            chars.insert(i, char)
        else:
            del chars[i:]
    mutated = "".join(chars)
    if mutated == token:
        return
    with pytest.raises(AuthenticationError):
        auth.authenticate(mutated, now=NOW)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)
_JWK_FIELDS = st.sampled_from(["kty", "crv", "x", "y", "n", "e", "alg", "use", "kid", "key_ops"])


@given(st.dictionaries(_JWK_FIELDS, _JSON | st.sampled_from(["RSA", "EC", "OKP", "P-256"])))
def test_random_jwks_entries_give_a_key_or_an_input_error(entry: dict[str, Any]) -> None:
    try:
        key = parse_jwk(entry)
    except InputError:
        return
    assert key.kty in ("RSA", "EC", "OKP")


@given(st.binary(max_size=300) | _JSON.map(lambda v: json.dumps(v).encode()))
def test_random_discovery_and_jwks_bodies_are_only_ever_refusals(body: bytes) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(
                200, json={"issuer": "https://idp.example", "jwks_uri": "https://idp.example/k"}
            )
        return httpx.Response(200, content=body)

    with _mock(answer) as auth, pytest.raises(AuthenticationError):
        auth.authenticate(_token_for_mock(), now=NOW)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "issuer",
                "audience",
                "algorithms",
                "leeway_seconds",
                "group_map",
                "roles",
                "required_claims",
                "keep_claims",
                "principal_claim",
                "bogus",
            ]
        ),
        _JSON,
    )
)
def test_random_issuer_tables_give_an_issuer_or_an_input_error(table: dict[str, Any]) -> None:
    try:
        issuer = OidcIssuer.from_dict(table)
    except InputError:
        return
    assert issuer.audiences
    for bindings in issuer.roles.values():
        assert bindings
        assert list(bindings) == sorted(set(bindings))


_ROLE_TEXT = st.text(alphabet="adminpublsher:*-.", max_size=20)


@given(st.dictionaries(st.text(max_size=10), _JSON | _ROLE_TEXT | st.lists(_ROLE_TEXT, max_size=4)))
def test_random_roles_tables_give_bindings_or_an_input_error(table: dict[str, Any]) -> None:
    try:
        issuer = OidcIssuer.from_dict(
            {"issuer": "https://idp.example", "audience": "a", "roles": table}
        )
    except InputError:
        return
    for group, bindings in issuer.roles.items():
        assert group in table
        assert all(role in ("admin", "publisher") for _, role in bindings)
