"""The hub's three built-in roles, granted per namespace (``*``: every namespace).

``reader`` lists, shows and pulls; ``publisher`` also pushes, sets aliases and
yanks; ``admin`` also changes a namespace's trust policy. An admin on ``*`` is
the hub's administrator: creates namespaces and API keys, rotates the
key-encryption key and reads the audit log. Anything not granted is denied.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = ["ALL_NAMESPACES", "ROLES", "Principal", "Role"]

Role = Literal["reader", "publisher", "admin"]
ROLES: tuple[Role, ...] = get_args(Role)
ALL_NAMESPACES = "*"
_RANK = {role: rank for rank, role in enumerate(ROLES)}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: an API key's id and name, and its role bindings."""

    key_id: str
    name: str
    bindings: tuple[tuple[str, Role], ...]

    def role_in(self, namespace: str) -> Role | None:
        """The highest role this caller holds on ``namespace``."""
        held = [r for ns, r in self.bindings if ns in (namespace, ALL_NAMESPACES)]
        if not held:
            return None
        return max(held, key=lambda role: _RANK[role])

    def can(self, role: Role, namespace: str) -> bool:
        held = self.role_in(namespace)
        return held is not None and _RANK[held] >= _RANK[role]

    @property
    def is_admin(self) -> bool:
        return (ALL_NAMESPACES, "admin") in self.bindings

    def visible(self, namespaces: Iterable[str]) -> list[str]:
        """The namespaces this caller may read, of those given."""
        return [ns for ns in namespaces if self.can("reader", ns)]

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"key:{self.key_id}"
