"""API keys (service accounts): shown once, stored hashed, scoped, expiring, rotatable, revocable.

A key reads ``bst_<id>_<secret>``: the id finds the row, and the secret (256 random bits)
is checked against the stored SHA-256 of it with :func:`hmac.compare_digest`. A slow
password hash is not needed for a secret of that entropy. An unknown id costs the same
comparison as a known one.

A key holds roles on namespaces and a *scope*: the actions (or action groups) it may use
at all, whatever its roles allow. ``*`` in a scope names every action. Rotation gives the
key a new secret; the old one stops working at once.

Authenticated keys are remembered for ``cache_seconds`` (default 5), so a busy caller does
not cost a database query per request. Revoking or rotating through this store forgets the
key at once; another hub process sharing the database notices within ``cache_seconds``.
The ids of all keys are known too (read again at most once a second when an unknown one
comes), so a flood of made-up keys costs no database query each: a key made by another
hub process works here within a second.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from bastion._key_text import TOKEN
from bastion.auth._policy_schema import (
    ACTION_GROUPS,
    ACTIONS,
    ALL_NAMESPACES,
    POLICY_ROLES,
    PolicyRole,
)
from bastion.auth._principal import Principal
from bastion.auth._users_roles import check_roles
from bastion.db import ApiKey, Database, RoleBinding, aware, iso
from bastion.errors import AuthenticationError, InputError, NotFoundError

__all__ = [
    "ROLE_SCOPES",
    "ApiKeyStore",
    "IssuedKey",
    "check_scope",
    "default_scope",
    "parse_token",
]

PREFIX = "bst_"
_DUMMY_HASH = hashlib.sha256(b"bastion: no such key").digest()
#: last_used_at is written at most this often per key, not on every request.
_LAST_USED_EVERY = timedelta(seconds=60)
_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_MAX_CACHED = 10_000
#: Seconds between reads of every key id, when unknown ids come.
_KNOWN_IDS_EVERY = 1.0
#: The scope a key gets when none is asked for: what its roles are for.
ROLE_SCOPES: dict[str, tuple[str, ...]] = {
    "admin": ("*",),
    "publisher": ("consume", "publish", "version.push"),
    "deployer": ("browse", "deploy", "deployment.manage"),
    "consumer": ("consume",),
    "invoker": ("invoke",),
    "auditor": ("audit",),
}
_REFUSED = "the API key is unknown, expired or revoked; ask an administrator for a new one"


def parse_token(token: str) -> tuple[str, str]:
    """Split a token into (key id, secret); AuthenticationError if it is malformed."""
    match = TOKEN.fullmatch(token)
    if match is None:
        raise AuthenticationError(
            "the API key is malformed; keys look like bst_<id>_<secret>, as shown when created"
        )
    return match.group(1), match.group(2)


def check_scope(scope: Sequence[str]) -> tuple[str, ...]:
    """A validated scope: action names, action groups, or ``*``."""
    if not scope:
        raise InputError("a scope names at least one action (or '*')")
    for item in scope:
        if item != "*" and item not in ACTIONS and item not in ACTION_GROUPS:
            raise InputError(
                f"scope {str(item)[:64]!r} is not an action or an action group; "
                f"groups are {', '.join(ACTION_GROUPS)}; actions are listed in docs/policy.md"
            )
    return tuple(dict.fromkeys(scope))


def default_scope(roles: Sequence[tuple[str, PolicyRole]]) -> tuple[str, ...]:
    """The scope a holder of ``roles`` gets when none is asked for: what the roles are for."""
    return tuple(dict.fromkeys(s for _, role in roles for s in ROLE_SCOPES[role]))


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new (or rotated) key: ``token`` is shown once and never stored."""

    key_id: str
    name: str
    token: str
    expires_at: datetime | None
    bindings: tuple[tuple[str, PolicyRole], ...]
    scope: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Cached:
    secret_hash: bytes
    principal: Principal
    expires_at: datetime | None
    until: datetime


class ApiKeyStore:
    def __init__(self, db: Database, *, cache_seconds: float = 5.0) -> None:
        self._db = db
        self._cache_for = timedelta(seconds=cache_seconds)
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self._known: set[str] = set()
        self._known_at = -_KNOWN_IDS_EVERY

    def create(
        self,
        name: str,
        bindings: Sequence[tuple[str, str]],
        *,
        created_by: str,
        now: datetime,
        expires_at: datetime | None = None,
        scope: Sequence[str] | None = None,
    ) -> IssuedKey:
        roles = check_roles(bindings, holder="an API key")
        checked = check_scope(default_scope(roles) if scope is None else scope)
        if expires_at is not None and expires_at <= now:
            raise InputError("the expiry time of an API key must be in the future")
        key_id = "".join(secrets.choice(_B32) for _ in range(16))
        secret = secrets.token_urlsafe(32)
        with self._db.session() as s:
            s.add(
                ApiKey(
                    id=key_id,
                    name=name,
                    secret_hash=_hash(secret),
                    created_at=now,
                    created_by=created_by,
                    expires_at=expires_at,
                    scope=json.dumps(list(checked)),
                )
            )
            s.flush()
            for namespace, role in roles:
                s.add(RoleBinding(key_id=key_id, namespace=namespace, role=role))
        with self._lock:
            self._known.add(key_id)
        token = f"{PREFIX}{key_id}_{secret}"
        return IssuedKey(key_id, name, token, expires_at, roles, checked)

    def peek(self, token: str, *, now: datetime) -> Principal | None:
        """The principal if the key was checked recently (no database query), else None.

        Raises AuthenticationError for a malformed token, or a remembered key whose
        secret does not match or which has expired.
        """
        key_id, secret = parse_token(token)
        with self._lock:
            cached = self._cache.get(key_id)
            unknown = key_id not in self._known
            fresh = time.monotonic() - self._known_at < _KNOWN_IDS_EVERY
        if unknown and fresh:
            hmac.compare_digest(_DUMMY_HASH, _hash(secret))  # the same work as a wrong secret
            raise AuthenticationError(_REFUSED)
        if cached is None or cached.until <= now:
            return None
        if not hmac.compare_digest(cached.secret_hash, _hash(secret)):
            raise AuthenticationError(_REFUSED)
        if cached.expires_at is not None and cached.expires_at <= now:
            raise AuthenticationError(_REFUSED)
        return cached.principal

    def authenticate(self, token: str, *, now: datetime) -> Principal:
        """The principal of a valid key; one AuthenticationError for every failure."""
        peeked = self.peek(token, now=now)
        if peeked is not None:
            return peeked
        key_id, secret = parse_token(token)
        digest = _hash(secret)
        with self._lock:
            unknown = key_id not in self._known
        if unknown:
            self._read_known_ids()
        with self._db.session() as s:
            row = s.get(ApiKey, key_id)
            stored = row.secret_hash if row is not None else _DUMMY_HASH
            if not hmac.compare_digest(stored, digest) or row is None:
                raise AuthenticationError(_REFUSED)
            expires = aware(row.expires_at) if row.expires_at is not None else None
            if row.revoked_at is not None or (expires is not None and expires <= now):
                raise AuthenticationError(_REFUSED)
            if row.last_used_at is None or now - aware(row.last_used_at) > _LAST_USED_EVERY:
                row.last_used_at = now
            bindings = s.scalars(select(RoleBinding).where(RoleBinding.key_id == key_id)).all()
            principal = Principal(
                kind="ServiceAccount",
                id=key_id,
                name=row.name,
                auth_method="api_key",
                roles=tuple((b.namespace, _role(b.role)) for b in bindings),
                scope=_stored_scope(row.scope),
            )
            stored_hash = bytes(row.secret_hash)
        with self._lock:
            self._cache[key_id] = _Cached(stored_hash, principal, expires, now + self._cache_for)
            self._cache.move_to_end(key_id)
            while len(self._cache) > _MAX_CACHED:
                self._cache.popitem(last=False)
        return principal

    def _read_known_ids(self) -> None:
        with self._db.session() as s:
            ids = set(s.scalars(select(ApiKey.id)))
        with self._lock:
            self._known = ids
            self._known_at = time.monotonic()

    def forget(self, key_id: str) -> None:
        """Drop a key from the cache: the next request reads the database."""
        with self._lock:
            self._cache.pop(key_id, None)

    def revoke(self, key_id: str, *, now: datetime) -> None:
        with self._db.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r}")
            if row.revoked_at is None:
                row.revoked_at = now
        self.forget(key_id)

    def rotate(self, key_id: str, *, now: datetime) -> IssuedKey:
        """A new secret for the key; the old token stops working at once."""
        secret = secrets.token_urlsafe(32)
        with self._db.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None or row.revoked_at is not None:
                raise NotFoundError(f"no live API key with id {key_id!r}")
            expires = aware(row.expires_at) if row.expires_at is not None else None
            if expires is not None and expires <= now:
                raise InputError(f"API key {key_id!r} has expired; create a new one")
            row.secret_hash = _hash(secret)
            row.rotated_at = now
            bindings = s.scalars(select(RoleBinding).where(RoleBinding.key_id == key_id)).all()
            roles = tuple((b.namespace, _role(b.role)) for b in bindings)
            name, scope = row.name, _stored_scope(row.scope)
        self.forget(key_id)
        return IssuedKey(key_id, name, f"{PREFIX}{key_id}_{secret}", expires, roles, scope)

    def list(self) -> list[dict[str, object]]:
        with self._db.session() as s:
            keys = s.scalars(select(ApiKey).order_by(ApiKey.created_at)).all()
            bindings = s.scalars(select(RoleBinding)).all()
            roles: dict[str, list[dict[str, str]]] = {}
            for b in bindings:
                roles.setdefault(b.key_id, []).append({"namespace": b.namespace, "role": b.role})
            return [
                {
                    "id": k.id,
                    "name": k.name,
                    "roles": roles.get(k.id, []),
                    "scope": list(_stored_scope(k.scope)),
                    "created_at": iso(k.created_at),
                    "created_by": k.created_by,
                    "expires_at": iso(k.expires_at),
                    "revoked_at": iso(k.revoked_at),
                    "rotated_at": iso(k.rotated_at),
                    "last_used_at": iso(k.last_used_at),
                }
                for k in keys
            ]

    def has_admin(self) -> bool:
        with self._db.session() as s:
            query = select(RoleBinding.id).where(
                RoleBinding.namespace == ALL_NAMESPACES, RoleBinding.role == "admin"
            )
            return s.scalars(query.limit(1)).first() is not None


def _stored_scope(text: str) -> tuple[str, ...]:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise AuthenticationError(
            "the API key's scope is unreadable; ask an administrator"
        ) from exc
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise AuthenticationError("the API key's scope is unreadable; ask an administrator")
    known = [i for i in items if i == "*" or i in ACTIONS or i in ACTION_GROUPS]
    return tuple(known)


def _role(value: str) -> PolicyRole:
    for role in POLICY_ROLES:
        if role == value:
            return role
    raise AuthenticationError("the API key holds an unknown role; ask an administrator")
