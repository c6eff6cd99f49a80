"""Who is calling: one authenticated principal, whatever credential proved it.

A person signs in with a password and a TOTP code and holds a session (``User``); a
pipeline holds an API key (``ServiceAccount``); a token from a trusted OpenID Connect
provider names an ``OidcSubject``; a verified client certificate may name a service
account too (``auth_method == "mtls"``). Every one of them is judged by the same Cedar
policies, through :meth:`Principal.for_policy`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime

from bastion.auth._policy_schema import (
    ACTIONS,
    ALL_NAMESPACES,
    AuthMethod,
    PolicyPrincipal,
    PolicyRole,
    PrincipalKind,
)

__all__ = ["ALL_NAMESPACES", "Principal", "expand_scope"]


def expand_scope(scope: tuple[str, ...]) -> tuple[str, ...]:
    """A key's stored scope as the policies see it: ``*`` names every action explicitly."""
    if "*" not in scope:
        return scope
    return tuple(dict.fromkeys([*(s for s in scope if s != "*"), *ACTIONS]))


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller.

    ``id`` is the API key id, the user's name, or ``issuer#subject``; ``name`` is how people
    know it. ``roles`` are ``(namespace, role)`` bindings; ``scope`` (keys only) the actions
    and action groups the key may use; ``mfa_at`` when this session last passed MFA.
    """

    kind: PrincipalKind
    id: str
    name: str
    auth_method: AuthMethod
    roles: tuple[tuple[str, PolicyRole], ...] = ()
    groups: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()
    issuer: str = ""
    mfa_at: datetime | None = None
    #: The session this request rides on (people only), for step-up and sign-out.
    session_id: str | None = None
    #: The credential came from a cookie: unsafe methods need the CSRF token too.
    via_cookie: bool = False
    #: SHA-256 fingerprint of a verified client certificate presented on the connection.
    client_certificate: str | None = None

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        if self.kind == "ServiceAccount":
            return f"{'mtls' if self.auth_method == 'mtls' else 'key'}:{self.id}"
        if self.kind == "User":
            return f"user:{self.id}"
        return f"oidc:{self.issuer}#{self.name}"

    @property
    def is_admin(self) -> bool:
        return (ALL_NAMESPACES, "admin") in self.roles

    def mfa_age(self, now: datetime) -> int | None:
        """Whole seconds since MFA was last passed; None if it never was."""
        if self.mfa_at is None:
            return None
        return max(0, int((now - self.mfa_at).total_seconds()))

    def for_policy(self) -> PolicyPrincipal:
        """This caller as the Cedar policies see it (built once per caller seen lately)."""
        return _policy_principal(
            self.kind, self.id, self.roles, self.groups, self.scope, self.issuer
        )


@functools.lru_cache(maxsize=4096)
def _policy_principal(
    kind: PrincipalKind,
    ident: str,
    roles: tuple[tuple[str, PolicyRole], ...],
    groups: tuple[str, ...],
    scope: tuple[str, ...],
    issuer: str,
) -> PolicyPrincipal:
    """Validated once: a caller whose token is new each time is still the same principal."""
    scope = expand_scope(scope) if kind == "ServiceAccount" else ()
    return PolicyPrincipal(kind, ident, roles, groups, scope, issuer)
