"""API keys: shown once, stored hashed, expiring, revocable; roles per namespace."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from bastion.auth import ApiKeyStore, Principal, parse_token
from bastion.db import ApiKey, Database, sqlite_url
from bastion.errors import AuthenticationError, InputError, NotFoundError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> ApiKeyStore:
    db = Database(sqlite_url(tmp_path / "keys.sqlite"))
    db.migrate()
    return ApiKeyStore(db)


def test_a_key_authenticates_and_carries_its_roles(store: ApiKeyStore) -> None:
    issued = store.create("ci", [("med", "publisher")], created_by="key:admin", now=NOW)
    assert issued.token.startswith(f"bst_{issued.key_id}_")
    principal = store.authenticate(issued.token, now=NOW)
    assert principal.key_id == issued.key_id
    assert principal.name == "ci"
    assert principal.can("publisher", "med")
    assert principal.can("reader", "med")
    assert not principal.can("admin", "med")
    assert not principal.can("reader", "other")
    assert not principal.is_admin


def test_only_a_hash_of_the_secret_is_stored(store: ApiKeyStore, tmp_path: Path) -> None:
    issued = store.create("ci", [("med", "reader")], created_by="x", now=NOW)
    secret = issued.token.split("_", 2)[2]  # bst_<id>_<secret>; the secret may hold "_"
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("keys.sqlite*"))  # WAL included
    assert secret.encode() not in raw
    assert issued.token.encode() not in raw
    assert all("token" not in row for row in store.list())


def test_wrong_expired_and_revoked_keys_get_the_same_refusal(store: ApiKeyStore) -> None:
    issued = store.create(
        "ci", [("med", "reader")], created_by="x", now=NOW, expires_at=NOW + timedelta(days=1)
    )
    key_id = issued.key_id
    messages = set()
    for token, at in [
        (f"bst_{key_id}_{'A' * 43}", NOW),  # wrong secret
        (f"bst_{'a' * 16}_{'A' * 43}", NOW),  # unknown id
        (issued.token, NOW + timedelta(days=2)),  # expired
    ]:
        with pytest.raises(AuthenticationError) as caught:
            store.authenticate(token, now=at)
        messages.add(caught.value.message)
    store.revoke(key_id, now=NOW)
    with pytest.raises(AuthenticationError) as caught:
        store.authenticate(issued.token, now=NOW)
    messages.add(caught.value.message)
    assert len(messages) == 1
    with pytest.raises(NotFoundError):
        store.revoke("nosuchkey", now=NOW)


def test_last_use_is_recorded_but_not_on_every_request(store: ApiKeyStore) -> None:
    issued = store.create("ci", [("med", "reader")], created_by="x", now=NOW)
    store.authenticate(issued.token, now=NOW)
    store.authenticate(issued.token, now=NOW + timedelta(seconds=5))
    [row] = [r for r in store.list() if r["id"] == issued.key_id]
    assert row["last_used_at"] == "2026-11-22T12:00:00Z"


def test_bad_key_requests_are_refused(store: ApiKeyStore) -> None:
    with pytest.raises(InputError, match="at least one role"):
        store.create("x", [], created_by="x", now=NOW)
    with pytest.raises(InputError, match="unknown role"):
        store.create("x", [("med", "owner")], created_by="x", now=NOW)  # type: ignore[list-item]
    with pytest.raises(InputError, match="future"):
        store.create("x", [("med", "reader")], created_by="x", now=NOW, expires_at=NOW)


def test_admin_on_every_namespace(store: ApiKeyStore) -> None:
    assert not store.has_admin()
    issued = store.create("root", [("*", "admin")], created_by="bootstrap", now=NOW)
    assert store.has_admin()
    principal = store.authenticate(issued.token, now=NOW)
    assert principal.is_admin
    assert principal.can("publisher", "anything")
    with store._db.session() as s:  # the row exists, keyed by the public id
        assert s.scalars(select(ApiKey.id)).all() == [issued.key_id]


def test_roles_combine_to_the_highest() -> None:
    p = Principal("k", "n", (("med", "reader"), ("med", "publisher"), ("*", "reader")))
    assert p.role_in("med") == "publisher"
    assert p.role_in("other") == "reader"
    assert p.visible(["med", "other"]) == ["med", "other"]
    assert Principal("k", "n", ()).role_in("med") is None


@given(st.text(max_size=120))
def test_any_token_text_parses_or_is_an_authentication_error(text: str) -> None:
    try:
        key_id, secret = parse_token(text)
    except AuthenticationError:
        return
    assert text == f"bst_{key_id}_{secret}"
