"""The access layer: every request is authenticated and rate-limited before it is routed.

Order, cheapest refusal first:

1. The route is looked up (the same match the router makes). Public routes (liveness,
   signing in, enrolment) need no credential; all but liveness are limited per source
   address.
2. A source address that has sent too many bad credentials is refused (429) without
   looking at the credential.
3. The credential is checked: an API key (``bst_...``), a session (``bss_...``, or the
   session cookie, which also needs the CSRF header on unsafe methods), an OIDC bearer
   token (three dot-separated parts), or a verified client certificate mapped to a
   service account. Failure: 401, counted against the source address.
4. The principal's limits (per principal, per route, per model, quotas) are hit; over
   them: 429 with ``Retry-After``. Every answer carries the ``RateLimit-*`` headers.

The route then authorises its action against the resource with the policies in force
(:mod:`bastion.api._security`). Refusals here are cheaper than any served request: no
body is read, no route runs, and 429s are counted, not written to the audit log one by
one (a flood would otherwise write the log at the flood's rate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.api._admission import PUBLIC_ROUTES, Admission, OverLimit, refuse
from bastion.api._credentials import session_cookie
from bastion.errors import BastionError

__all__ = ["PUBLIC_ROUTES", "AccessMiddleware", "session_cookie"]

#: Requests (method and path) whose route the access layer remembers.
_MATCH_CACHE = 4096


class AccessMiddleware:
    def __init__(self, app: ASGIApp, admission: Admission, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.admission = admission
        self.routes = routes
        self._matches: dict[tuple[str, str], tuple[str | None, dict[str, Any]]] = {}

    def _match(self, scope: Scope) -> tuple[str | None, dict[str, Any]]:
        """The route a request goes to (by name) and its path parameters.

        Full matches are remembered per method and path (a bounded cache): the linear scan
        over every route's pattern costs more than a served inference's validation.
        """
        key = (scope["method"], scope["path"])
        known = self._matches.get(key)
        if known is not None:
            return known[0], dict(known[1])
        name, params, full = self._scan(scope)
        if name is not None and full:
            if len(self._matches) >= _MATCH_CACHE:
                self._matches.pop(next(iter(self._matches)))
            self._matches[key] = (name, params)
        return name, params

    def _scan(self, scope: Scope) -> tuple[str | None, dict[str, Any], bool]:
        partial: tuple[str | None, dict[str, Any], bool] | None = None
        for route in self.routes:
            match, child = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "name", None), child.get("path_params", {}), True
            if match == Match.PARTIAL and partial is None:
                partial = (getattr(route, "name", None), child.get("path_params", {}), False)
        return partial if partial is not None else (None, {}, False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        route, params = self._match(scope)
        state["route_name"] = route
        state["path_params"] = params
        try:
            await self.admission.admit(scope, route, params)
        except OverLimit as over:
            self.admission.refused(scope, route, params, over.error)
            await refuse(scope, send, over.error, over.headers)
            return
        except BastionError as exc:
            self.admission.refused(scope, route, params, exc)
            await refuse(scope, send, exc, [])
            return
        await self._forward(scope, receive, send)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = scope.get("state", {}).get("rate_limit")
        if not headers:
            await self.app(scope, receive, send)
            return
        extra = [(k.lower().encode(), v.encode()) for k, v in headers]

        async def sending(message: Any) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, sending)
