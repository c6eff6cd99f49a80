"""Who is calling and what they may do: API keys and the hub's built-in roles.

A policy-layer package: it uses the database schema (``bastion.db``) but no
service or face. See ``docs/hub.md`` for the roles.
"""

from bastion.auth._apikeys import ApiKeyStore, IssuedKey, parse_token
from bastion.auth._roles import ROLES, Principal, Role

__all__ = ["ROLES", "ApiKeyStore", "IssuedKey", "Principal", "Role", "parse_token"]
