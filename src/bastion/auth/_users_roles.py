"""People's roles: ``(namespace, role)`` bindings, checked when granted, read per user.

A namespace is ``*`` (every namespace, and the hub itself) or a namespace name;
a role is one of the policy roles of ``_policy_schema``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from bastion.auth._policy_schema import ALL_NAMESPACES, POLICY_ROLES, PolicyRole
from bastion.db import UserRole
from bastion.errors import InputError, IntegrityError

__all__ = ["NAME_PATTERN", "UserRoles", "check_roles", "load_roles", "policy_role"]

#: User and namespace names: as ``bastion.registry`` checks names (auth must not import it).
NAME_PATTERN: Final = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")

UserRoles = tuple[tuple[str, PolicyRole], ...]


def policy_role(value: object) -> PolicyRole:
    """``value`` as a policy role; InputError naming the roles if it is not one."""
    for role in POLICY_ROLES:
        if role == value:
            return role
    shown = repr(value)[:80]
    raise InputError(f"unknown role {shown}; use one of {', '.join(POLICY_ROLES)}")


def check_roles(roles: Sequence[tuple[str, PolicyRole]]) -> UserRoles:
    """At least one valid binding, duplicates dropped, in the order given."""
    if _is_text(roles) or not roles:
        raise InputError("a user needs at least one role on a namespace (or on '*')")
    checked: list[tuple[str, PolicyRole]] = []
    for binding in roles:
        if not isinstance(binding, tuple) or len(binding) != 2:
            raise InputError("a role binding is a (namespace, role) pair")
        namespace, role = binding
        valid = isinstance(namespace, str) and (
            namespace == ALL_NAMESPACES
            or (NAME_PATTERN.fullmatch(namespace) is not None and ".." not in namespace)
        )
        if not valid:
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
