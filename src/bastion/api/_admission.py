"""Admission: who is calling, and may they call now? The access layer's checks, without ASGI.

:class:`Admission` authenticates a request and applies the rate limits, in the order the
access layer documents (:mod:`bastion.api._access`); both the access middleware and the
gateway's inference gate (:mod:`bastion.api._inference_gate`) call it, so that the hot
inference path and every other route are admitted by the same code.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import anyio
from starlette.types import Scope, Send

from bastion.api._middleware import request_header
from bastion.api._problems import STATUS, send_problem
from bastion.api._routes_gateway import refused_record
from bastion.api._security import UNKNOWN_ADDRESS
from bastion.api._services import Services
from bastion.auth import Principal
from bastion.auth._oidc_keys import KeysNotCached
from bastion.errors import (
    AuthenticationError,
    BastionError,
    PermissionDeniedError,
    RateLimitedError,
)

__all__ = ["PUBLIC_ROUTES", "Admission", "OverLimit", "refuse", "session_cookie"]

log = logging.getLogger(__name__)

#: Routes anyone may call. Everything else needs a credential and a policy decision.
PUBLIC_ROUTES = frozenset(
    {"livez", "gateway.live", "session.create", "enrol.begin", "enrol.finish"}
)
#: Public routes outside every rate limit (orchestrators poll liveness).
_UNLIMITED = frozenset({"livez", "gateway.live"})
_SECURE_COOKIE = "__Host-bastion-session"
_PLAIN_COOKIE = "bastion-session"


def session_cookie(scheme: str) -> str:
    """The session cookie's name: ``__Host-`` (Secure, this host only) over HTTPS."""
    return _SECURE_COOKIE if scheme == "https" else _PLAIN_COOKIE


_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_OIDC_CACHE = 4096
#: A verified OIDC token is trusted again without checking for at most this long.
_OIDC_CACHE_SECONDS = 60.0


def _cookie(scope: Scope, name: str) -> str | None:
    raw = request_header(scope, b"cookie")
    if not raw:
        return None
    for part in raw.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


class OverLimit(Exception):
    """A request over a rate limit: the error to answer and the limit's headers."""

    def __init__(self, error: RateLimitedError, headers: list[tuple[str, str]]) -> None:
        super().__init__(error.message)
        self.error = error
        self.headers = headers


class _OidcCache:
    """Recently verified OIDC tokens, by their SHA-256, until min(expiry, a minute)."""

    def __init__(self) -> None:
        self._items: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Principal | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            if found[0] <= time.monotonic():
                del self._items[key]
                return None
            return found[1]

    def put(self, key: bytes, principal: Principal, seconds: float) -> None:
        with self._lock:
            self._items[key] = (time.monotonic() + seconds, principal)
            while len(self._items) > _OIDC_CACHE:
                self._items.popitem(last=False)


class Admission:
    """Authenticate a request and apply its rate limits; one per application."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._oidc_cache = _OidcCache()

    async def admit(self, scope: Scope, route: str | None, params: dict[str, Any]) -> None:
        """Admit a request to ``route``: its principal and rate-limit headers go in its state.

        Raises OverLimit (answer 429 with its headers), or the BastionError to answer.
        """
        state = scope.setdefault("state", {})
        client = scope.get("client")
        source = client[0] if client else UNKNOWN_ADDRESS
        if route in PUBLIC_ROUTES:
            if route not in _UNLIMITED:
                state["rate_limit"] = await self._limit(None, source, route, None)
            return
        await self._refuse_bad_sources(source)
        try:
            principal = await self._authenticate(scope)
        except AuthenticationError:
            counted = await self._call_limiter(
                lambda: self.services.limiter.hit_login_failure(source)
            )
            if not counted.allowed:  # logged once, when the address becomes blocked
                log.warning(
                    "blocking %s for %d s: too many bad credentials (last on %s %s)",
                    source,
                    counted.retry_after or 1,
                    scope["method"],
                    route or "an unknown route",
                )
            raise
        state["principal"] = principal
        model = None
        if params.get("namespace") and params.get("model"):
            model = f"{params['namespace']}/{params['model']}"
        elif params.get("deployment"):
            model = f"deployment:{params['deployment']}"
        state["rate_limit"] = await self._limit(principal.actor, source, route, model)

    def refused(
        self, scope: Scope, route: str | None, params: dict[str, Any], exc: BastionError
    ) -> None:
        """A call to a deployment refused here still counts and leaves an inference record."""
        if route != "invoke" or self.services.gateway is None:
            return
        deployment = str(params.get("deployment", ""))[:64]
        metrics = self.services.gateway.metrics
        if isinstance(exc, RateLimitedError):
            metrics.rate_limited(deployment)
        metrics.rejected(deployment, exc.code)
        if self.services.inference_records is not None and scope["method"] == "POST":
            client = scope.get("client")
            self.services.inference_records.record(
                refused_record(scope, deployment, exc, client[0] if client else UNKNOWN_ADDRESS)
            )

    async def _call_limiter(self, call: Callable[[], Any]) -> Any:
        if self.services.limiter.in_process:  # Redis is asked from a worker thread
            return call()
        return await anyio.to_thread.run_sync(call)

    async def _refuse_bad_sources(self, source: str) -> None:
        limiter = self.services.limiter
        decision = await self._call_limiter(lambda: limiter.check_login_source(source))
        if not decision.allowed:
            raise OverLimit(decision.error(), decision.headers())

    async def _limit(
        self, actor: str | None, source: str, route: str | None, model: str | None
    ) -> list[tuple[str, str]]:
        limiter = self.services.limiter
        decision = await self._call_limiter(
            lambda: limiter.check(principal=actor, source_ip=source, route=route, model=model)
        )
        headers: list[tuple[str, str]] = decision.headers()
        if not decision.allowed:
            raise OverLimit(decision.error(), headers)
        return headers

    async def _authenticate(self, scope: Scope) -> Principal:
        svc = self.services
        now = svc.hub.now()
        certificate = _client_certificate(scope)
        authorization = request_header(scope, b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise AuthenticationError("send the credential as 'Authorization: Bearer <token>'")
            principal = await self._bearer(token, now)
        else:
            cookie = _cookie(scope, session_cookie(str(scope.get("scheme", "http"))))
            if cookie is not None:
                principal = await self._session(cookie, now, via_cookie=True)
                if scope["method"] not in _SAFE_METHODS:
                    await self._check_csrf(scope, principal)
            elif certificate is not None and svc.mtls is not None:
                principal = _mtls_principal(svc, certificate)
            else:
                raise AuthenticationError(
                    "this route needs a credential: send 'Authorization: Bearer ...' with an "
                    "API key (bst_...), a session (bss_...) or an OIDC token "
                    "('bastion login' stores one for the CLI)"
                )
        if certificate is not None and principal.client_certificate is None:
            principal = _with_certificate(principal, certificate[0])
        return principal

    async def _bearer(self, token: str, now: datetime) -> Principal:
        svc = self.services
        if token.startswith("bst_"):
            peeked = svc.api_keys.peek(token, now=now)
            if peeked is not None:
                return peeked
            return await anyio.to_thread.run_sync(lambda: svc.api_keys.authenticate(token, now=now))
        if token.startswith("bss_"):
            return await self._session(token, now)
        if token.count(".") == 2 and svc.oidc is not None:
            key = hashlib.sha256(token.encode()).digest()
            cached = self._oidc_cache.get(key)
            if cached is not None:
                return cached
            oidc = svc.oidc
            try:  # keys already fetched: a signature check, done here without a thread
                identity = oidc.authenticate(token, now=now, offline=True)
            except KeysNotCached:
                identity = await anyio.to_thread.run_sync(lambda: oidc.authenticate(token, now=now))
            principal = Principal(
                kind="OidcSubject",
                id=f"{identity.issuer}#{identity.subject}",
                name=identity.name,
                auth_method="oidc",
                roles=identity.roles,
                groups=identity.groups,
                issuer=identity.issuer,
            )
            left = (identity.expires_at - now).total_seconds()
            self._oidc_cache.put(key, principal, min(left, _OIDC_CACHE_SECONDS))
            return principal
        raise AuthenticationError(
            "the credential is not an API key (bst_...), a session (bss_...) or an OIDC token "
            "from a configured issuer"
        )

    async def _session(self, token: str, now: datetime, *, via_cookie: bool = False) -> Principal:
        """A session remembered lately is answered here; otherwise the database, in a thread."""
        sessions = self.services.sessions
        remembered = sessions.peek(token, now=now, via_cookie=via_cookie)
        if remembered is not None:
            return remembered
        return await anyio.to_thread.run_sync(
            lambda: sessions.authenticate(token, now=now, via_cookie=via_cookie)
        )

    async def _check_csrf(self, scope: Scope, principal: Principal) -> None:
        given = request_header(scope, b"x-csrf-token")
        session_id = principal.session_id
        ok = (
            given is not None
            and session_id is not None
            and await anyio.to_thread.run_sync(
                lambda: self.services.sessions.check_csrf(session_id, given)
            )
        )
        if not ok:
            raise PermissionDeniedError(
                "a request that changes something with the session cookie needs the "
                "X-CSRF-Token header given at sign-in"
            )


def _client_certificate(scope: Scope) -> tuple[str, str] | None:
    tls = scope.get("extensions", {}).get("tls") or {}
    fingerprint = tls.get("client_cert_sha256")
    if not fingerprint:
        return None
    return str(fingerprint), str(tls.get("client_cert_name") or "")


def _mtls_principal(svc: Services, certificate: tuple[str, str]) -> Principal:
    assert svc.mtls is not None
    client = svc.mtls.identify(*certificate)
    if client is None:
        raise AuthenticationError(
            "the client certificate is valid but not mapped to a client; ask an administrator"
        )
    return Principal(
        kind="ServiceAccount",
        id=client.name,
        name=client.name,
        auth_method="mtls",
        roles=client.roles,
        scope=client.scope,
        client_certificate=certificate[0],
    )


def _with_certificate(principal: Principal, fingerprint: str) -> Principal:
    return replace(principal, client_certificate=fingerprint)


async def refuse(scope: Scope, send: Send, exc: BastionError, extra: list[tuple[str, str]]) -> None:
    status = STATUS.get(exc.code, 400)
    state = scope.setdefault("state", {})
    state["error_code"] = exc.code
    headers = [(key.lower().encode(), value.encode()) for key, value in extra]
    fields: dict[str, Any] = {}
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="bastion"'))
    if isinstance(exc, RateLimitedError):
        fields["retry_after"] = exc.retry_after
        headers = [h for h in headers if h[0] != b"retry-after"]
        headers.append((b"retry-after", str(exc.retry_after).encode()))
        state["audit_skip"] = True
    await send_problem(
        send,
        status,
        exc.code,
        exc.message,
        request_id=state.get("request_id") or None,
        headers=headers,
        **fields,
    )
