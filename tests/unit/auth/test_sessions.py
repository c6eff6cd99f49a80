"""People's sessions: idle and absolute expiry, revocation at once, step-up, CSRF tokens."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from bastion.auth._principal import Principal
from bastion.auth._sessions import SESSION_REFUSED, IssuedSession, SessionStore
from bastion.auth._users import UserLogin
from bastion.db import Database, SessionRow, User, UserRole, sqlite_url
from bastion.errors import AuthenticationError, InputError, NotFoundError

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def add_user(db: Database, name: str) -> UserLogin:
    """An active user with two roles, as a successful sign-in reports it."""
    with db.session() as s:
        user = User(name=name, status="active", created_at=NOW, created_by="test")
        s.add(user)
        s.flush()
        s.add(UserRole(user_id=user.id, namespace="med", role="deployer"))
        s.add(UserRole(user_id=user.id, namespace="*", role="consumer"))
        return UserLogin(user.id, name, (("med", "deployer"), ("*", "consumer")), "totp")


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(sqlite_url(tmp_path / "hub.db"))
    database.migrate()
    return database


@pytest.fixture
def sessions(db: Database) -> SessionStore:
    return SessionStore(db)


@pytest.fixture
def alice(db: Database) -> UserLogin:
    return add_user(db, "alice")


def refused(sessions: SessionStore, token: str, at: datetime) -> str:
    with pytest.raises(AuthenticationError) as caught:
        sessions.authenticate(token, now=at)
    return str(caught.value)


def test_a_session_authenticates_its_person(sessions: SessionStore, alice: UserLogin) -> None:
    issued = sessions.open(alice, now=NOW, source="192.0.2.7")
    assert issued.token.startswith(f"bss_{issued.session_id}_")
    assert len(issued.token) == 4 + 16 + 1 + 43
    assert len(issued.csrf_token) == 43
    assert issued.expires_at == NOW + timedelta(hours=8)
    assert issued.mfa_at == NOW
    principal = sessions.authenticate(issued.token, now=NOW + MINUTE, via_cookie=True)
    assert principal == Principal(
        kind="User",
        id="alice",
        name="alice",
        auth_method="password",
        roles=(("med", "deployer"), ("*", "consumer")),
        mfa_at=NOW,
        session_id=issued.session_id,
        via_cookie=True,
    )
    assert principal.actor == "user:alice"
    assert principal.mfa_age(NOW + MINUTE) == 60
    assert not sessions.authenticate(issued.token, now=NOW).via_cookie


def test_wrong_unknown_and_malformed_tokens_get_one_refusal(
    sessions: SessionStore, alice: UserLogin
) -> None:
    issued = sessions.open(alice, now=NOW, source="test")
    tokens = [
        f"bss_{issued.session_id}_{'A' * 43}",  # wrong secret
        f"bss_{'a' * 16}_{issued.token[-43:]}",  # unknown id
        issued.token[:-1],  # truncated
        issued.token + "\n",
        issued.token.replace("bss_", "bst_"),
        "",
    ]
    assert {refused(sessions, token, NOW) for token in tokens} == {SESSION_REFUSED}


def test_a_session_ends_when_idle(db: Database, sessions: SessionStore, alice: UserLogin) -> None:
    issued = sessions.open(alice, now=NOW, source="test")
    at = NOW
    for _ in range(5):  # active every 20 minutes: stays open
        at += 20 * MINUTE
        sessions.authenticate(issued.token, now=at)
    with db.session() as s:
        row = s.get(SessionRow, issued.session_id)
        assert row is not None
        assert row.last_seen_at.replace(tzinfo=UTC) == at
    assert refused(sessions, issued.token, at + 30 * MINUTE) == SESSION_REFUSED
    other = sessions.open(alice, now=NOW, source="test")
    sessions.authenticate(other.token, now=NOW + 29 * MINUTE)
    assert refused(sessions, other.token, NOW + 59 * MINUTE) == SESSION_REFUSED


def test_last_seen_is_written_at_most_once_a_minute(
    db: Database, sessions: SessionStore, alice: UserLogin
) -> None:
    issued = sessions.open(alice, now=NOW, source="test")

    def last_seen() -> datetime:
        with db.session() as s:
            row = s.get(SessionRow, issued.session_id)
            assert row is not None
            return row.last_seen_at.replace(tzinfo=UTC)

    sessions.authenticate(issued.token, now=NOW + timedelta(seconds=30))
    assert last_seen() == NOW
    sessions.authenticate(issued.token, now=NOW + timedelta(seconds=90))
    assert last_seen() == NOW + timedelta(seconds=90)


def test_a_session_ends_after_its_lifetime_however_active(
    sessions: SessionStore, alice: UserLogin
) -> None:
    issued = sessions.open(alice, now=NOW, source="test")
    at = NOW
    while at + 10 * MINUTE < issued.expires_at:
        at += 10 * MINUTE
        sessions.authenticate(issued.token, now=at)
    assert refused(sessions, issued.token, issued.expires_at) == SESSION_REFUSED


def test_revocation_takes_effect_at_once(
    db: Database, sessions: SessionStore, alice: UserLogin
) -> None:
    first = sessions.open(alice, now=NOW, source="test")
    second = sessions.open(alice, now=NOW, source="test")
    other = sessions.open(add_user(db, "bob"), now=NOW, source="test")
    sessions.authenticate(first.token, now=NOW)
    sessions.revoke(first.session_id, now=NOW)
    sessions.revoke(first.session_id, now=NOW)  # twice is harmless
    assert refused(sessions, first.token, NOW) == SESSION_REFUSED
    sessions.authenticate(second.token, now=NOW)
    assert sessions.revoke_user(alice.user_id, now=NOW) == 1
    assert refused(sessions, second.token, NOW) == SESSION_REFUSED
    assert sessions.authenticate(other.token, now=NOW).name == "bob"
    with pytest.raises(NotFoundError):
        sessions.revoke("a" * 16, now=NOW)


def test_a_user_who_is_no_longer_active_loses_their_sessions(
    db: Database, sessions: SessionStore, alice: UserLogin
) -> None:
    issued = sessions.open(alice, now=NOW, source="test")
    with db.session() as s:
        s.execute(update(User).where(User.id == alice.user_id).values(status="disabled"))
    assert refused(sessions, issued.token, NOW) == SESSION_REFUSED


def test_step_up_moves_mfa_at(db: Database, sessions: SessionStore, alice: UserLogin) -> None:
    issued = sessions.open(alice, now=NOW, source="test")
    later = NOW + 20 * MINUTE
    assert sessions.authenticate(issued.token, now=later).mfa_age(later) == 20 * 60
    assert sessions.step_up(issued.session_id, method="recovery", now=later) == later
    principal = sessions.authenticate(issued.token, now=later + MINUTE)
    assert principal.mfa_at == later
    assert principal.mfa_age(later + MINUTE) == 60
    with db.session() as s:
        method = s.scalars(select(SessionRow.mfa_method)).one()
    assert method == "recovery"
    with pytest.raises(InputError):
        sessions.step_up(issued.session_id, method="sms", now=later)  # type: ignore[arg-type]
    sessions.revoke(issued.session_id, now=later)
    with pytest.raises(AuthenticationError):
        sessions.step_up(issued.session_id, method="totp", now=later)


def test_the_csrf_token_belongs_to_its_session(sessions: SessionStore, alice: UserLogin) -> None:
    first = sessions.open(alice, now=NOW, source="test")
    second = sessions.open(alice, now=NOW, source="test")
    assert sessions.check_csrf(first.session_id, first.csrf_token)
    assert not sessions.check_csrf(first.session_id, second.csrf_token)
    assert not sessions.check_csrf(first.session_id, "")
    assert not sessions.check_csrf(first.session_id, first.csrf_token + "x")
    assert not sessions.check_csrf("a" * 16, first.csrf_token)
    assert not sessions.check_csrf("nonsense", first.csrf_token)


def test_purge_deletes_ended_sessions_only(
    db: Database, sessions: SessionStore, alice: UserLogin
) -> None:
    purge_at = NOW + timedelta(hours=8)
    live = sessions.open(alice, now=purge_at - 10 * MINUTE, source="test")
    sessions.open(alice, now=NOW + timedelta(hours=6), source="idle")
    sessions.open(alice, now=NOW, source="expired")
    revoked = sessions.open(alice, now=purge_at - 10 * MINUTE, source="revoked")
    sessions.revoke(revoked.session_id, now=purge_at - 5 * MINUTE)
    assert sessions.purge_expired(purge_at) == 3
    with db.session() as s:
        assert s.scalars(select(SessionRow.id)).all() == [live.session_id]
    assert sessions.authenticate(live.token, now=purge_at).name == "alice"


def test_only_hashes_are_stored_and_nothing_secret_is_shown(
    db: Database, sessions: SessionStore, alice: UserLogin, tmp_path: Path
) -> None:
    issued = sessions.open(alice, now=NOW, source="test")
    secret = issued.token.split("_", 2)[2]
    shown = " ".join(
        [
            repr(issued),
            repr(sessions),
            repr(sessions.authenticate(issued.token, now=NOW)),
            refused(sessions, issued.token[:-2] + "AA", NOW),
        ]
    )
    for value in (secret, issued.token, issued.csrf_token):
        assert value not in shown
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("hub.db*"))  # WAL included
    for value in (secret, issued.token, issued.csrf_token):
        assert value.encode() not in raw


def test_the_store_refuses_unusable_settings(db: Database) -> None:
    with pytest.raises(InputError, match="positive"):
        SessionStore(db, idle=timedelta(0))
    with pytest.raises(InputError, match="positive"):
        SessionStore(db, lifetime=-MINUTE)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> SessionStore:
    db = Database(sqlite_url(tmp_path_factory.mktemp("fuzzed") / "hub.db"))
    db.migrate()
    store = SessionStore(db)
    store.open(add_user(db, "alice"), now=NOW, source="test")
    return store


@settings(max_examples=80, deadline=None)
@given(
    token=st.one_of(
        st.text(max_size=80), st.from_regex(r"bss_[a-z2-7]{16}_[A-Za-z0-9_-]{43}", fullmatch=True)
    ),
    csrf=st.text(max_size=60),
    session_id=st.one_of(st.text(max_size=20), st.from_regex(r"[a-z2-7]{16}", fullmatch=True)),
)
def test_arbitrary_tokens_are_refused_with_the_one_error(
    fuzzed: SessionStore, token: str, csrf: str, session_id: str
) -> None:
    assert refused(fuzzed, token, NOW) == SESSION_REFUSED
    assert fuzzed.check_csrf(session_id, csrf) is False
    with pytest.raises((AuthenticationError, NotFoundError)):
        fuzzed.step_up(session_id, method="totp", now=NOW)


def test_issued_sessions_hide_their_tokens() -> None:
    issued = IssuedSession("a" * 16, "bss_token", "csrf", NOW, NOW)
    assert "bss_token" not in repr(issued)
    assert "csrf" not in repr(issued).replace("csrf_token", "")


def test_a_remembered_session_is_checked_again_after_the_cache_time(
    db: Database, alice: UserLogin
) -> None:
    here, elsewhere = SessionStore(db, cache_seconds=5), SessionStore(db, cache_seconds=5)
    issued = here.open(alice, now=NOW, source="test")
    assert here.authenticate(issued.token, now=NOW).name == "alice"
    elsewhere.revoke(issued.session_id, now=NOW)  # another hub process signs it out
    assert here.authenticate(issued.token, now=NOW + timedelta(seconds=1)).name == "alice"
    assert refused(here, issued.token, NOW + timedelta(seconds=6)) == SESSION_REFUSED


def test_sign_out_step_up_and_forget_take_effect_at_once(
    db: Database, sessions: SessionStore, alice: UserLogin
) -> None:
    issued = sessions.open(alice, now=NOW, source="test")
    first = sessions.authenticate(issued.token, now=NOW)
    later = NOW + timedelta(seconds=2)
    sessions.step_up(issued.session_id, method="totp", now=later)
    assert sessions.authenticate(issued.token, now=later).mfa_at == later != first.mfa_at
    forged = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    assert refused(sessions, forged, later) == SESSION_REFUSED  # remembered, still checked
    assert sessions.authenticate(issued.token, now=later, via_cookie=True).via_cookie
    with db.session() as s:
        s.execute(update(User).where(User.id == alice.user_id).values(status="disabled"))
    sessions.forget()
    assert refused(sessions, issued.token, later) == SESSION_REFUSED
    with db.session() as s:
        s.execute(update(User).where(User.id == alice.user_id).values(status="active"))
    sessions.revoke(issued.session_id, now=later)
    assert refused(sessions, issued.token, later) == SESSION_REFUSED
