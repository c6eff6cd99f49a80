"""Routes for people and policy: sign-in, step-up, sign-out, enrolment, users, policies.

Signing in answers with a session token (for the CLI and SDK: ``Authorization: Bearer
bss_...``), a CSRF token, and the same session as a ``Secure; HttpOnly; SameSite=Strict``
cookie for browsers, which must then send the CSRF token as ``X-CSRF-Token`` on every
request that changes something.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from bastion.api._access import session_cookie
from bastion.api._bodies import Binding, bindings_of, iso_time
from bastion.api._security import Caller, authorize, context_for
from bastion.api._services import Services, services
from bastion.auth import PolicyResource, PolicySource
from bastion.errors import AuthenticationError, InputError, PolicyError

__all__ = ["router"]

router = APIRouter(prefix="/api/v1")
Svc = Annotated[Services, Depends(services)]
_HUB = PolicyResource.hub()


class SignIn(BaseModel):
    user: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=1024)
    code: str = Field(min_length=1, max_length=64, description="a TOTP code or a recovery code")


class Code(BaseModel):
    code: str = Field(min_length=1, max_length=64, description="a TOTP code or a recovery code")


class EnrolBegin(BaseModel):
    enrolment_code: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=1024)


class EnrolFinish(BaseModel):
    enrolment_code: str = Field(min_length=1, max_length=128)
    code: str = Field(min_length=1, max_length=64, description="the first TOTP code")


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    roles: list[Binding] = Field(min_length=1, max_length=100)


class UserRoles(BaseModel):
    roles: list[Binding] = Field(min_length=1, max_length=100)


class PolicyFile(BaseModel):
    name: str = Field(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9._-]+\.cedar$")
    text: str = Field(max_length=1 << 20)


class PolicyApply(BaseModel):
    files: list[PolicyFile] = Field(min_length=1, max_length=256)
    comment: str = Field(default="", max_length=1000)


def _source(request: Request) -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


@router.post("/sessions", name="session.create", status_code=201)
def sign_in(body: SignIn, request: Request, response: Response, svc: Svc) -> dict[str, Any]:
    request.state.audit_resource = f"user:{body.user.strip().lower()[:64]}"
    source = _source(request)
    now = svc.hub.now()
    limiter = svc.limiter
    decision = limiter.check_login_source(source)
    if not decision.allowed:
        raise decision.error()
    try:
        login = svc.users.login(body.user, body.password, body.code, now=now)
    except AuthenticationError:
        limiter.hit_login_failure(source)
        raise
    issued = svc.sessions.open(login, now=now, source=source)
    request.state.audit_details = {"mfa": login.mfa_method, "session": issued.session_id}
    secure = request.url.scheme == "https"
    response.set_cookie(
        session_cookie(request.url.scheme),
        issued.token,
        max_age=int((issued.expires_at - now).total_seconds()),
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )
    return {
        "user": login.name,
        "token": issued.token,
        "csrf_token": issued.csrf_token,
        "expires_at": iso_time(issued.expires_at),
        "mfa_at": iso_time(issued.mfa_at),
        "mfa_method": login.mfa_method,
    }


@router.post("/sessions/current/mfa", name="session.mfa")
def step_up(body: Code, request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    authorize(request, principal, _HUB)
    if principal.kind != "User" or principal.session_id is None:
        raise InputError("step-up is for people's sessions; API keys are scoped instead")
    now = svc.hub.now()
    method = svc.users.verify_mfa(principal.name, body.code, now=now)
    svc.sessions.step_up(principal.session_id, method=method, now=now)
    request.state.audit_details["mfa"] = method
    return {"mfa_at": iso_time(now), "mfa_method": method}


@router.delete("/sessions/current", name="session.delete", status_code=204)
def sign_out(request: Request, response: Response, principal: Caller, svc: Svc) -> None:
    authorize(request, principal, _HUB)
    if principal.session_id is not None:
        svc.sessions.revoke(principal.session_id, now=svc.hub.now())
    secure = request.url.scheme == "https"
    response.delete_cookie(
        session_cookie(request.url.scheme),
        path="/",
        secure=secure,
        httponly=True,
        samesite="strict",
    )


@router.post("/enrolment/password", name="enrol.begin")
def enrol_begin(body: EnrolBegin, request: Request, svc: Svc) -> dict[str, Any]:
    found = svc.users.begin_enrolment(body.enrolment_code, body.password, now=svc.hub.now())
    request.state.audit_resource = f"user:{found.name}"
    return {"user": found.name, "otpauth_uri": found.otpauth_uri, "secret": found.secret_base32}


@router.post("/enrolment/totp", name="enrol.finish")
def enrol_finish(body: EnrolFinish, request: Request, svc: Svc) -> dict[str, Any]:
    codes = svc.users.finish_enrolment(body.enrolment_code, body.code, now=svc.hub.now())
    return {"recovery_codes": codes}


@router.get("/users", name="user.list")
def list_users(request: Request, principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    authorize(request, principal, _HUB)
    return svc.users.list(now=svc.hub.now())


@router.post("/users", name="user.create", status_code=201)
def create_user(body: UserCreate, request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    request.state.audit_resource = f"user:{body.name[:64]}"
    authorize(request, principal, _HUB)
    enrolment = svc.users.add(
        body.name, bindings_of(body.roles), created_by=principal.actor, now=svc.hub.now()
    )
    return {
        "user": enrolment.name,
        "enrolment_code": enrolment.code,
        "expires_at": iso_time(enrolment.expires_at),
        "roles": [{"namespace": b.namespace, "role": b.role} for b in body.roles],
    }


@router.put("/users/{name}/roles", name="user.update")
def set_user_roles(
    name: str, body: UserRoles, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    authorize(request, principal, _HUB)
    svc.users.set_roles(name[:64], bindings_of(body.roles))
    svc.sessions.forget()  # remembered sessions carry the old roles
    return {"user": name, "roles": [{"namespace": b.namespace, "role": b.role} for b in body.roles]}


@router.post("/users/{name}/reset", name="user.reset")
def reset_user(name: str, request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    authorize(request, principal, _HUB)
    enrolment = svc.users.reset(name[:64], created_by=principal.actor, now=svc.hub.now())
    svc.sessions.forget()  # the reset ended the user's sessions
    return {
        "user": enrolment.name,
        "enrolment_code": enrolment.code,
        "expires_at": iso_time(enrolment.expires_at),
    }


@router.post("/users/{name}/unlock", name="user.unlock")
def unlock_user(name: str, request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    authorize(request, principal, _HUB)
    return {"user": name, "unlocked": svc.users.unlock(name[:64], now=svc.hub.now())}


@router.delete("/users/{name}", name="user.delete", status_code=204)
def delete_user(name: str, request: Request, principal: Caller, svc: Svc) -> None:
    authorize(request, principal, _HUB)
    svc.users.remove(name[:64])
    svc.sessions.forget()


@router.get("/policies", name="policy.show")
def show_policies(request: Request, principal: Caller, svc: Svc) -> dict[str, Any]:
    authorize(request, principal, PolicyResource.policy())
    return svc.policies.current()


@router.get("/policies/history", name="policy.history")
def policy_history(request: Request, principal: Caller, svc: Svc) -> list[dict[str, Any]]:
    authorize(request, principal, PolicyResource.policy())
    return svc.policies.history()


@router.put("/policies", name="policy.apply")
async def apply_policies(
    body: PolicyApply, request: Request, principal: Caller, svc: Svc
) -> dict[str, Any]:
    await run_in_threadpool(authorize, request, principal, PolicyResource.policy())
    sources = [PolicySource(f.name, f.text) for f in body.files]
    engine = await run_in_threadpool(svc.policies.validate, sources)
    # The applier must still be able to apply policies under the new set, or a typo
    # would lock every administrator out of the hub.
    now = svc.hub.now()
    after = engine.decide(
        principal.for_policy(),
        "policy.apply",
        PolicyResource.policy(),
        context_for(request, principal, now),
    )
    if not after.allowed:
        raise PolicyError(
            "these policies would not let you apply policies again (a lock-out); "
            "keep a permit for policy.apply that covers you, then apply"
        )
    result = await run_in_threadpool(
        lambda: svc.policies.apply(
            sources, applied_by=principal.actor, comment=body.comment, now=now
        )
    )
    request.state.audit_details.update(
        policy_version=result["version"], policy_digest=result["digest"]
    )
    return result
