"""Request-body pieces shared by several routes: role bindings and times."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from bastion.auth import PolicyRole
from bastion.registry._names import check_name

__all__ = ["Binding", "Roles", "bindings_of", "iso_time"]

Roles = Literal["admin", "publisher", "deployer", "consumer", "invoker", "auditor"]


class Binding(BaseModel):
    namespace: str = Field(max_length=64, description="a namespace, or '*' for all")
    role: Roles


def bindings_of(roles: list[Binding]) -> list[tuple[str, PolicyRole]]:
    """Checked ``(namespace, role)`` pairs."""
    out: list[tuple[str, PolicyRole]] = []
    for b in roles:
        if b.namespace != "*":
            check_name(b.namespace, "namespace")
        out.append((b.namespace, b.role))
    return out


def iso_time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
