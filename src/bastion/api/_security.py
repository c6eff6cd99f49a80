"""Authorisation of every routed request: the route's name is the Cedar action.

The caller was authenticated before routing (:mod:`bastion.api._access`); a route hands
:func:`authorize` the resource it acts on, and the policies in force decide. A denial
raises ``forbidden`` (or ``step_up_required`` when only the MFA age stood in the way) and
puts the deciding policies into the request's audit entry.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from bastion.api._services import Services, services_of
from bastion.auth import Decision, PolicyResource, Principal, RequestContext
from bastion.errors import AuthenticationError, PermissionDeniedError, StepUpRequiredError

__all__ = ["UNKNOWN_ADDRESS", "Caller", "allowed", "authorize", "caller", "context_for"]

#: The source address of a request without one (not a socket: nothing binds to it).
UNKNOWN_ADDRESS = "0.0.0.0"  # noqa: S104

_STEP_UP = "guard.step-up"


async def caller(request: Request) -> Principal:
    """The principal the access layer authenticated (public routes have none).

    A coroutine, so FastAPI runs it in the event loop rather than in a worker thread.
    """
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # the access layer refuses first; this is a second line
        raise AuthenticationError("this route needs a credential: send 'Authorization: Bearer ...'")
    return principal


Caller = Annotated[Principal, Depends(caller)]


def context_for(
    request: Request, principal: Principal, now: datetime, *, allow_yanked: bool = False
) -> RequestContext:
    """The request's context for the policies; ``allow_yanked`` as the route parsed it."""
    client = request.scope.get("client")
    return RequestContext(
        source_ip=client[0] if client else UNKNOWN_ADDRESS,
        time=now,
        auth_method=principal.auth_method,
        mfa_age_seconds=principal.mfa_age(now),
        allow_yanked=allow_yanked,
        client_certificate=principal.client_certificate,
    )


def _decide(
    request: Request,
    svc: Services,
    principal: Principal,
    action: str,
    resource: PolicyResource,
    *,
    allow_yanked: bool = False,
) -> Decision:
    now = svc.hub.now()
    context = context_for(request, principal, now, allow_yanked=allow_yanked)
    return svc.policies.engine().decide(principal.for_policy(), action, resource, context)


def authorize(
    request: Request,
    principal: Principal,
    resource: PolicyResource,
    *,
    action: str | None = None,
    allow_yanked: bool = False,
) -> Decision:
    """Decide the route's action (or ``action``) on ``resource``; raise if denied."""
    svc = services_of(request)
    route = request.scope.get("route")
    name = (
        action
        or getattr(route, "name", None)
        or request.scope.get("state", {}).get("route_name")  # answered before routing
        or "request.unmatched"
    )
    decision = _decide(request, svc, principal, name, resource, allow_yanked=allow_yanked)
    # The scope's state dict is what ``request.state`` wraps; read directly, a request
    # without details yet does not pay for State's AttributeError.
    details = request.scope.setdefault("state", {}).setdefault("audit_details", {})
    details["policy"] = {
        "decision": "allow" if decision.allowed else "deny",
        "reasons": list(decision.reasons),
        "errors": list(decision.errors),
    }
    if decision.allowed:
        return decision
    if decision.reasons == (_STEP_UP,):
        raise StepUpRequiredError(
            f"{name} is a sensitive action: it needs a session whose MFA was passed recently; "
            "give a fresh code ('bastion login --step-up') or use an API key scoped to it"
        )
    raise PermissionDeniedError(
        f"the policies in force do not allow {name} on {resource.kind} {resource.id!r} "
        "for this caller; ask an administrator"
    )


def allowed(
    request: Request, principal: Principal, action: str, resources: Iterable[PolicyResource]
) -> list[PolicyResource]:
    """The resources ``action`` is allowed on, for filtering lists (not audited one by one)."""
    svc = services_of(request)
    return [r for r in resources if _decide(request, svc, principal, action, r).allowed]
