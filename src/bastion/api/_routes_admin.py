"""Administration routes: API keys, key-encryption key rotation, the audit log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from bastion.api._security import Caller, require_admin
from bastion.api._services import Services, services
from bastion.auth import Role
from bastion.registry import rotate_kek
from bastion.registry._names import check_name

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Svc = Annotated[Services, Depends(services)]


class Binding(BaseModel):
    namespace: str = Field(max_length=64, description="a namespace, or '*' for all")
    role: Literal["reader", "publisher", "admin"]


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    roles: list[Binding] = Field(min_length=1, max_length=100)
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


@router.post("/api-keys", name="apikey.create", status_code=201)
def create_key(body: KeyCreate, principal: Caller, svc: Svc) -> dict[str, Any]:
    require_admin(principal)
    bindings: list[tuple[str, Role]] = []
    for b in body.roles:
        if b.namespace != "*":
            check_name(b.namespace, "namespace")
        bindings.append((b.namespace, b.role))
    now = svc.hub.now()
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    issued = svc.api_keys.create(
        body.name, bindings, created_by=principal.actor, now=now, expires_at=expires
    )
    return {
        "id": issued.key_id,
        "name": issued.name,
        "token": issued.token,
        "expires_at": None if expires is None else expires.isoformat().replace("+00:00", "Z"),
        "roles": [{"namespace": ns, "role": r} for ns, r in issued.bindings],
    }


@router.get("/api-keys", name="apikey.list")
def list_keys(principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    require_admin(principal)
    return svc.api_keys.list()


@router.delete("/api-keys/{key_id}", name="apikey.revoke", status_code=204)
def revoke_key(key_id: str, principal: Caller, svc: Svc) -> None:
    require_admin(principal)
    svc.api_keys.revoke(key_id[:64], now=svc.hub.now())


@router.get("/whoami", name="whoami")
def whoami(principal: Caller) -> dict[str, Any]:
    return {
        "key_id": principal.key_id,
        "name": principal.name,
        "roles": [{"namespace": ns, "role": r} for ns, r in principal.bindings],
    }


@router.post("/admin/kek/rotate", name="kek.rotate")
async def rotate(principal: Caller, svc: Svc) -> dict[str, Any]:
    require_admin(principal)
    result: dict[str, Any] = await run_in_threadpool(rotate_kek, svc.hub)
    return result


@router.get("/audit/entries", name="audit.export")
def audit_entries(
    request: Request,
    principal: Caller,
    svc: Svc,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    since: Annotated[datetime | None, Query()] = None,
) -> Response:
    require_admin(principal)
    request.state.audit_details = {"after": after, "limit": limit}
    lines = svc.audit_reader.entries(after=after, limit=limit, since=since)
    return Response("".join(line + "\n" for line in lines), media_type="application/x-ndjson")


@router.get("/audit/checkpoints", name="audit.checkpoints")
def audit_checkpoints(principal: Caller, svc: Svc) -> Response:
    require_admin(principal)
    lines = svc.audit_reader.checkpoints()
    return Response("".join(line + "\n" for line in lines), media_type="application/x-ndjson")


@router.post("/audit/checkpoints", name="audit.checkpoint", status_code=201)
def audit_checkpoint(principal: Caller, svc: Svc) -> dict[str, Any]:
    require_admin(principal)
    made = svc.audit_reader.checkpoint()
    return {"checkpoint": None if made is None else json.loads(made)}


@router.get("/audit/key", name="audit.key")
def audit_key(principal: Caller, svc: Svc) -> dict[str, Any]:
    require_admin(principal)
    key: dict[str, Any] = svc.audit_reader.public_key()
    return key
