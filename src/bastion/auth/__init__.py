"""Who is calling and what they may do: API keys, OIDC bearer tokens, the hub's roles.

A policy-layer package: it uses the database schema (``bastion.db``) but no
service or face. See ``docs/hub.md`` for the roles.
"""

from bastion.auth._apikeys import ApiKeyStore, IssuedKey, parse_token
from bastion.auth._jwt import TokenRejectedError
from bastion.auth._oidc import OidcAuthenticator, OidcIdentity
from bastion.auth._oidc_issuer import OidcIssuer
from bastion.auth._roles import ROLES, Principal, Role

__all__ = [
    "ROLES",
    "ApiKeyStore",
    "IssuedKey",
    "OidcAuthenticator",
    "OidcIdentity",
    "OidcIssuer",
    "Principal",
    "Role",
    "TokenRejectedError",
    "parse_token",
]
