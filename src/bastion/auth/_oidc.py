"""OIDC bearer tokens: from a JWT signed by a trusted identity provider to an :class:`OidcIdentity`.

:meth:`OidcAuthenticator.authenticate` decodes the token without trusting it,
picks the configured issuer named by its ``iss`` (an unknown issuer is refused
before any network request), checks the signature with that issuer's JWKS
(``alg`` in the issuer's allowlist and matching the key's type), then the
registered claims, the required claims and the principal. Every refusal is one
:class:`TokenRejectedError` with a safe message; its ``reason`` is for the
audit log. Neither ever holds the token. See ``docs/access.md``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal

import httpx

from bastion.auth._jwt import (
    DEFAULT_MAX_TOKEN_BYTES,
    TokenRejectedError,
    check_registered_claims,
    decode_compact,
    shown,
)
from bastion.auth._oidc_issuer import OidcIssuer, RoleBindings
from bastion.auth._oidc_keys import IssuerKeys
from bastion.errors import InputError

__all__ = ["OidcAuthenticator", "OidcIdentity"]

_MAX_GROUPS: Final = 256
_MAX_VALUE: Final = 1024


@dataclass(frozen=True, slots=True)
class OidcIdentity:
    """Who a verified OIDC token says the caller is.

    ``name`` is the value of the issuer's ``principal_claim`` (``sub`` unless
    configured, e.g. ``email``); ``claims`` holds only the claims the issuer's
    configuration asks to keep; ``roles`` are the ``(namespace, role)`` bindings the
    issuer's ``roles`` table grants the token's groups, deduplicated and sorted.
    """

    issuer: str
    subject: str
    name: str
    groups: tuple[str, ...]
    expires_at: datetime
    claims: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))
    roles: RoleBindings = ()
    auth_method: Literal["oidc"] = "oidc"

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"oidc:{self.issuer}#{self.name}"


def _claim(claims: Mapping[str, Any], path: str) -> Any:
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _strings(value: Any, what: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if value is None:
        return ()
    if not isinstance(items, list) or len(items) > _MAX_GROUPS:
        raise TokenRejectedError(f"the token's {what} claim is not a string or a short list")
    if not all(isinstance(i, str) and 0 < len(i) <= _MAX_VALUE for i in items):
        raise TokenRejectedError(f"the token's {what} claim holds something other than names")
    return tuple(dict.fromkeys(items))


def _kept(value: Any) -> object:
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str) and len(value) <= _MAX_VALUE:
        return value
    if isinstance(value, list) and len(value) <= _MAX_GROUPS:
        return tuple(_strings(value, "kept"))
    raise TokenRejectedError("a kept claim is not a short string, number or list of strings")


class OidcAuthenticator:
    """Validates bearer JWTs from the configured issuers. Thread-safe; close() when done.

    ``transport`` is the httpx transport used for discovery and JWKS (pass one to
    use a proxy, a private CA or a test server); by default a plain HTTPS client.
    """

    def __init__(
        self,
        issuers: Iterable[OidcIssuer],
        *,
        transport: httpx.BaseTransport | None = None,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    ) -> None:
        self._issuers = {issuer.issuer: issuer for issuer in issuers}
        if not self._issuers:
            raise InputError("no OIDC issuer is configured; trusting none would refuse everyone")
        self._max_token_bytes = max_token_bytes
        self._http = httpx.Client(transport=transport, follow_redirects=False)
        self._keys = {url: IssuerKeys(issuer, self._http) for url, issuer in self._issuers.items()}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> OidcAuthenticator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def authenticate(self, token: str, *, now: datetime, offline: bool = False) -> OidcIdentity:
        """The identity of a valid token; TokenRejectedError (an AuthenticationError) if not.

        ``offline``: never ask the issuer; raise KeysNotCached where that would be needed (an
        event loop checks tokens inline this way and retries online from a worker thread).
        """
        jws = decode_compact(token, max_bytes=self._max_token_bytes)
        iss = jws.claims.get("iss")
        issuer = self._issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise TokenRejectedError(f"the token's issuer {shown(iss)} is not configured")
        if jws.alg not in issuer.algorithms:
            raise TokenRejectedError(f"algorithm {shown(jws.alg)} is not allowed for {iss}")
        at = now.timestamp()
        keys = self._keys[issuer.issuer].candidates(jws.kid, now=at, offline=offline)
        usable = [key for key in keys if key.accepts(jws.alg)]
        if not usable:
            raise TokenRejectedError(
                f"the key {shown(jws.kid)} of {iss} is not a key for algorithm {shown(jws.alg)}"
            )
        if not any(key.verify(jws.alg, jws.signing_input, jws.signature) for key in usable):
            raise TokenRejectedError(f"the token's signature does not verify with {iss}'s keys")
        return _identity(issuer, jws.claims, now=at)


def _identity(issuer: OidcIssuer, claims: dict[str, Any], *, now: float) -> OidcIdentity:
    exp = check_registered_claims(
        claims,
        issuer=issuer.issuer,
        audiences=issuer.audiences,
        now=now,
        leeway=issuer.leeway_seconds,
    )
    for name, allowed in issuer.required_claims.items():
        if _claim(claims, name) not in allowed:
            raise TokenRejectedError(f"the token's {name!r} claim is not an allowed value")
    principal = _claim(claims, issuer.principal_claim)
    if not isinstance(principal, str) or not principal or len(principal) > _MAX_VALUE:
        raise TokenRejectedError(f"the token has no usable {issuer.principal_claim!r} claim")
    verified = claims.get("email_verified") is True
    if issuer.principal_claim == "email" and issuer.require_verified_email and not verified:
        raise TokenRejectedError("the token's email is not verified ('email_verified')")
    groups: tuple[str, ...] = ()
    if issuer.groups_claim is not None:
        groups = _strings(_claim(claims, issuer.groups_claim), repr(issuer.groups_claim))
        if issuer.group_map is not None:
            groups = tuple(
                dict.fromkeys(issuer.group_map[g] for g in groups if g in issuer.group_map)
            )
    kept = {name: _kept(_claim(claims, name)) for name in issuer.keep_claims}
    roles = sorted({binding for group in groups for binding in issuer.roles.get(group, ())})
    return OidcIdentity(
        issuer=issuer.issuer,
        subject=str(claims["sub"]),
        name=principal,
        groups=groups,
        expires_at=datetime.fromtimestamp(exp, UTC),
        claims=MappingProxyType(kept),
        roles=tuple(roles),
    )
