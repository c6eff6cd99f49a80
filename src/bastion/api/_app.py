"""The hub's FastAPI application: a versioned REST API under ``/api/v1``.

Its OpenAPI document is served at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import gc
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from bastion import __version__
from bastion.api._access import PUBLIC_ROUTES, AccessMiddleware
from bastion.api._admission import Admission
from bastion.api._hygiene import SecurityHeaders, SecurityHeadersMiddleware
from bastion.api._inference_gate import InferenceGate
from bastion.api._middleware import AuditMiddleware, BodyLimitMiddleware
from bastion.api._problems import install_problem_handlers
from bastion.api._routes_admin import router as admin_router
from bastion.api._routes_catalog import router as catalog_router
from bastion.api._routes_deployments import router as deployments_router
from bastion.api._routes_gateway import router as gateway_router
from bastion.api._routes_identity import router as identity_router
from bastion.api._routes_publish import router as publish_router
from bastion.api._security import Caller, authorize
from bastion.api._services import Services
from bastion.auth import ACTIONS, PolicyResource
from bastion.errors import IntegrityError, InternalError

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _lifespan(services: Services) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if services.inference_records is not None:
            services.inference_records.start()
        if services.gateway is not None:
            await services.gateway.start()
        _settle_garbage_collector()
        try:
            async with anyio.create_task_group() as tasks:
                if services.checkpoint_seconds:
                    tasks.start_soon(_checkpoints, services, services.checkpoint_seconds)
                yield
                tasks.cancel_scope.cancel()
        finally:
            if services.gateway is not None:
                await services.gateway.stop()
            if services.inference_records is not None:
                services.inference_records.close()

    return lifespan


def _settle_garbage_collector() -> None:
    """Move what start-up built (libraries, policies, schemas) out of the collector's way.

    Everything alive now stays alive; frozen, a full collection no longer walks it, which
    otherwise stalls a request for tens of milliseconds now and then. Young objects are
    collected less often too: a request allocates hundreds (JSON, tensors, headers).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])


async def _checkpoints(services: Services, every: float) -> None:
    """Sign the audit log's head now and then, so a quiet hub's recent entries are covered."""
    while True:
        await anyio.sleep(every)
        try:
            await anyio.to_thread.run_sync(services.audit_reader.checkpoint)
        except IntegrityError as exc:  # the log says why once; this repeats it as a reminder
            log.error("no audit checkpoint signed: %s", exc.message)
        except Exception:
            log.exception("could not sign an audit checkpoint; will try again")


#: Allocations between two collections of the youngest generation (CPython's default: 700).
_GC_YOUNG = 20_000
#: FastAPI's own OpenTelemetry instrumentation (0.165 and later) costs every request an
#: environment lookup even when no provider is configured; the server has its own metrics.
_NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)


class HubApp(FastAPI):
    """The hub's application, with the gate its transport serves inference calls through
    (:class:`~bastion.api._transport.HubHttpProtocol`); called as ASGI, every request,
    inference calls included, goes through the middleware stack and FastAPI."""

    gate: InferenceGate | None = None


def create_app(services: Services) -> FastAPI:
    app = HubApp(
        **_NO_TELEMETRY,
        lifespan=_lifespan(services),
        title="Bastion hub",
        version=__version__,
        description=(
            "Signed, scanned, encrypted models. Every route but /livez, signing in and "
            "enrolment needs a credential (API key, session or OIDC token), and every "
            "request is decided by the Cedar policies in force."
        ),
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
        # Starlette answers a path with a stray trailing slash by a 307 to the other
        # spelling, with no problem body, built from the request's Host header: a forged
        # Host made it a redirect to another site. Such a path is not found, like any other.
        redirect_slashes=False,
    )
    app.state.services = services
    install_problem_handlers(app)

    @app.get("/livez", name="livez", tags=["health"])
    def livez() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/api/v1/openapi.json", name="openapi", tags=["health"])
    async def openapi(request: Request, caller: Caller) -> dict[str, Any]:
        authorize(request, caller, PolicyResource.hub())
        return _documented(app)

    routers = {
        "catalogue": catalog_router,
        "publishing": publish_router,
        "administration": admin_router,
        "identity": identity_router,
        "deployments": deployments_router,
        "inference": gateway_router,
    }
    for tag, router in routers.items():
        app.include_router(router, tags=[tag])
    routes: list[BaseRoute] = [r for r in app.router.routes if isinstance(r, APIRoute)]
    routes += [r for router in routers.values() for r in router.routes]
    _check_routes(routes)
    admission = Admission(services)
    app.add_middleware(BodyLimitMiddleware, limit=services.max_json_body)
    app.add_middleware(AccessMiddleware, admission=admission, routes=routes)
    app.add_middleware(AuditMiddleware, services=services)
    app.add_middleware(
        SecurityHeadersMiddleware, hsts=services.hsts, cors_origins=services.cors_origins
    )
    security = SecurityHeaders(hsts=services.hsts, cors_origins=services.cors_origins)
    app.gate = InferenceGate(admission, security, limit=services.max_json_body)
    return app


_PROBLEM = {
    "description": "A problem document (RFC 9457) with Bastion's stable error code",
    "content": {
        "application/problem+json": {
            "schema": {
                "type": "object",
                "required": ["type", "title", "status", "detail", "code"],
                "properties": {
                    "type": {"type": "string"},
                    "title": {"type": "string"},
                    "status": {"type": "integer"},
                    "detail": {"type": "string"},
                    "code": {"type": "string"},
                    "error": {"type": "string"},
                    "instance": {"type": "string"},
                },
            }
        }
    },
}


def _documented(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document as the hub answers: invalid input is a 400 problem document
    (FastAPI documents its own 422 validation error, which the hub never sends)."""
    if app.openapi_schema is None:
        document = app.openapi()
        for item in document.get("paths", {}).values():
            for operation in item.values():
                responses = operation.get("responses", {})
                if responses.pop("422", None) is not None:
                    responses["400"] = _PROBLEM
        document.get("components", {}).get("schemas", {}).pop("HTTPValidationError", None)
        document.get("components", {}).get("schemas", {}).pop("ValidationError", None)
    schema: dict[str, Any] = app.openapi()
    return schema


def _check_routes(routes: list[BaseRoute]) -> None:
    """Every route is public by name or is a Cedar action: a route no policy covers fails here."""
    for route in routes:
        name = getattr(route, "name", None)
        if name not in PUBLIC_ROUTES and name not in ACTIONS:
            raise InternalError(
                f"route {getattr(route, 'path', route)!r} is named {name!r}, which is neither "
                "public nor an action of the Cedar schema; add the action to the schema"
            )
