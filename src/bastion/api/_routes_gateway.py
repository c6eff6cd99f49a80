"""The inference gateway's Open Inference Protocol (KServe v2) routes and its metrics.

Every call to a deployment is authorised (``invoke``), validated and answered by
:mod:`bastion.serving`; each one, served or refused, leaves an inference record and
metrics instead of an audit entry (the audit log keeps changes, not traffic).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.types import Scope

from bastion import __version__
from bastion._names import is_name
from bastion.api._problems import status_for
from bastion.api._security import Caller, authorize
from bastion.api._services import Services, services_of
from bastion.auth import PolicyResource, Principal
from bastion.auth._policy_schema import ALL_NAMESPACES
from bastion.errors import BastionError, InputError, ModelUnavailableError, NotFoundError
from bastion.serving._gateway import Gateway
from bastion.serving._live import Answer, LiveDeployment
from bastion.serving._record_summary import summarise_outputs
from bastion.serving._records import InferenceRecord

__all__ = [
    "call_deployment",
    "gateway_of",
    "refused_record",
    "router",
    "served_deployment",
]

log = logging.getLogger(__name__)

router = APIRouter()
_HUB = PolicyResource.hub()
#: The OIP extensions the gateway speaks.
_EXTENSIONS = ["binary_tensor_data"]
#: The request headers an inference call reads; each may be given once.
_READ_ONCE = (b"content-type", b"inference-header-content-length")


def gateway_of(svc: Services) -> Gateway:
    if svc.gateway is None:
        raise ModelUnavailableError("this server runs no inference gateway")
    return svc.gateway


def served_deployment(request: Request, principal: Principal, name: str) -> LiveDeployment:
    """The deployment called ``name``, once the route's action on it is allowed.

    A caller the policies would not allow on a deployment of that name in every namespace
    gets 403 whether or not it exists, so names cannot be probed.
    """
    live = gateway_of(services_of(request)).live.get(name)
    if live is None:
        if is_name(name):
            authorize(request, principal, PolicyResource.deployment(ALL_NAMESPACES, name))
        raise NotFoundError(f"no deployment {name[:64]!r} is served here")
    authorize(request, principal, live.resource)
    return live


@router.get("/v2/health/live", name="gateway.live")
async def live() -> dict[str, Any]:
    return {"live": True}


@router.get("/v2/health/ready", name="gateway.status")
async def ready(request: Request, principal: Caller) -> dict[str, Any]:
    authorize(request, principal, _HUB)
    return {"ready": services_of(request).gateway is not None}


@router.get("/v2", name="gateway.status")
async def server_metadata(request: Request, principal: Caller) -> dict[str, Any]:
    authorize(request, principal, _HUB)
    return {"name": "bastion", "version": __version__, "extensions": _EXTENSIONS}


@router.get("/v2/models/{deployment}", name="invoke")
async def model_metadata(deployment: str, request: Request, principal: Caller) -> dict[str, Any]:
    served = served_deployment(request, principal, deployment)
    return served.metadata(served.tier_of(principal.groups))


@router.get("/v2/models/{deployment}/ready", name="invoke")
async def model_ready(deployment: str, request: Request, principal: Caller) -> dict[str, Any]:
    served = served_deployment(request, principal, deployment)
    return {"name": deployment, "ready": served.ready()}


@router.post("/v2/models/{deployment}/infer", name="invoke")
async def infer(deployment: str, request: Request, principal: Caller) -> Response:
    """An inference (the inference gate answers most before the application; this route serves
    calls with an Origin header, which go through the full stack)."""
    body = await request.body()
    answer = await call_deployment(request, principal, deployment, body, request.headers)
    return Response(answer.body, headers=answer.headers)


async def call_deployment(
    request: Request,
    principal: Principal,
    deployment: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    alone: bool = False,
) -> Answer:
    """Authorise, run and account for one inference call; refusals are counted and recorded.

    ``alone`` says that the server has no other request on its way (see Worker.infer).

    The metrics and the inference record are taken once the answer is on its way (the
    event loop's next turn, before it reads another request), so neither delays the caller.
    """
    call = _Call(gateway_of(services_of(request)), request, principal, deployment, body)
    try:
        served = served_deployment(request, principal, deployment)
        _refuse_repeated(request.scope["headers"])
        answer = await served.infer(
            principal.actor,
            served.tier_of(principal.groups),
            body,
            headers.get("content-type"),
            headers,
            alone=alone,
        )
    except BastionError as exc:
        call.account_soon(exc=exc)
        raise
    call.account_soon(answer=answer)
    return answer


def _refuse_repeated(raw: list[tuple[bytes, bytes]]) -> None:
    """Refuse a repeated header the call reads: which copy counts would be a guess."""
    seen: list[bytes] = []
    for key, _ in raw:
        name = key.lower()
        if name in _READ_ONCE:
            if name in seen:
                raise InputError(
                    f"the request gives its {name.decode()} header more than once; send it once"
                )
            seen.append(name)


@dataclass(slots=True)
class _Call:
    """One inference call, counted and recorded once its answer has left."""

    gateway: Gateway
    request: Request
    principal: Principal
    deployment: str
    body: bytes
    started: float = field(default_factory=time.perf_counter)

    def account_soon(
        self, *, answer: Answer | None = None, exc: BastionError | None = None
    ) -> None:
        seconds = time.perf_counter() - self.started  # the latency, whenever it is accounted
        asyncio.get_running_loop().call_soon(self._account, seconds, answer, exc)

    def _account(self, seconds: float, answer: Answer | None, exc: BastionError | None) -> None:
        try:
            if answer is not None:
                self.gateway.metrics.served(self.deployment, answer.version, seconds, 200)
            elif exc is not None:
                self.gateway.metrics.rejected(self.deployment, exc.code)
            records = services_of(self.request).inference_records
            if records is not None:
                records.record(self._record(seconds, answer, exc))
        except Exception:  # the caller has its answer; the failure goes to the log
            log.exception("could not account for an inference call to %r", self.deployment)

    def _record(
        self, seconds: float, answer: Answer | None, exc: BastionError | None
    ) -> InferenceRecord:
        return InferenceRecord(
            time=time.time(),
            request_id=self.request.state.request_id,
            principal=self.principal.actor,
            deployment=self.deployment,
            version=answer.version if answer is not None else "",
            input_digest="sha256:" + hashlib.sha256(self.body).hexdigest(),
            status=200 if exc is None else status_for(exc),
            outcome="ok" if exc is None else exc.code,
            latency_ms=seconds * 1000.0,
            output=summarise_outputs(answer.outputs) if answer is not None else None,
            arm=answer.arm if answer is not None else "stable",
        )


def refused_record(
    scope: Scope, deployment: str, exc: BastionError, source: str
) -> InferenceRecord:
    """The record of a call refused before its body was read (no credential, over a limit)."""
    state = scope.get("state", {})
    principal: Principal | None = state.get("principal")
    return InferenceRecord(
        time=time.time(),
        request_id=str(state.get("request_id", "")),
        principal=principal.actor if principal is not None else f"anonymous@{source}",
        deployment=deployment,
        version="",
        input_digest="",
        status=status_for(exc),
        outcome=exc.code,
        latency_ms=0.0,
        output=None,
    )


@router.get(
    "/metrics",
    name="gateway.metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request, principal: Caller) -> Response:
    authorize(request, principal, _HUB)
    gateway = gateway_of(services_of(request))
    body, content_type = gateway.metrics.render()
    return Response(body, media_type=content_type)
