"""People's roles: ``(namespace, role)`` bindings, checked when granted, read per user.

A namespace is ``*`` (every namespace, and the hub itself) or a namespace name;
a role is one of the policy roles of ``_policy_schema``.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion._names import is_name
from bastion.auth._policy_schema import ALL_NAMESPACES, POLICY_ROLES, PolicyRole
from bastion.db import UserRole
from bastion.errors import InputError, IntegrityError

__all__ = ["UserRoles", "check_roles", "load_roles", "policy_role"]


UserRoles = tuple[tuple[str, PolicyRole], ...]


def policy_role(value: object) -> PolicyRole:
    """``value`` as a policy role; InputError naming the roles if it is not one."""
    for role in POLICY_ROLES:
        if role == value:
            return role
    shown = repr(value)[:80]
    raise InputError(f"unknown role {shown}; use one of {', '.join(POLICY_ROLES)}")


def check_roles(roles: Sequence[tuple[str, str]], *, holder: str = "a user") -> UserRoles:
    """At least one valid binding, duplicates dropped, in the order given."""
    if _is_text(roles) or not roles:
        raise InputError(f"{holder} needs at least one role on a namespace (or on '*')")
    checked: list[tuple[str, PolicyRole]] = []
    for binding in roles:
        if not isinstance(binding, tuple) or len(binding) != 2:
            raise InputError("a role binding is a (namespace, role) pair")
        namespace, role = binding
        if namespace != ALL_NAMESPACES and not is_name(namespace):
            raise InputError(
                f"namespace {str(namespace)[:80]!r} is not valid: use '*' or 1-64 lower-case "
                "letters, digits, '.', '_' or '-', starting and ending with a letter or digit"
            )
        checked.append((namespace, policy_role(role)))
    return tuple(dict.fromkeys(checked))


def _is_text(value: object) -> bool:
    return isinstance(value, (str, bytes))


def load_roles(s: Session, user_id: int) -> UserRoles:
    """The stored roles of a user; IntegrityError if one is not a known role."""
    rows = s.execute(
        select(UserRole.namespace, UserRole.role)
        .where(UserRole.user_id == user_id)
        .order_by(UserRole.id)
    ).all()
    try:
        return tuple((namespace, policy_role(role)) for namespace, role in rows)
    except InputError:
        raise IntegrityError(
            "a stored user role is not a known role; set the user's roles again"
        ) from None
