"""The hub's FastAPI application: a versioned REST API under ``/api/v1``.

Its OpenAPI document is served at ``/api/v1/openapi.json``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
from fastapi import FastAPI

from bastion import __version__
from bastion.api._middleware import AuditMiddleware, BodyLimitMiddleware
from bastion.api._problems import install_problem_handlers
from bastion.api._routes_admin import router as admin_router
from bastion.api._routes_catalog import router as catalog_router
from bastion.api._routes_publish import router as publish_router
from bastion.api._security import Caller
from bastion.api._services import Services

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def _lifespan(services: Services) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tasks:
            if services.checkpoint_seconds:
                tasks.start_soon(_checkpoints, services, services.checkpoint_seconds)
            yield
            tasks.cancel_scope.cancel()

    return lifespan


async def _checkpoints(services: Services, every: float) -> None:
    """Sign the audit log's head now and then, so a quiet hub's recent entries are covered."""
    while True:
        await anyio.sleep(every)
        try:
            await anyio.to_thread.run_sync(services.audit_reader.checkpoint)
        except Exception:
            log.exception("could not sign an audit checkpoint; will try again")


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        lifespan=_lifespan(services),
        title="Bastion hub",
        version=__version__,
        description="Signed, scanned, encrypted models; every route but /livez needs an API key.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.services = services
    install_problem_handlers(app)

    @app.get("/livez", name="livez", tags=["health"])
    def livez() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/api/v1/openapi.json", name="openapi", tags=["health"])
    def openapi(_caller: Caller) -> dict[str, Any]:
        return app.openapi()

    app.include_router(catalog_router, tags=["catalogue"])
    app.include_router(publish_router, tags=["publishing"])
    app.include_router(admin_router, tags=["administration"])
    app.add_middleware(BodyLimitMiddleware, limit=services.max_json_body)
    app.add_middleware(AuditMiddleware, services=services)
    return app
