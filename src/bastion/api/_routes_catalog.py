"""Routes over the catalogue: namespaces, models, versions, aliases, yanks and pulls."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from bastion.api._security import Caller, allowed, authorize
from bastion.api._services import Services, services
from bastion.auth import PolicyResource, Principal
from bastion.errors import (
    NotFoundError,
    PermissionDeniedError,
    QuarantinedError,
    VersionYankedError,
)
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


class ClassifyBody(BaseModel):
    classification: str = Field(max_length=32, description="e.g. public, internal, restricted")


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


_VERDICTS = {"published": "clean", "quarantined": "quarantined"}


def model_resource(svc: Services, namespace: str, model: str) -> PolicyResource:
    """A model as the policies see it, with its data classification."""
    classification = svc.catalog.classification(namespace, model)
    return PolicyResource.model(namespace, model, classification=classification)


def authorize_version(
    request: Request,
    principal: Principal,
    svc: Services,
    ref: ModelRef,
    *,
    allow_yanked: bool = False,
    action: str | None = None,
) -> None:
    """Decide the route's action (or ``action``) on a version (or alias) with its scan verdict
    and yank state.

    A caller the policies would not let near the version gets 403 whether or not it exists.
    Where only a guard stood in the way, the caller learns which: quarantined (422) or
    yanked (410, pull again with allow_yanked).
    """
    try:
        version, state, yank_reason, classification = svc.catalog.version_state(ref)
    except NotFoundError:
        authorize(
            request,
            principal,
            PolicyResource.of_version(ref.namespace, ref.model, "0"),
            action=action,
        )
        raise
    resource = PolicyResource.of_version(
        ref.namespace,
        ref.model,
        version,
        classification=classification,
        scan_verdict=_VERDICTS.get(state, "pending"),
        yanked=yank_reason is not None,
    )
    try:
        authorize(request, principal, resource, allow_yanked=allow_yanked, action=action)
    except PermissionDeniedError as exc:
        reasons = request.state.audit_details["policy"]["reasons"]
        if reasons == ["guard.quarantine"]:
            raise QuarantinedError(f"{resource.id} is {state} and is never served") from exc
        if reasons in (["guard.yanked-pull"], ["guard.yanked-deploy"]):
            raise VersionYankedError(
                f"{resource.id} was yanked ({yank_reason}); pass allow_yanked (--allow-yanked) "
                "to pull it anyway"
            ) from exc
        raise


@router.get("/namespaces", name="namespace.list")
def list_namespaces(request: Request, principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    authorize(request, principal, PolicyResource.hub())
    return _visible(request, principal, svc.catalog.namespaces())


def _visible(
    request: Request, principal: Principal, namespaces: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    shown = allowed(
        request,
        principal,
        "namespace.show",
        [PolicyResource.of_namespace(n["name"]) for n in namespaces],
    )
    names = {r.namespace for r in shown}
    return [n for n in namespaces if n["name"] in names]


@router.post("/namespaces", name="namespace.create", status_code=201)
def create_namespace(
    body: NamespaceCreate, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    request.state.audit_resource = f"namespace:{body.name}"[:512]
    authorize(request, principal, PolicyResource.hub())
    return svc.catalog.create_namespace(body.name, body.trust_policy, actor=principal.actor)


@router.get("/namespaces/{namespace}", name="namespace.show")
def show_namespace(namespace: str, request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    check_name(namespace, "namespace")
    authorize(request, principal, PolicyResource.of_namespace(namespace))
    return svc.catalog.namespace(namespace)


@router.put("/namespaces/{namespace}/trust-policy", name="namespace.trust")
def set_trust_policy(
    namespace: str, body: TrustPolicyBody, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    check_name(namespace, "namespace")
    authorize(request, principal, PolicyResource.of_namespace(namespace))
    return svc.catalog.set_trust(namespace, body.trust_policy)


@router.get("/models", name="model.list")
def list_models(request: Request, principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    namespaces = [PolicyResource.of_namespace(n["name"]) for n in svc.catalog.namespaces()]
    visible = allowed(request, principal, "model.list", namespaces)
    return svc.catalog.models([r.namespace for r in visible])


@router.get("/models/{namespace}/{model}/versions", name="version.list")
def list_versions(
    namespace: str, model: str, request: Request, principal: Caller, svc: Svc
) -> list[dict[str, Any]]:
    ref = _ref(namespace, model)
    authorize(request, principal, model_resource(svc, namespace, model))
    return svc.catalog.versions(ref.namespace, ref.model)


@router.get("/models/{namespace}/{model}/versions/{version}", name="version.show")
def show_version(
    namespace: str, model: str, version: str, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    ref = _ref(namespace, model, version=version)
    authorize_version(request, principal, svc, ref)
    return svc.catalog.version(ref)


@router.get("/models/{namespace}/{model}/aliases/{alias}", name="alias.show")
def show_alias(
    namespace: str, model: str, alias: str, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    ref = _ref(namespace, model, alias=alias)
    authorize(request, principal, model_resource(svc, namespace, model))
    return svc.catalog.version(ref)


@router.put("/models/{namespace}/{model}/aliases/{alias}", name="alias.set")
def set_alias(
    namespace: str,
    model: str,
    alias: str,
    body: AliasBody,
    request: Request,
    principal: Caller,
    svc: Svc,
) -> dict[str, Any]:
    ref = _ref(namespace, model, alias=alias)
    authorize(request, principal, model_resource(svc, namespace, model))
    return svc.catalog.set_alias(ref.namespace, ref.model, alias, body.version)


@router.delete("/models/{namespace}/{model}/aliases/{alias}", name="alias.delete", status_code=204)
def delete_alias(
    namespace: str, model: str, alias: str, request: Request, principal: Caller, svc: Svc
) -> None:
    ref = _ref(namespace, model, alias=alias)
    authorize(request, principal, model_resource(svc, namespace, model))
    svc.catalog.delete_alias(ref.namespace, ref.model, alias)


@router.put("/models/{namespace}/{model}/classification", name="model.classify")
def classify_model(
    namespace: str,
    model: str,
    body: ClassifyBody,
    request: Request,
    principal: Caller,
    svc: Svc,
) -> dict[str, Any]:
    ref = _ref(namespace, model)
    authorize(request, principal, model_resource(svc, namespace, model))
    request.state.audit_details["classification"] = body.classification
    return svc.catalog.classify(ref.namespace, ref.model, body.classification)


@router.post("/models/{namespace}/{model}/versions/{version}/yank", name="version.yank")
async def yank_version(
    namespace: str,
    model: str,
    version: str,
    body: YankBody,
    request: Request,
    principal: Caller,
    svc: Svc,
) -> dict[str, Any]:
    """Yank a version; deployments serving it roll back to their last good revision."""
    ref = _ref(namespace, model, version=version)

    def yank() -> dict[str, Any]:
        authorize_version(request, principal, svc, ref)
        return svc.catalog.yank(ref, body.reason)

    done = await run_in_threadpool(yank)
    if svc.gateway is not None:
        rolled = await svc.gateway.version_yanked(str(ref))
        done["rolled_back"] = rolled
        if rolled:
            request.state.audit_details["rolled_back"] = rolled
    return done


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
    await run_in_threadpool(
        lambda: authorize_version(request, principal, svc, ref, allow_yanked=allow_yanked)
    )
    served = await run_in_threadpool(svc.catalog.open_file, ref, path, allow_yanked=allow_yanked)
    return StreamingResponse(
        served.chunks,
        media_type="application/octet-stream",
        headers={"content-length": str(served.size)},
    )
