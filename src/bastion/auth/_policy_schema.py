"""What an authorisation request is made of: principals, resources, context, actions.

These are the Python side of the Cedar schema shipped in ``policies/bastion.cedarschema``:
each object validates itself when built and renders itself as Cedar entity JSON, so a
request handed to the policy engine always conforms to the schema.
"""

from __future__ import annotations

import functools
import ipaddress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Literal, get_args

from bastion.errors import InputError

__all__ = [
    "ACTIONS",
    "ACTION_GROUPS",
    "ALL_NAMESPACES",
    "POLICY_ROLES",
    "AuthMethod",
    "PolicyPrincipal",
    "PolicyResource",
    "PolicyRole",
    "PrincipalKind",
    "RequestContext",
    "schema_text",
]

#: Every action, with the resource type it applies to. ``tests`` check this against the schema.
ACTIONS: dict[str, str] = {
    "whoami": "Hub",
    "openapi": "Hub",
    "namespace.list": "Hub",
    "namespace.create": "Hub",
    "apikey.create": "Hub",
    "apikey.list": "Hub",
    "apikey.revoke": "Hub",
    "apikey.rotate": "Hub",
    "kek.rotate": "Hub",
    "session.mfa": "Hub",
    "session.delete": "Hub",
    "user.list": "Hub",
    "user.create": "Hub",
    "user.update": "Hub",
    "user.delete": "Hub",
    "user.reset": "Hub",
    "user.unlock": "Hub",
    "namespace.show": "Namespace",
    "namespace.trust": "Namespace",
    "model.list": "Namespace",
    "version.list": "Model",
    "version.push": "Model",
    "model.classify": "Model",
    "alias.show": "Model",
    "alias.set": "Model",
    "alias.delete": "Model",
    "upload.file": "Model",
    "upload.commit": "Model",
    "upload.abort": "Model",
    "version.show": "Version",
    "version.pull": "Version",
    "version.yank": "Version",
    "deploy": "Version",
    "invoke": "Deployment",
    "gateway.status": "Hub",
    "deployment.list": "Hub",
    "deployment.show": "Deployment",
    "deployment.manage": "Deployment",
    "gateway.metrics": "Hub",
    "inference.records": "Hub",
    "audit.export": "AuditLog",
    "audit.checkpoints": "AuditLog",
    "audit.checkpoint": "AuditLog",
    "audit.key": "AuditLog",
    "policy.show": "Policy",
    "policy.history": "Policy",
    "policy.apply": "Policy",
}
#: Action groups declared in the schema; a service account's scope may name them.
ACTION_GROUPS = ("any_caller", "browse", "consume", "publish", "audit", "sensitive")

PolicyRole = Literal["admin", "publisher", "deployer", "consumer", "invoker", "auditor"]
POLICY_ROLES: tuple[PolicyRole, ...] = get_args(PolicyRole)
AuthMethod = Literal["password", "api_key", "oidc", "mtls"]
PrincipalKind = Literal["User", "ServiceAccount", "OidcSubject"]
ResourceKind = Literal["Hub", "Namespace", "Model", "Version", "Deployment", "AuditLog", "Policy"]
ALL_NAMESPACES = "*"
_NS = "Bastion::"
_MAX_ID = 512
_MAX_ITEMS = 256
#: The last whole second written for Cedar, and how: (seconds since the epoch, text).
_last_time: tuple[int | None, str] = (None, "")


def schema_text() -> str:
    """The Cedar schema shipped with Bastion."""
    return resources.files("bastion.auth").joinpath("policies/bastion.cedarschema").read_text()


def _uid(kind: str, ident: str) -> dict[str, str]:
    return {"type": _NS + kind, "id": ident}


def _ref(kind: str, ident: str) -> dict[str, dict[str, str]]:
    return {"__entity": _uid(kind, ident)}


def _check_id(what: str, value: str) -> str:
    if not isinstance(value, str) or not value or len(value) > _MAX_ID:
        raise InputError(f"{what} must be a non-empty string of at most {_MAX_ID} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise InputError(f"{what} {value!r} holds control characters; remove them")
    return value


def _entity(kind: str, ident: str, attrs: dict[str, Any], parents: list[dict[str, str]]) -> Any:
    return {"uid": _uid(kind, ident), "attrs": attrs, "parents": parents}


@dataclass(frozen=True, slots=True)
class PolicyPrincipal:
    """Who asks: a person (``User``), an API key (``ServiceAccount``) or an ``OidcSubject``.

    ``roles`` are ``(namespace, role)`` bindings (namespace ``*``: all of them and the hub);
    ``scope`` (service accounts only) names the actions or action groups the key may use.
    """

    kind: PrincipalKind
    id: str
    roles: tuple[tuple[str, PolicyRole], ...] = ()
    groups: tuple[str, ...] = ()
    scope: tuple[str, ...] = ()
    issuer: str = ""
    #: The hash, computed once: principals key the policy engine's caches on every decision.
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __hash__(self) -> int:
        return self._hash

    def __post_init__(self) -> None:
        fields = (self.kind, self.id, self.roles, self.groups, self.scope, self.issuer)
        object.__setattr__(self, "_hash", hash(fields))
        if self.kind not in get_args(PrincipalKind):
            raise InputError(
                f"principal kind {self.kind!r} is unknown; use User, ServiceAccount or OidcSubject"
            )
        _check_id("principal id", self.id)
        if max(len(self.roles), len(self.groups), len(self.scope)) > _MAX_ITEMS:
            raise InputError(f"a principal holds at most {_MAX_ITEMS} roles, groups and scopes")
        for namespace, role in self.roles:
            _check_id("role namespace", namespace)
            if role not in POLICY_ROLES:
                raise InputError(f"role {role!r} is unknown; use one of {', '.join(POLICY_ROLES)}")
        for group in self.groups:
            _check_id("group", group)
        if self.scope and self.kind != "ServiceAccount":
            raise InputError("only a ServiceAccount (an API key) has a scope")
        for action in self.scope:
            if action not in ACTIONS and action not in ACTION_GROUPS:
                raise InputError(f"scope {action!r} is not an action or action group")
        if self.kind == "OidcSubject":
            _check_id("OIDC issuer", self.issuer)

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace named in a role binding."""
        return tuple(dict.fromkeys(ns for ns, _ in self.roles))

    def uid(self) -> dict[str, str]:
        return _uid(self.kind, self.id)

    def entities(self) -> list[Any]:
        roles: dict[str, list[Any]] = {role: [] for role in POLICY_ROLES}
        for namespace, role in self.roles:
            roles[role].append(_ref("Namespace", namespace))
        attrs: dict[str, Any] = {"roles": roles, "groups": list(self.groups)}
        if self.kind == "ServiceAccount":
            attrs["scope"] = [_ref("Action", action) for action in self.scope]
        elif self.kind == "OidcSubject":
            attrs["issuer"] = self.issuer
        return [_entity(self.kind, self.id, attrs, [])]


@dataclass(frozen=True, slots=True)
class PolicyResource:
    """What is acted on. Build with the class methods, or :meth:`parse` a reference."""

    kind: ResourceKind
    namespace: str = ALL_NAMESPACES
    name: str = ""
    version: str = ""
    classification: str = "internal"
    scan_verdict: str = "clean"
    yanked: bool = False
    #: The hash, computed once (see PolicyPrincipal).
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    @classmethod
    def hub(cls) -> PolicyResource:
        return cls("Hub", name="hub")

    @classmethod
    def audit_log(cls) -> PolicyResource:
        return cls("AuditLog", name="hub")

    @classmethod
    def policy(cls, name: str = "default") -> PolicyResource:
        return cls("Policy", name=name)

    @classmethod
    def of_namespace(cls, namespace: str) -> PolicyResource:
        return cls("Namespace", namespace=namespace)

    @classmethod
    def model(
        cls, namespace: str, model: str, *, classification: str = "internal"
    ) -> PolicyResource:
        return cls("Model", namespace, model, classification=classification)

    @classmethod
    def deployment(
        cls, namespace: str, name: str, *, classification: str = "internal"
    ) -> PolicyResource:
        return cls("Deployment", namespace, name, classification=classification)

    @classmethod
    def of_version(
        cls,
        namespace: str,
        model: str,
        version: str,
        *,
        classification: str = "internal",
        scan_verdict: str = "clean",
        yanked: bool = False,
    ) -> PolicyResource:
        return cls("Version", namespace, model, version, classification, scan_verdict, yanked)

    @classmethod
    def parse(cls, text: str, **attrs: Any) -> PolicyResource:
        """``hub``, ``audit``, ``policy:NAME``, ``deployment:NS/NAME``, ``NS``, ``NS/MODEL``,
        ``NS/MODEL@VERSION``; ``attrs`` sets classification, scan_verdict and yanked."""
        if text == "hub":
            return cls.hub()
        if text == "audit":
            return cls.audit_log()
        if text.startswith("policy:"):
            return cls.policy(text.removeprefix("policy:"))
        if text.startswith("deployment:"):
            namespace, sep, name = text.removeprefix("deployment:").partition("/")
            if not sep:
                raise InputError(f"resource {text!r}: write deployment:NAMESPACE/NAME")
            return cls("Deployment", namespace, name, **attrs)
        namespace, sep, rest = text.partition("/")
        if not sep:
            return cls.of_namespace(namespace)
        model, sep, version = rest.partition("@")
        return cls("Version" if sep else "Model", namespace, model, version, **attrs)

    def __hash__(self) -> int:
        return self._hash

    def __post_init__(self) -> None:
        fields = (self.kind, self.namespace, self.name, self.version, self.classification)
        object.__setattr__(self, "_hash", hash((*fields, self.scan_verdict, self.yanked)))
        if self.kind not in get_args(ResourceKind):
            raise InputError(f"resource kind {self.kind!r} is unknown")
        _check_id("namespace", self.namespace)
        if self.kind in ("Model", "Version", "Deployment", "Hub", "AuditLog", "Policy"):
            _check_id(f"{self.kind} name", self.name)
        if self.kind == "Version":
            _check_id("version", self.version)
        for what, value in (
            ("classification", self.classification),
            ("verdict", self.scan_verdict),
        ):
            _check_id(what, value)
        if not isinstance(self.yanked, bool):
            raise InputError("yanked must be true or false")

    @property
    def id(self) -> str:
        if self.kind == "Namespace":
            return self.namespace
        if self.kind in ("Model", "Deployment"):
            return f"{self.namespace}/{self.name}"
        if self.kind == "Version":
            return f"{self.namespace}/{self.name}@{self.version}"
        return self.name

    def uid(self) -> dict[str, str]:
        return _uid(self.kind, self.id)

    def entities(self) -> list[Any]:
        """This resource and every ancestor up to ``Namespace::"*"``."""
        root = [_entity("Namespace", ALL_NAMESPACES, {}, [])]
        if self.kind in ("Hub", "AuditLog", "Policy"):
            return [*root, _entity(self.kind, self.name, {}, [_uid("Namespace", "*")])]
        out = root
        if self.namespace != ALL_NAMESPACES:
            out = [*root, _entity("Namespace", self.namespace, {}, [_uid("Namespace", "*")])]
        if self.kind == "Namespace":
            return out
        ns = _ref("Namespace", self.namespace)
        parent = [_uid("Namespace", self.namespace)]
        base = {"namespace": ns, "classification": self.classification}
        if self.kind == "Deployment":
            return [*out, _entity("Deployment", self.id, base, parent)]
        model_id = f"{self.namespace}/{self.name}"
        out = [*out, _entity("Model", model_id, base, parent)]
        if self.kind == "Model":
            return out
        attrs = {
            **base,
            "model": _ref("Model", model_id),
            "scan_verdict": self.scan_verdict,
            "yanked": self.yanked,
        }
        return [*out, _entity("Version", self.id, attrs, [_uid("Model", model_id)])]


@functools.lru_cache(maxsize=4096)  # every request's context checks its caller's address
def _check_ip(text: str) -> None:
    """ValueError unless ``text`` is an IP address."""
    ipaddress.ip_address(text)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """The circumstances of a request: source address, time, how and when it authenticated."""

    source_ip: str
    time: datetime
    auth_method: AuthMethod
    mfa_age_seconds: int | None = None
    allow_yanked: bool = False
    #: SHA-256 fingerprint (64 hex digits) of a verified client certificate, if any.
    client_certificate: str | None = None

    def __post_init__(self) -> None:
        try:
            if not isinstance(self.source_ip, str):  # ip_address(True) would be 0.0.0.1
                raise TypeError("not a string")
            _check_ip(self.source_ip)
        except (ValueError, TypeError) as exc:
            raise InputError(f"source_ip {self.source_ip!r} is not an IP address") from exc
        if not isinstance(self.time, datetime) or self.time.utcoffset() is None:
            raise InputError("time must be a timezone-aware datetime")
        try:
            self._cedar_time()
        except (OverflowError, ValueError) as exc:
            raise InputError("time is out of range; give a time between years 1 and 9999") from exc
        if self.auth_method not in get_args(AuthMethod):
            raise InputError(
                f"auth_method {self.auth_method!r} is unknown; use one of "
                + ", ".join(get_args(AuthMethod))
            )
        age = self.mfa_age_seconds
        if age is not None and (
            isinstance(age, bool) or not isinstance(age, int) or not 0 <= age < 2**62
        ):
            raise InputError("mfa_age_seconds must be a whole number of seconds, 0 or more")
        if not isinstance(self.allow_yanked, bool):
            raise InputError("allow_yanked must be true or false")
        cert = self.client_certificate
        if cert is not None and (
            not isinstance(cert, str) or len(cert) != 64 or cert.strip("0123456789abcdef")
        ):
            raise InputError("client_certificate must be a SHA-256 fingerprint: 64 hex digits")

    @classmethod
    def from_dict(cls, data: object, *, defaults: RequestContext) -> RequestContext:
        """A context from JSON-like data; keys left out keep ``defaults``' values."""
        if not isinstance(data, dict):
            raise InputError("the context must be a JSON object")
        known = {
            "source_ip",
            "time",
            "auth_method",
            "mfa_age_seconds",
            "allow_yanked",
            "client_certificate",
        }
        unknown = sorted(str(k)[:64] for k in data if k not in known)
        if unknown:
            raise InputError(f"unknown context keys {unknown}; use {sorted(known)}")
        when = data.get("time", defaults.time)
        if isinstance(when, str):
            try:
                when = datetime.fromisoformat(when)
            except ValueError as exc:
                raise InputError(f"context time {when[:64]!r} is not an ISO 8601 time") from exc
        return cls(
            source_ip=data.get("source_ip", defaults.source_ip),
            time=when,
            auth_method=data.get("auth_method", defaults.auth_method),
            mfa_age_seconds=data.get("mfa_age_seconds", defaults.mfa_age_seconds),
            allow_yanked=data.get("allow_yanked", defaults.allow_yanked),
            client_certificate=data.get("client_certificate", defaults.client_certificate),
        )

    def _cedar_time(self) -> str:
        global _last_time  # one tuple, replaced whole: threads never see half of it
        second = int(self.time.timestamp())
        last = _last_time
        if last[0] == second:  # most requests share their second with the one before
            return last[1]
        utc = self.time.astimezone(UTC).replace(tzinfo=None, microsecond=0)
        text = utc.isoformat() + "Z"
        _last_time = (second, text)
        return text

    def to_cedar_json(self) -> str:
        """:meth:`to_cedar` as compact JSON, written directly: every value was validated
        when the context was built (an IP address, a time, a known method, digits, hex), so
        none needs escaping, and a decision does not pay for ``json.dumps``."""
        parts = [
            f'"source_ip":{{"__extn":{{"fn":"ip","arg":"{self.source_ip}"}}}}',
            f'"time":{{"__extn":{{"fn":"datetime","arg":"{self._cedar_time()}"}}}}',
            f'"auth_method":"{self.auth_method}"',
        ]
        if self.mfa_age_seconds is not None:
            parts.append(f'"mfa_age_seconds":{int(self.mfa_age_seconds)}')
        if self.allow_yanked:
            parts.append('"allow_yanked":true')
        if self.client_certificate is not None:
            parts.append(f'"client_certificate":"{self.client_certificate}"')
        return "{" + ",".join(parts) + "}"

    def to_cedar(self) -> dict[str, Any]:
        when = self._cedar_time()
        out: dict[str, Any] = {
            "source_ip": {"__extn": {"fn": "ip", "arg": self.source_ip}},
            "time": {"__extn": {"fn": "datetime", "arg": when}},
            "auth_method": self.auth_method,
        }
        if self.mfa_age_seconds is not None:
            out["mfa_age_seconds"] = self.mfa_age_seconds
        if self.allow_yanked:
            out["allow_yanked"] = True
        if self.client_certificate is not None:
            out["client_certificate"] = self.client_certificate
        return out
