"""Browser hygiene for every HTTP response: security headers, and CORS closed unless configured.

:class:`SecurityHeadersMiddleware` is a pure ASGI middleware. It adds the headers
below to every response the application sends, unless the application set the
same header itself (its value wins: a web page may need its own
``Content-Security-Policy``); ``Cache-Control: no-store`` is added only when the
application set no ``Cache-Control``. ``Strict-Transport-Security`` is added
only when asked for (the hub served over TLS).

Cross-origin requests are refused by default: no ``Access-Control-*`` header
ever leaves the hub (those the application sets are dropped), and a CORS
preflight is answered 403 without reaching the application. Origins listed in
``cors_origins`` (exact ``scheme://host[:port]``, HTTPS, or plain HTTP on a
loopback host) get a preflight answer for the API's methods and headers and an
``Access-Control-Allow-Origin`` echo on their responses. No
``Access-Control-Allow-Credentials`` is sent: cross-origin callers authenticate
with a bearer credential in ``Authorization``, which needs no credentials mode,
and keeping cookies out of cross-origin requests keeps cookie sessions out of
reach of other sites.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Final
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.api._problems import problem_bytes
from bastion.errors import InputError

__all__ = [
    "CORS_ALLOWED_HEADERS",
    "CORS_ALLOWED_METHODS",
    "SECURITY_HEADERS",
    "SecurityHeaders",
    "SecurityHeadersMiddleware",
    "parse_cors_origin",
]

#: Added to every response unless the application set the header itself.
SECURITY_HEADERS: Final[tuple[tuple[bytes, bytes], ...]] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), geolocation=(), microphone=(), payment=(), usb=()"),
)
HSTS: Final = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
CORS_ALLOWED_METHODS: Final = ("GET", "POST", "PUT", "DELETE")
CORS_ALLOWED_HEADERS: Final = ("authorization", "content-type", "x-csrf-token", "x-request-id")
CORS_MAX_AGE_SECONDS: Final = 600
_LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]"})
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}
_HOST: Final = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
_IPV6: Final = re.compile(r"\[[0-9a-f:.]{2,45}\]")
_MAX_ORIGIN_LENGTH: Final = 300


def parse_cors_origin(origin: str) -> str:
    """``origin`` checked and in the form browsers send (lower case, no default port).

    Only ``https://host[:port]`` is accepted, or ``http://`` on a loopback host
    (``localhost``, ``127.0.0.1``, ``[::1]``) for local development. ``*``,
    paths, credentials, queries and fragments are refused with :class:`InputError`.
    """
    if not isinstance(origin, str):
        raise InputError("a CORS origin must be a string such as 'https://app.example.org'")
    shown = repr(origin[:80])
    if origin.strip() == "*":
        raise InputError(
            "a CORS origin of '*' would let any web site call the hub; list each allowed "
            "origin as 'https://host[:port]'"
        )
    if len(origin) > _MAX_ORIGIN_LENGTH or not origin.isascii() or not origin.isprintable():
        raise InputError(
            f"CORS origin {shown} is not an origin; give 'https://host[:port]' in ASCII "
            "(the punycode form of an internationalised name)"
        )
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError as exc:
        raise InputError(
            f"CORS origin {shown} is not an origin; give it as 'https://host[:port]'"
        ) from exc
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    if (
        parts.path
        or parts.query
        or parts.fragment
        or "?" in origin
        or "#" in origin
        or parts.username is not None
        or parts.password is not None
        or parts.netloc.endswith(":")
        or scheme not in _DEFAULT_PORTS
        or not (_HOST.fullmatch(host) or _IPV6.fullmatch(host))
        or port == 0
    ):
        raise InputError(
            f"CORS origin {shown} is not an origin; give exactly 'https://host[:port]', "
            "without a path, query, credentials or trailing slash"
        )
    if scheme == "http" and host not in _LOOPBACK_HOSTS:
        raise InputError(
            f"CORS origin {shown} uses plain HTTP; only 'https://' origins are allowed, "
            "or 'http://' on localhost, 127.0.0.1 or [::1] for local development"
        )
    if port is None or port == _DEFAULT_PORTS[scheme]:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def _parse_cors_origins(origins: Sequence[str]) -> frozenset[bytes]:
    if isinstance(origins, str | bytes):
        raise InputError("cors_origins must be a list of origins, not one string")
    return frozenset(parse_cors_origin(origin).encode("ascii") for origin in origins)


class SecurityHeaders:
    """The headers every answer carries: HSTS (over TLS), the fixed security headers,
    ``Cache-Control: no-store`` unless the route set its own, and CORS's ``Vary: Origin``."""

    def __init__(self, *, hsts: bool, cors_origins: Sequence[str] = ()) -> None:
        self.cors_origins = _parse_cors_origins(cors_origins)
        self.headers = ((HSTS,) if hsts else ()) + SECURITY_HEADERS
        self._added = self.secured([])  # what an answer without any of them gets

    def finish_own(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """:meth:`finish` for headers the hub built itself, none of them a CORS, security or
        ``Cache-Control`` field (an inference's answer): the fields to add are known."""
        if self.cors_origins:
            return self.finish(headers)
        return headers + self._added

    def finish(
        self, headers: Iterable[tuple[bytes, bytes]], allowed: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        """An answer's headers as sent: the application's own CORS headers are dropped
        (CORS is decided here), ``allowed`` (an origin) is granted, security headers added."""
        kept = [(name, value) for name, value in headers if not name.lower().startswith(_CORS)]
        if allowed is not None:
            kept.append((b"access-control-allow-origin", allowed))
        return self.secured(kept)

    def secured(self, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """``headers`` plus each security header the application did not set."""
        present = {name.lower() for name, _ in headers}
        added = [(name, value) for name, value in self.headers if name not in present]
        if b"cache-control" not in present:
            added.append((b"cache-control", b"no-store"))
        headers = headers + added
        if self.cors_origins:
            headers = _vary_origin(headers)
        return headers


_CORS = b"access-control-"


class SecurityHeadersMiddleware:
    """Add security headers to every HTTP response and answer (or refuse) CORS preflights."""

    def __init__(self, app: ASGIApp, *, hsts: bool, cors_origins: Sequence[str] = ()) -> None:
        self.app = app
        self.security = SecurityHeaders(hsts=hsts, cors_origins=cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_headers: list[tuple[bytes, bytes]] = list(scope.get("headers", ()))
        origins = [value for name, value in request_headers if name == b"origin"]
        origin = origins[0] if len(origins) == 1 else None
        allowed = origin if origin in self.security.cors_origins else None
        if (
            scope["method"] == "OPTIONS"
            and origins
            and _has(request_headers, b"access-control-request-method")
        ):
            await self._preflight(send, request_headers, allowed)
            return

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = self.security.finish(message.get("headers", ()), allowed)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, sending)

    async def _preflight(
        self, send: Send, request: list[tuple[bytes, bytes]], allowed: bytes | None
    ) -> None:
        method = _first(request, b"access-control-request-method")
        wanted = _first(request, b"access-control-request-headers")
        wanted_names = {h.strip().lower() for h in wanted.split(b",") if h.strip()}
        if allowed is None:
            detail = (
                "cross-origin requests from this origin are not allowed; call the hub from an "
                "origin its administrator listed in its CORS origins"
            )
        elif method.decode("latin-1") not in CORS_ALLOWED_METHODS:
            detail = f"cross-origin requests may use only {', '.join(CORS_ALLOWED_METHODS)}"
        elif not wanted_names <= {h.encode() for h in CORS_ALLOWED_HEADERS}:
            detail = f"cross-origin requests may send only {', '.join(CORS_ALLOWED_HEADERS)}"
        else:
            headers = [
                (b"access-control-allow-origin", allowed),
                (b"access-control-allow-methods", ", ".join(CORS_ALLOWED_METHODS).encode()),
                (b"access-control-allow-headers", ", ".join(CORS_ALLOWED_HEADERS).encode()),
                (b"access-control-max-age", str(CORS_MAX_AGE_SECONDS).encode()),
                (b"content-length", b"0"),
            ]
            secured = self.security.secured(headers)
            await send({"type": "http.response.start", "status": 204, "headers": secured})
            await send({"type": "http.response.body", "body": b""})
            return
        await self._forbidden(send, detail)

    async def _forbidden(self, send: Send, detail: str) -> None:
        body = problem_bytes(403, "forbidden", detail)
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
        ]
        secured = self.security.secured(headers)
        await send({"type": "http.response.start", "status": 403, "headers": secured})
        await send({"type": "http.response.body", "body": body})


def _has(headers: list[tuple[bytes, bytes]], name: bytes) -> bool:
    return any(key == name for key, _ in headers)


def _first(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes:
    return next((value for key, value in headers if key == name), b"")


def _vary_origin(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``Origin`` in ``Vary``: the answer depends on the caller's origin."""
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            tokens = {token.strip().lower() for token in value.split(b",")}
            if b"origin" in tokens or b"*" in tokens:
                return headers
            return [*headers[:index], (name, value + b", Origin"), *headers[index + 1 :]]
    return [*headers, (b"vary", b"Origin")]
