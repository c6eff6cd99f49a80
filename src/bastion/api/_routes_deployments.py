"""Managing the gateway's deployments: deploy, canary, shadow, promote, roll back, remove,
and the export of inference records. Every change is audited (it is a POST or DELETE).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from bastion.api._routes_catalog import authorize_version
from bastion.api._routes_gateway import gateway_of, served_deployment
from bastion.api._security import Caller, allowed, authorize
from bastion.api._services import Services, services
from bastion.auth import PolicyResource, Principal
from bastion.errors import InputError, ModelUnavailableError, UsageError
from bastion.registry import parse_ref
from bastion.registry._names import check_name
from bastion.serving._deployment_config import DeploymentConfig, UpstreamTarget
from bastion.serving._deployment_store import DeploymentRecord, check_deployment_name
from bastion.serving._live import LiveDeployment
from bastion.serving._records_reader import read_records
from bastion.serving._rollout_guard import RolloutThresholds
from bastion.serving._routing import RoutePlan

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Svc = Annotated[Services, Depends(services)]
_HUB = PolicyResource.hub()


class DeployBody(BaseModel):
    name: str = Field(max_length=64, description="the deployment's name (/v2/models/NAME)")
    versions: list[str] = Field(
        default_factory=list,
        max_length=16,
        description="ns/model@version (or :alias) refs; several for --switch or --ensemble",
    )
    mode: Literal["single", "switch", "ensemble"] = "single"
    method: Literal["vote", "mean", "random", "weighted"] | None = None
    weights: list[float] | None = Field(default=None, max_length=16)
    canary: float | None = Field(default=None, gt=0, lt=100, description="percent of callers")
    shadow: bool = False
    output: dict[str, str] | None = Field(
        default=None, description="output policy per caller tier, e.g. {'default': 'top-k=3'}"
    )
    value_ranges: dict[str, tuple[float, float]] | None = None
    max_batch: int | None = Field(default=None, ge=1, le=1 << 20)
    rollout: dict[str, Any] | None = Field(
        default=None, description="automatic rollback thresholds (docs/gateway.md)"
    )
    upstream: str | None = Field(default=None, max_length=512, description="an OIP server URL")
    upstream_model: str | None = Field(default=None, max_length=128)
    namespace: str | None = Field(
        default=None, max_length=64, description="the namespace of an upstream deployment"
    )
    revision: int | None = Field(
        default=None, description="change only if the deployment is at this revision"
    )


class RollbackBody(BaseModel):
    reason: str = Field(default="", max_length=1000)


def _config(body: DeployBody, base: DeploymentConfig | None) -> DeploymentConfig:
    data: dict[str, Any] = {} if base is None else base.to_dict()
    if body.output is not None:
        data["output"] = body.output
    if body.value_ranges is not None:
        data["value_ranges"] = {k: list(v) for k, v in body.value_ranges.items()}
    if body.max_batch is not None:
        data["max_batch"] = body.max_batch
    if body.rollout is not None:  # fields not given keep their defaults
        data["rollout"] = {**RolloutThresholds().to_dict(), **body.rollout}
    if body.upstream is not None:
        if not body.upstream_model:
            raise InputError("an upstream deployment needs upstream_model (--upstream-model)")
        target = UpstreamTarget(body.upstream, body.upstream_model)
        data["upstream"] = {"url": target.url, "model": target.model}
    return DeploymentConfig.from_dict(data)


def _refs(request: Request, principal: Principal, svc: Services, texts: list[str]) -> list[str]:
    """Each ref authorised for ``deploy`` and resolved to its exact version."""
    exact: list[str] = []
    for text in texts:
        ref = parse_ref(text)
        authorize_version(request, principal, svc, ref, action="deploy")
        resolved, _info = gateway_of(svc).source.resolve(text)
        exact.append(str(resolved))
    return exact


@router.post("/deployments", name="deploy")
async def deploy(body: DeployBody, request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    gateway = gateway_of(svc)
    name = check_deployment_name(body.name)
    current = gateway.live.get(name)
    record = current.record if current is not None else None
    details: dict[str, Any] = {"deployment": name}
    request.state.audit_details = details
    request.state.audit_resource = f"deployment:{name}"
    if body.upstream is not None:
        if body.versions or body.canary or body.shadow:
            raise UsageError("an upstream deployment names no hub versions, canary or shadow")
        namespace = check_name(body.namespace or "", "namespace")
        authorize(request, principal, PolicyResource.deployment(namespace, name),
                  action="deployment.manage")  # fmt: skip
        config = _config(body, record.config if record else None)
        details.update(upstream=body.upstream, upstream_model=body.upstream_model or "")
        done = await gateway.apply(
            name, namespace, None, config, actor=principal.actor, change="deploy",
            expect_revision=_expected_revision(body, record),
        )  # fmt: skip
        return done.to_dict()
    if not body.versions:
        raise InputError("name at least one version to deploy (ns/model@version)")
    refs = await anyio.to_thread.run_sync(lambda: _refs(request, principal, svc, body.versions))
    namespace = parse_ref(refs[0]).namespace
    if any(parse_ref(r).namespace != namespace for r in refs):
        raise InputError("every version of one deployment must come from the same namespace")
    details["versions"] = refs
    if current is not None:  # changing a deployment, not only deploying versions
        authorize(request, principal, current.resource, action="deployment.manage")
    config = _config(body, record.config if record else None)
    if body.canary is not None or body.shadow:
        if record is None or record.plan is None:
            raise InputError(
                f"deploy a stable version to {name} first; a canary or shadow joins one"
            )
        if len(refs) != 1:
            raise InputError("a canary or shadow is one version")
        plan = (
            record.plan.with_shadow(refs[0])
            if body.shadow
            else record.plan.with_canary(refs[0], body.canary or 0.0)
        )
        change = "shadow" if body.shadow else "canary"
    else:
        plan = RoutePlan(
            stable=tuple(refs),
            mode=body.mode,
            method=body.method,
            weights=None if body.weights is None else tuple(body.weights),
        )
        change = "deploy"
    done = await gateway.apply(
        name, namespace, plan, config, actor=principal.actor, change=change,
        expect_revision=_expected_revision(body, record),
    )  # fmt: skip
    return done.to_dict()


def _expected_revision(body: DeployBody, record: DeploymentRecord | None) -> int | None:
    """The revision the change applies to: the caller's, else the one served now."""
    if body.revision is not None:
        return body.revision
    return None if record is None else record.revision


@router.get("/deployments", name="deployment.list")
async def list_deployments(request: Request, principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    authorize(request, principal, _HUB)
    gateway = gateway_of(svc)
    shown = {
        r.id
        for r in allowed(
            request, principal, "deployment.show", [d.resource for d in gateway.live.values()]
        )
    }
    return [_summary(d) for d in gateway.live.values() if d.resource.id in shown]


@router.get("/deployments/{deployment}", name="deployment.show")
async def show_deployment(
    deployment: str, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    served = served_deployment(request, principal, deployment)
    store = gateway_of(svc).store
    revisions = await anyio.to_thread.run_sync(lambda: store.revisions(deployment))
    return {**_summary(served), "revisions": revisions[:20]}


def _summary(served: LiveDeployment) -> dict[str, Any]:
    return {
        **served.record.to_dict(),
        "ready": served.ready(),
        "down": served.down,
        "workers": {
            ref: {"pid": w.pid, "alive": w.alive, "restarts": w.restarts}
            for ref, w in served.workers.items()
        },
        "inputs": [s.to_metadata() for s in served.signature.inputs],
        "outputs": [s.to_metadata() for s in served.signature.outputs],
    }


@router.post("/deployments/{deployment}/promote", name="deployment.manage")
async def promote(deployment: str, request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    served_deployment(request, principal, deployment)
    return (await gateway_of(svc).promote(deployment, actor=principal.actor)).to_dict()


@router.post("/deployments/{deployment}/rollback", name="deployment.manage")
async def rollback(
    deployment: str, body: RollbackBody, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    served_deployment(request, principal, deployment)
    done = await gateway_of(svc).rollback(
        deployment, actor=principal.actor, reason=body.reason, change="rollback"
    )
    return done.to_dict()


@router.delete("/deployments/{deployment}", name="deployment.manage", status_code=204)
async def remove(deployment: str, request: Request, principal: Caller, svc: Svc) -> None:
    served_deployment(request, principal, deployment)
    await gateway_of(svc).remove(deployment)


@router.get(
    "/inference-records",
    name="inference.records",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/x-ndjson": {}}}},
)
async def export_records(
    request: Request,
    principal: Caller,
    svc: Svc,
    since: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    until: Annotated[float | None, Query(ge=0, le=1e11)] = None,
    deployment: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    authorize(request, principal, _HUB)
    recorder = svc.inference_records
    if recorder is None:
        raise ModelUnavailableError("this server keeps no inference records")
    await anyio.to_thread.run_sync(recorder.flush)

    def lines() -> Iterator[bytes]:
        for entry in read_records(recorder.directory, since=since, until=until,
                                  deployment=deployment):  # fmt: skip
            yield json.dumps(entry, separators=(",", ":")).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
