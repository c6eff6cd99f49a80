"""Admission: may this caller call now? The access layer's checks, without ASGI.

:class:`Admission` applies the rate limits around authentication
(:class:`~bastion.api._credentials.Credentials`), in the order the access layer documents
(:mod:`bastion.api._access`); both the access middleware and the gateway's inference gate
(:mod:`bastion.api._inference_gate`) call it, so that the hot inference path and every other
route are admitted by the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from starlette.types import Scope, Send

from bastion.api._credentials import Credentials
from bastion.api._problems import STATUS, send_problem
from bastion.api._routes_gateway import refused_record
from bastion.api._security import UNKNOWN_ADDRESS
from bastion.api._services import Services
from bastion.errors import AuthenticationError, BastionError, RateLimitedError

__all__ = ["PUBLIC_ROUTES", "Admission", "OverLimit", "refuse"]

log = logging.getLogger(__name__)

#: Routes anyone may call. Everything else needs a credential and a policy decision.
PUBLIC_ROUTES = frozenset(
    {"livez", "gateway.live", "session.create", "enrol.begin", "enrol.finish"}
)
#: Public routes outside every rate limit (orchestrators poll liveness).
_UNLIMITED = frozenset({"livez", "gateway.live"})


class OverLimit(Exception):
    """A request over a rate limit: the error to answer and the limit's headers."""

    def __init__(self, error: RateLimitedError, headers: list[tuple[str, str]]) -> None:
        super().__init__(error.message)
        self.error = error
        self.headers = headers


class Admission:
    """Authenticate a request and apply its rate limits; one per application."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.credentials = Credentials(services)

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
            principal = await self.credentials.authenticate(scope)
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
