"""Who is calling and what they may do: API keys, people, OIDC tokens, Cedar policy.

A policy-layer package: it uses the database schema (``bastion.db``) but no service or
face. See ``docs/access.md`` and ``docs/policy.md``.
"""

from bastion.auth._apikeys import ROLE_SCOPES, ApiKeyStore, IssuedKey, check_scope, parse_token
from bastion.auth._jwt import TokenRejectedError
from bastion.auth._oidc import OidcAuthenticator, OidcIdentity
from bastion.auth._oidc_issuer import OidcIssuer
from bastion.auth._passwords import PasswordHasher, check_password_policy
from bastion.auth._policy import Decision, PolicyEngine, PolicySource
from bastion.auth._policy_schema import (
    ACTIONS,
    POLICY_ROLES,
    PolicyResource,
    PolicyRole,
    RequestContext,
)
from bastion.auth._principal import ALL_NAMESPACES, Principal
from bastion.auth._sessions import IssuedSession, SessionStore
from bastion.auth._totp import otpauth_uri, totp_code, verify_totp
from bastion.auth._users import Enrolment, UserLogin, UserStore

__all__ = [
    "ACTIONS",
    "ALL_NAMESPACES",
    "POLICY_ROLES",
    "ROLE_SCOPES",
    "ApiKeyStore",
    "Decision",
    "Enrolment",
    "IssuedKey",
    "IssuedSession",
    "OidcAuthenticator",
    "OidcIdentity",
    "OidcIssuer",
    "PasswordHasher",
    "PolicyEngine",
    "PolicyResource",
    "PolicyRole",
    "PolicySource",
    "Principal",
    "RequestContext",
    "SessionStore",
    "TokenRejectedError",
    "UserLogin",
    "UserStore",
    "check_password_policy",
    "check_scope",
    "otpauth_uri",
    "parse_token",
    "totp_code",
    "verify_totp",
]
