"""Administration routes: API keys, key-encryption key rotation, the audit log."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field

from bastion._key_text import key_id_named
from bastion.api._bodies import Binding, bindings_of, iso_time
from bastion.api._security import Caller, authorize
from bastion.api._services import Services, services
from bastion.auth import IssuedKey, PolicyResource
from bastion.errors import NotFoundError
from bastion.registry import rotate_kek

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Svc = Annotated[Services, Depends(services)]


_HUB = PolicyResource.hub()
_AUDIT = PolicyResource.audit_log()
#: The last row a page of audit entries holds: readers ask for the next page after it.
_NEXT_AFTER = "Bastion-Audit-Next-After"


class KeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    roles: list[Binding] = Field(min_length=1, max_length=100)
    scope: list[str] | None = Field(
        default=None,
        max_length=100,
        description="actions or action groups the key may use ('*': all); default: its roles'",
    )
    expires_in_days: int | None = Field(default=90, ge=1, le=3650)


def _issued(issued: IssuedKey) -> dict[str, Any]:
    return {
        "id": issued.key_id,
        "name": issued.name,
        "token": issued.token,
        "expires_at": iso_time(issued.expires_at),
        "roles": [{"namespace": ns, "role": r} for ns, r in issued.bindings],
        "scope": list(issued.scope),
    }


@router.post("/api-keys", name="apikey.create", status_code=201)
def create_key(body: KeyCreate, request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    authorize(request, principal, _HUB)
    bindings = bindings_of(body.roles)
    now = svc.hub.now()
    expires = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    issued = svc.api_keys.create(
        body.name,
        bindings,
        created_by=principal.actor,
        now=now,
        expires_at=expires,
        scope=body.scope,
    )
    request.state.audit_details.update(key_id=issued.key_id, scope=list(issued.scope))
    return _issued(issued)


@router.get("/api-keys", name="apikey.list")
def list_keys(request: Request, principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    authorize(request, principal, _HUB)
    return svc.api_keys.list()


@router.delete("/api-keys/{key_id}", name="apikey.revoke", status_code=204)
def revoke_key(key_id: str, request: Request, principal: Caller, svc: Svc) -> None:
    authorize(request, principal, _HUB)
    svc.api_keys.revoke(_named_key(key_id), now=svc.hub.now())


@router.post("/api-keys/{key_id}/rotate", name="apikey.rotate")
def rotate_key(key_id: str, request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    authorize(request, principal, _HUB)
    return _issued(svc.api_keys.rotate(_named_key(key_id), now=svc.hub.now()))


def _named_key(text: str) -> str:
    """The id of the key a path names; a whole key (sent by mistake) names its own id."""
    return key_id_named(text, NotFoundError)


@router.get("/whoami", name="whoami")
async def whoami(request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    authorize(request, principal, _HUB)
    now = svc.hub.now()
    return {
        "kind": principal.kind,
        "id": principal.id,
        "key_id": principal.id if principal.kind == "ServiceAccount" else None,
        "name": principal.name,
        "actor": principal.actor,
        "auth_method": principal.auth_method,
        "roles": [{"namespace": ns, "role": r} for ns, r in principal.roles],
        "groups": list(principal.groups),
        "scope": list(principal.scope),
        "mfa_age_seconds": principal.mfa_age(now),
        "client_certificate": principal.client_certificate,
    }


@router.post("/admin/kek/rotate", name="kek.rotate")
async def rotate(request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    await run_in_threadpool(authorize, request, principal, _HUB)
    result: dict[str, Any] = await run_in_threadpool(rotate_kek, svc.hub)
    return result


@router.get("/audit/entries", name="audit.export")
def audit_entries(
    request: Request,
    principal: Caller,
    svc: Svc,
    after: Annotated[int, Query(ge=0, le=2**53 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    since: Annotated[datetime | None, Query()] = None,
) -> Response:
    authorize(request, principal, _AUDIT)
    request.state.audit_details.update(after=after, limit=limit)
    lines, next_after = svc.audit_reader.page(after=after, limit=limit, since=since)
    return Response(
        "".join(line + "\n" for line in lines),
        media_type="application/x-ndjson",
        headers={_NEXT_AFTER: str(next_after)},
    )


@router.get("/audit/checkpoints", name="audit.checkpoints")
def audit_checkpoints(request: Request, principal: Caller, svc: Svc) -> Response:
    authorize(request, principal, _AUDIT)
    lines = svc.audit_reader.checkpoints()
    return Response("".join(line + "\n" for line in lines), media_type="application/x-ndjson")


@router.post("/audit/checkpoints", name="audit.checkpoint", status_code=201)
def audit_checkpoint(request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    authorize(request, principal, _AUDIT)
    made = svc.audit_reader.checkpoint()
    return {"checkpoint": None if made is None else json.loads(made)}


@router.get("/audit/key", name="audit.key")
def audit_key(request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    authorize(request, principal, _AUDIT)
    key: dict[str, Any] = svc.audit_reader.public_key()
    return key
