"""The one rule for names the hub gives things: namespaces, models, users, clients.

A base-layer module: ``bastion.registry`` and ``bastion.auth`` both check names with it.
"""

from __future__ import annotations

import re
from typing import Final, TypeGuard

__all__ = ["NAME_PATTERN", "is_name"]

#: 1-64 lower-case letters, digits, '.', '_' or '-', starting and ending with a letter or digit.
NAME_PATTERN: Final = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")


def is_name(value: object) -> TypeGuard[str]:
    """Whether ``value`` follows the rule (and holds no ``..``, which could read as a path)."""
    return (
        isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None and ".." not in value
    )
