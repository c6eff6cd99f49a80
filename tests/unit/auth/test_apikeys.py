"""API keys: shown once, stored hashed, expiring, revocable; roles per namespace."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from bastion.auth import ApiKeyStore, parse_token
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
    assert principal.kind == "ServiceAccount"
    assert principal.auth_method == "api_key"
    assert principal.id == issued.key_id
    assert principal.actor == f"key:{issued.key_id}"
    assert principal.name == "ci"
    assert principal.roles == (("med", "publisher"),)
    assert principal.scope == ("consume", "publish", "version.push")  # the role's default
    assert not principal.is_admin


def test_a_key_may_be_scoped_narrower_than_its_roles(store: ApiKeyStore) -> None:
    issued = store.create(
        "ci", [("med", "publisher")], created_by="x", now=NOW, scope=["version.pull", "browse"]
    )
    principal = store.authenticate(issued.token, now=NOW)
    assert principal.scope == ("version.pull", "browse")
    assert [r["scope"] for r in store.list()] == [["version.pull", "browse"]]
    with pytest.raises(InputError, match="not an action"):
        store.create("ci", [("med", "publisher")], created_by="x", now=NOW, scope=["push"])
    with pytest.raises(InputError, match="at least one"):
        store.create("ci", [("med", "publisher")], created_by="x", now=NOW, scope=[])


def test_an_admin_key_names_every_action_for_the_policies(store: ApiKeyStore) -> None:
    from bastion.auth import ACTIONS

    issued = store.create("root", [("*", "admin")], created_by="x", now=NOW)
    principal = store.authenticate(issued.token, now=NOW)
    assert principal.is_admin
    assert principal.scope == ("*",)
    assert set(ACTIONS) <= set(principal.for_policy().scope)


def test_rotation_and_revocation_take_effect_at_once_despite_the_cache(
    store: ApiKeyStore,
) -> None:
    issued = store.create("ci", [("med", "consumer")], created_by="x", now=NOW)
    store.authenticate(issued.token, now=NOW)  # now remembered
    assert store.peek(issued.token, now=NOW) is not None
    rotated = store.rotate(issued.key_id, now=NOW)
    assert rotated.key_id == issued.key_id
    assert rotated.token != issued.token
    with pytest.raises(AuthenticationError):
        store.authenticate(issued.token, now=NOW)
    assert store.authenticate(rotated.token, now=NOW).id == issued.key_id
    [row] = store.list()
    assert row["rotated_at"] == "2026-11-22T12:00:00Z"
    store.revoke(issued.key_id, now=NOW)
    with pytest.raises(AuthenticationError):
        store.authenticate(rotated.token, now=NOW)
    with pytest.raises(NotFoundError):
        store.rotate(issued.key_id, now=NOW)


def test_a_remembered_key_is_checked_again_after_the_cache_time(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "keys.sqlite"))
    db.migrate()
    here, elsewhere = ApiKeyStore(db, cache_seconds=5), ApiKeyStore(db, cache_seconds=5)
    issued = here.create("ci", [("med", "consumer")], created_by="x", now=NOW)
    here.authenticate(issued.token, now=NOW)
    elsewhere.revoke(issued.key_id, now=NOW)  # another hub process
    assert here.authenticate(issued.token, now=NOW + timedelta(seconds=1)).id == issued.key_id
    with pytest.raises(AuthenticationError):
        here.authenticate(issued.token, now=NOW + timedelta(seconds=6))


def test_only_a_hash_of_the_secret_is_stored(store: ApiKeyStore, tmp_path: Path) -> None:
    issued = store.create("ci", [("med", "consumer")], created_by="x", now=NOW)
    secret = issued.token.split("_", 2)[2]  # bst_<id>_<secret>; the secret may hold "_"
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("keys.sqlite*"))  # WAL included
    assert secret.encode() not in raw
    assert issued.token.encode() not in raw
    assert all("token" not in row for row in store.list())


def test_wrong_expired_and_revoked_keys_get_the_same_refusal(store: ApiKeyStore) -> None:
    issued = store.create(
        "ci", [("med", "consumer")], created_by="x", now=NOW, expires_at=NOW + timedelta(days=1)
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
    issued = store.create("ci", [("med", "consumer")], created_by="x", now=NOW)
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
        store.create("x", [("med", "consumer")], created_by="x", now=NOW, expires_at=NOW)


def test_admin_on_every_namespace(store: ApiKeyStore) -> None:
    assert not store.has_admin()
    issued = store.create("root", [("*", "admin")], created_by="bootstrap", now=NOW)
    assert store.has_admin()
    principal = store.authenticate(issued.token, now=NOW)
    assert principal.is_admin
    with store._db.session() as s:  # the row exists, keyed by the public id
        assert s.scalars(select(ApiKey.id)).all() == [issued.key_id]


@given(st.text(max_size=120))
def test_any_token_text_parses_or_is_an_authentication_error(text: str) -> None:
    try:
        key_id, secret = parse_token(text)
    except AuthenticationError:
        return
    assert text == f"bst_{key_id}_{secret}"


class _CountingStore(ApiKeyStore):
    reads = 0

    def _read_known_ids(self) -> None:
        self.reads += 1
        super()._read_known_ids()


def test_made_up_keys_cost_no_database_query_each(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "keys.sqlite"))
    db.migrate()
    store = _CountingStore(db)
    real = store.create("ci", [("med", "consumer")], created_by="x", now=NOW)
    for n in range(200):
        forged = f"bst_{n:016d}".translate(str.maketrans("0123456789", "abcdefghij"))
        with pytest.raises(AuthenticationError):
            store.authenticate(f"{forged}_{'A' * 43}", now=NOW)
    assert store.reads <= 2  # read once, then again only after a second
    assert store.authenticate(real.token, now=NOW).id == real.key_id


def test_a_key_made_by_another_process_works_within_a_second(tmp_path: Path) -> None:
    db = Database(sqlite_url(tmp_path / "keys.sqlite"))
    db.migrate()
    here, elsewhere = ApiKeyStore(db), ApiKeyStore(db)
    with pytest.raises(AuthenticationError):  # here now knows every id there is
        here.authenticate(f"bst_{'a' * 16}_{'A' * 43}", now=NOW)
    issued = elsewhere.create("ci", [("med", "consumer")], created_by="x", now=NOW)
    time.sleep(1.1)
    assert here.authenticate(issued.token, now=NOW).id == issued.key_id
