"""Authentication of every request but liveness, and the built-in role checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bastion.api._services import Services, services
from bastion.auth import Principal, Role
from bastion.errors import AuthenticationError, PermissionDeniedError

__all__ = ["Caller", "authenticate", "require", "require_admin"]

_bearer = HTTPBearer(auto_error=False, description="An API key: bst_<id>_<secret>")


def authenticate(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise AuthenticationError(
            "this route needs an API key: send 'Authorization: Bearer bst_...'"
        )
    principal = svc.api_keys.authenticate(credentials.credentials, now=svc.hub.now())
    request.state.principal = principal
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def require(principal: Principal, role: Role, namespace: str) -> None:
    if not principal.can(role, namespace):
        raise PermissionDeniedError(
            f"this needs the {role} role on namespace {namespace!r}; "
            "ask an administrator for a key that has it"
        )


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise PermissionDeniedError("this needs the admin role on every namespace ('*')")
