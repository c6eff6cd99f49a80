"""An OIDC issuer that Bastion trusts for bearer tokens, as configured by an operator.

Built from a dict or a TOML document (``[[issuers]]`` tables) and validated
strictly: an unknown key, a wrong type, an issuer that is not HTTPS (plain
HTTP only on loopback, for tests and local providers), an empty audience, an
algorithm outside the asymmetric allowlist, or a role that is not
``"role:namespace"`` is an :class:`InputError`.
``docs/access.md`` documents every key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import urlsplit

from bastion._names import is_name
from bastion._net import is_loopback
from bastion.auth._jwk import ALGORITHMS
from bastion.auth._policy_schema import ALL_NAMESPACES, POLICY_ROLES, PolicyRole
from bastion.errors import InputError

__all__ = ["DEFAULT_ALGORITHMS", "OidcIssuer", "RoleBindings", "is_acceptable_url", "role_bindings"]

#: ``(namespace, role)`` pairs, sorted; namespace ``*`` is every namespace and the hub.
RoleBindings = tuple[tuple[str, PolicyRole], ...]

DEFAULT_ALGORITHMS: Final = ("RS256", "ES256", "EdDSA", "PS256")
_MAX_NAME = 128
_MAX_LIST = 64
#: Inclusive bounds of the numeric settings.
_BOUNDS: Final[dict[str, tuple[float, float]]] = {
    "leeway_seconds": (0, 300),
    "jwks_cache_ttl_seconds": (30, 86_400),
    "jwks_refetch_interval_seconds": (1, 3_600),
    "http_timeout_seconds": (0.1, 60),
    "max_response_bytes": (1024, 4 * 1024 * 1024),
}


def is_acceptable_url(url: str, *, allow_loopback_http: bool = True) -> bool:
    """HTTPS with a host and no credentials or fragment; plain HTTP only to loopback."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        _ = parts.port
    except ValueError:
        return False
    if not host or parts.username is not None or parts.fragment or parts.query:
        return False
    if parts.scheme == "https":
        return True
    return parts.scheme == "http" and allow_loopback_http and is_loopback(host)


def role_bindings(value: object, where: str) -> RoleBindings:
    """``"role:namespace"`` strings (one or a list) as sorted ``(namespace, role)`` pairs.

    The role is one of the policy roles, the namespace a namespace name or ``*``;
    anything else is an InputError naming ``where``.
    """
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or len(items) > _MAX_LIST:
        raise InputError(f'{where} must be a "role:namespace" string or a non-empty list of them')
    bindings: set[tuple[str, PolicyRole]] = set()
    for item in items:
        role_name, _, namespace = item.partition(":") if isinstance(item, str) else ("", "", "")
        role = next((r for r in POLICY_ROLES if r == role_name), None)
        valid_namespace = namespace == ALL_NAMESPACES or (is_name(namespace))
        if role is None or not valid_namespace:
            raise InputError(
                f'{where}: {str(item)[:80]!r} is not "role:namespace"; the role is one of '
                f"{', '.join(POLICY_ROLES)}, the namespace a namespace name or '*'"
            )
        bindings.add((namespace, role))
    return tuple(sorted(bindings))


def _name(value: object, key: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_NAME:
        raise InputError(f"OIDC issuer setting {key!r} must be a non-empty string")
    return value


def _names(value: object, key: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items or len(items) > _MAX_LIST:
        raise InputError(f"OIDC issuer setting {key!r} must be a string or a non-empty list")
    return tuple(dict.fromkeys(_name(item, key) for item in items))


@dataclass(frozen=True, slots=True)
class OidcIssuer:
    """One trusted identity provider and how its tokens map to Bastion identities.

    ``groups_claim`` may be a dotted path into nested claims (Keycloak's
    ``realm_access.roles``); when ``group_map`` is set, only the provider's
    groups it names are kept, renamed. ``roles`` grants each Bastion group (after
    ``group_map``) its ``(namespace, role)`` bindings. ``required_claims`` must all match
    (a value or any of a list): for GitHub Actions, bind ``repository`` and ``ref``.
    """

    issuer: str
    audiences: tuple[str, ...]
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    principal_claim: str = "sub"
    require_verified_email: bool = True
    groups_claim: str | None = "groups"
    group_map: Mapping[str, str] | None = None
    roles: Mapping[str, RoleBindings] = field(default_factory=lambda: MappingProxyType({}))
    required_claims: Mapping[str, tuple[str, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    keep_claims: tuple[str, ...] = ()
    leeway_seconds: int = 60
    jwks_cache_ttl_seconds: int = 3600
    jwks_refetch_interval_seconds: int = 60
    http_timeout_seconds: float = 5.0
    max_response_bytes: int = 256 * 1024

    def __post_init__(self) -> None:
        if not is_acceptable_url(self.issuer):
            raise InputError(
                f"OIDC issuer {self.issuer!r} must be an https:// URL without query or "
                "fragment (plain http:// only on loopback)"
            )
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise InputError(f"OIDC issuer {self.issuer!r} needs at least one audience")
        if not self.algorithms:
            raise InputError(f"OIDC issuer {self.issuer!r} allows no algorithm; list some")
        for alg in self.algorithms:
            if alg not in ALGORITHMS:
                raise InputError(
                    f"algorithm {alg!r} is not accepted for OIDC tokens; use some of "
                    f"{', '.join(sorted(ALGORITHMS))} (HMAC and 'none' never are)"
                )
        for name, (low, high) in _BOUNDS.items():
            value = getattr(self, name)
            kinds = (int, float) if name == "http_timeout_seconds" else (int,)
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise InputError(f"OIDC issuer setting {name!r} must be a number")
            if not low <= value <= high:
                raise InputError(f"OIDC issuer setting {name!r} must be from {low} to {high}")

    @property
    def discovery_url(self) -> str:
        """Where the provider's OpenID configuration is (OpenID Connect Discovery 1.0, 4)."""
        return self.issuer.rstrip("/") + "/.well-known/openid-configuration"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OidcIssuer:
        """Build from a configuration table; InputError naming the first thing wrong."""
        if not isinstance(data, Mapping):
            raise InputError("an OIDC issuer must be a table of settings")
        known = {f.name for f in fields(cls)} - {"audiences"} | {"audience"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown OIDC issuer setting(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        for required in ("issuer", "audience"):
            if required not in data:
                raise InputError(f"an OIDC issuer needs {required!r}")
        kwargs: dict[str, Any] = {
            "issuer": _name(data["issuer"], "issuer"),
            "audiences": _names(data["audience"], "audience"),
        }
        if "algorithms" in data:
            kwargs["algorithms"] = _names(data["algorithms"], "algorithms")
        for key in ("principal_claim", "groups_claim"):
            if key in data:
                kwargs[key] = _name(data[key], key)
        if "keep_claims" in data:
            kwargs["keep_claims"] = _names(data["keep_claims"], "keep_claims")
        if "require_verified_email" in data:
            if not isinstance(data["require_verified_email"], bool):
                raise InputError("OIDC issuer setting 'require_verified_email' must be true/false")
            kwargs["require_verified_email"] = data["require_verified_email"]
        if "group_map" in data:
            table = _table(data["group_map"], "group_map")
            kwargs["group_map"] = MappingProxyType(
                {_name(k, "group_map"): _name(v, "group_map") for k, v in table.items()}
            )
        if "roles" in data:
            table = _table(data["roles"], "roles")
            kwargs["roles"] = MappingProxyType(
                {
                    _name(group, "roles"): role_bindings(value, f"OIDC issuer roles.{group!r}")
                    for group, value in table.items()
                }
            )
        if "required_claims" in data:
            table = _table(data["required_claims"], "required_claims")
            kwargs["required_claims"] = MappingProxyType(
                {_name(k, "required_claims"): _names(v, k) for k, v in table.items()}
            )
        for name in _BOUNDS:
            if name in data:
                kwargs[name] = data[name]
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, text: str) -> tuple[OidcIssuer, ...]:
        """Every ``[[issuers]]`` table of a TOML document; two with one issuer URL is an error."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"the OIDC configuration is not valid TOML: {exc}") from exc
        extra = sorted(set(document) - {"issuers"})
        if extra:
            raise InputError(f"unknown top-level OIDC setting(s) {', '.join(map(repr, extra))}")
        tables = document.get("issuers")
        if not isinstance(tables, list) or not tables:
            raise InputError("the OIDC configuration has no [[issuers]] table")
        issuers = tuple(cls.from_dict(table) for table in tables)
        urls = [i.issuer for i in issuers]
        if len(set(urls)) != len(urls):
            raise InputError("an OIDC issuer is configured twice; keep one [[issuers]] table each")
        return issuers


def _table(value: object, key: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping) or len(value) > _MAX_LIST:
        raise InputError(f"OIDC issuer setting {key!r} must be a table of at most {_MAX_LIST}")
    return value
