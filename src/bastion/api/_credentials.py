"""Credentials: who is calling. The access layer's step 3, without ASGI.

A request carries an API key (``bst_...``), a session (``bss_...``, or the session cookie,
which also needs the CSRF header on unsafe methods), an OIDC bearer token (three
dot-separated parts), or a verified client certificate mapped to a service account.
Recently checked keys, sessions and OIDC tokens are answered from memory; the database and
an identity provider's keys are asked from a worker thread. Any failure is one
AuthenticationError (401).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import replace
from datetime import datetime

import anyio
from starlette.types import Scope

from bastion.api._middleware import request_header
from bastion.api._services import Services
from bastion.auth import Principal
from bastion.auth._oidc_keys import KeysNotCached
from bastion.errors import AuthenticationError, PermissionDeniedError

__all__ = ["Credentials", "session_cookie"]

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


class Credentials:
    """Authenticate requests; one per application (it keeps the OIDC token cache)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._oidc_cache = _OidcCache()

    async def authenticate(self, scope: Scope) -> Principal:
        """The caller's principal; AuthenticationError (or PermissionDeniedError for a
        cookie request without its CSRF token)."""
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
