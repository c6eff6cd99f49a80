"""API keys: shown once, stored as a hash, compared in constant time, expiring, revocable.

A key reads ``bst_<id>_<secret>``: the id finds the row, and the secret
(256 random bits) is checked against the stored SHA-256 of it with
:func:`hmac.compare_digest`. A slow password hash is not needed for a secret
of that entropy. An unknown id costs the same comparison as a known one.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from bastion.auth._roles import ALL_NAMESPACES, ROLES, Principal, Role
from bastion.db import ApiKey, Database, RoleBinding, aware, iso
from bastion.errors import AuthenticationError, InputError, NotFoundError

__all__ = ["ApiKeyStore", "IssuedKey", "parse_token"]

PREFIX = "bst_"
_TOKEN = re.compile(r"bst_([a-z2-7]{16})_([A-Za-z0-9_-]{43})")
_DUMMY_HASH = hashlib.sha256(b"bastion: no such key").digest()
#: last_used_at is written at most this often per key, not on every request.
_LAST_USED_EVERY = timedelta(seconds=60)
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def parse_token(token: str) -> tuple[str, str]:
    """Split a token into (key id, secret); AuthenticationError if it is malformed."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        raise AuthenticationError(
            "the API key is malformed; keys look like bst_<id>_<secret>, as shown when created"
        )
    return match.group(1), match.group(2)


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A new key: ``token`` is shown once and never stored."""

    key_id: str
    name: str
    token: str
    expires_at: datetime | None
    bindings: tuple[tuple[str, Role], ...]


class ApiKeyStore:
    def __init__(self, db: Database) -> None:
        self._db = db

    def create(
        self,
        name: str,
        bindings: Sequence[tuple[str, Role]],
        *,
        created_by: str,
        now: datetime,
        expires_at: datetime | None = None,
    ) -> IssuedKey:
        if not bindings:
            raise InputError("an API key needs at least one role on a namespace")
        for namespace, role in bindings:
            if role not in ROLES:
                raise InputError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
            if not namespace:
                raise InputError("a role binding needs a namespace (or '*')")
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
                )
            )
            s.flush()
            for namespace, role in dict.fromkeys(bindings):
                s.add(RoleBinding(key_id=key_id, namespace=namespace, role=role))
        return IssuedKey(key_id, name, f"{PREFIX}{key_id}_{secret}", expires_at, tuple(bindings))

    def authenticate(self, token: str, *, now: datetime) -> Principal:
        """The principal of a valid key; one AuthenticationError for every failure."""
        key_id, secret = parse_token(token)
        refused = AuthenticationError(
            "the API key is unknown, expired or revoked; ask an administrator for a new one"
        )
        with self._db.session() as s:
            row = s.get(ApiKey, key_id)
            stored = row.secret_hash if row is not None else _DUMMY_HASH
            if not hmac.compare_digest(stored, _hash(secret)) or row is None:
                raise refused
            if row.revoked_at is not None or (
                row.expires_at is not None and aware(row.expires_at) <= now
            ):
                raise refused
            if row.last_used_at is None or now - aware(row.last_used_at) > _LAST_USED_EVERY:
                row.last_used_at = now
            bindings = s.scalars(select(RoleBinding).where(RoleBinding.key_id == key_id)).all()
            return Principal(
                key_id, row.name, tuple((b.namespace, _role(b.role)) for b in bindings)
            )

    def revoke(self, key_id: str, *, now: datetime) -> None:
        with self._db.session() as s:
            row = s.get(ApiKey, key_id)
            if row is None:
                raise NotFoundError(f"no API key with id {key_id!r}")
            if row.revoked_at is None:
                row.revoked_at = now

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
                    "created_at": iso(k.created_at),
                    "created_by": k.created_by,
                    "expires_at": iso(k.expires_at),
                    "revoked_at": iso(k.revoked_at),
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


def _role(value: str) -> Role:
    for role in ROLES:
        if role == value:
            return role
    raise AuthenticationError("the API key holds an unknown role; ask an administrator")
