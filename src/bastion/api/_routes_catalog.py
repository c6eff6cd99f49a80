"""Routes over the catalogue: namespaces, models, versions, aliases, yanks and pulls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from bastion.api._security import Caller, require, require_admin
from bastion.api._services import Services, services
from bastion.registry import ModelRef
from bastion.registry._names import check_alias, check_name, check_version

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Svc = Annotated[Services, Depends(services)]


class NamespaceCreate(BaseModel):
    name: str = Field(max_length=64, description="lower-case letters, digits, '.', '_', '-'")
    trust_policy: str = Field(max_length=1 << 20, description="a TOML trust policy, keys inline")


class TrustPolicyBody(BaseModel):
    trust_policy: str = Field(max_length=1 << 20)


class AliasBody(BaseModel):
    version: str = Field(max_length=64)


class YankBody(BaseModel):
    reason: str = Field(min_length=1, max_length=1000)


def _ref(
    namespace: str, model: str, version: str | None = None, alias: str | None = None
) -> ModelRef:
    check_name(namespace, "namespace")
    check_name(model, "model name")
    if version is not None:
        check_version(version)
    if alias is not None:
        check_alias(alias)
    return ModelRef(namespace, model, version, alias)


@router.get("/namespaces", name="namespace.list")
def list_namespaces(principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    return [n for n in svc.catalog.namespaces() if principal.can("reader", n["name"])]


@router.post("/namespaces", name="namespace.create", status_code=201)
def create_namespace(
    body: NamespaceCreate, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    request.state.audit_resource = f"namespace:{body.name}"[:512]
    require_admin(principal)
    return svc.catalog.create_namespace(body.name, body.trust_policy, actor=principal.actor)


@router.get("/namespaces/{namespace}", name="namespace.show")
def show_namespace(namespace: str, principal: Caller, svc: Svc) -> dict[str, Any]:
    check_name(namespace, "namespace")
    require(principal, "reader", namespace)
    return svc.catalog.namespace(namespace)


@router.put("/namespaces/{namespace}/trust-policy", name="namespace.trust")
def set_trust_policy(
    namespace: str, body: TrustPolicyBody, principal: Caller, svc: Svc
) -> dict[str, Any]:
    check_name(namespace, "namespace")
    require(principal, "admin", namespace)
    return svc.catalog.set_trust(namespace, body.trust_policy)


@router.get("/models", name="model.list")
def list_models(principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    visible = principal.visible(n["name"] for n in svc.catalog.namespaces())
    return svc.catalog.models(visible)


@router.get("/models/{namespace}/{model}/versions", name="version.list")
def list_versions(namespace: str, model: str, principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    ref = _ref(namespace, model)
    require(principal, "reader", namespace)
    return svc.catalog.versions(ref.namespace, ref.model)


@router.get("/models/{namespace}/{model}/versions/{version}", name="version.show")
def show_version(
    namespace: str, model: str, version: str, principal: Caller, svc: Svc
) -> dict[str, Any]:
    require(principal, "reader", namespace)
    return svc.catalog.version(_ref(namespace, model, version=version))


@router.get("/models/{namespace}/{model}/aliases/{alias}", name="alias.show")
def show_alias(
    namespace: str, model: str, alias: str, principal: Caller, svc: Svc
) -> dict[str, Any]:
    require(principal, "reader", namespace)
    return svc.catalog.version(_ref(namespace, model, alias=alias))


@router.put("/models/{namespace}/{model}/aliases/{alias}", name="alias.set")
def set_alias(
    namespace: str, model: str, alias: str, body: AliasBody, principal: Caller, svc: Svc
) -> dict[str, Any]:
    ref = _ref(namespace, model, alias=alias)
    require(principal, "publisher", namespace)
    return svc.catalog.set_alias(ref.namespace, ref.model, alias, body.version)


@router.delete("/models/{namespace}/{model}/aliases/{alias}", name="alias.delete", status_code=204)
def delete_alias(namespace: str, model: str, alias: str, principal: Caller, svc: Svc) -> None:
    ref = _ref(namespace, model, alias=alias)
    require(principal, "publisher", namespace)
    svc.catalog.delete_alias(ref.namespace, ref.model, alias)


@router.post("/models/{namespace}/{model}/versions/{version}/yank", name="version.yank")
def yank_version(
    namespace: str, model: str, version: str, body: YankBody, principal: Caller, svc: Svc
) -> dict[str, Any]:
    ref = _ref(namespace, model, version=version)
    require(principal, "publisher", namespace)
    return svc.catalog.yank(ref, body.reason)


@router.get(
    "/models/{namespace}/{model}/versions/{version}/files/{path:path}",
    name="version.pull",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def pull_file(
    namespace: str,
    model: str,
    version: str,
    path: str,
    request: Request,
    principal: Caller,
    svc: Svc,
    allow_yanked: Annotated[bool, Query()] = False,
) -> StreamingResponse:
    ref = _ref(namespace, model, version=version)
    request.state.audit_details = {"file": path[:1024], "allow_yanked": allow_yanked}
    require(principal, "reader", namespace)
    served = await run_in_threadpool(svc.catalog.open_file, ref, path, allow_yanked=allow_yanked)
    return StreamingResponse(
        served.chunks,
        media_type="application/octet-stream",
        headers={"content-length": str(served.size)},
    )
