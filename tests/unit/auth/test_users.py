"""People: enrolment, sign-in with password and TOTP or recovery code, one refusal, throttling.

Runs on SQLite, and on PostgreSQL too when ``BASTION_TEST_POSTGRES_URL`` is set.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from bastion.auth._passwords import PasswordHasher
from bastion.auth._sessions import SessionStore
from bastion.auth._totp import totp_code
from bastion.auth._users import LOGIN_REFUSED, UserLogin, UserStore
from bastion.crypto import LocalKeyring
from bastion.db import Database, RecoveryCode, User, sqlite_url
from bastion.errors import (
    AuthenticationError,
    BastionError,
    ConflictError,
    InputError,
    IntegrityError,
    NotFoundError,
    RateLimitedError,
)
from tests.support.databases import migrated_database  # noqa: F401 (the database fixture)

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
PASSWORD = "correct horse battery staple"
STEP = timedelta(seconds=30)


class CountingHasher(PasswordHasher):
    """A cheap hasher that records which stored hashes it verified against."""

    def __init__(self, **kwargs: int) -> None:
        super().__init__(**{"time_cost": 1, "memory_cost_kib": 1024, **kwargs})
        self.verified: list[str | None] = []
        self.argon2_runs = 0

    def verify(self, stored: str | None, password: str) -> bool:
        self.verified.append(stored)
        return super().verify(stored, password)

    def _check(self, stored: str, encoded: bytes) -> bool:
        self.argon2_runs += 1
        return super()._check(stored, encoded)


@pytest.fixture
def keys(tmp_path: Path) -> LocalKeyring:
    return LocalKeyring.create(tmp_path / "keyring.json", now=NOW)


@pytest.fixture
def hasher() -> CountingHasher:
    return CountingHasher()


@pytest.fixture
def store(database: Database, hasher: CountingHasher, keys: LocalKeyring) -> UserStore:
    return UserStore(database, hasher=hasher, keys=keys)


def secret_of(base32: str) -> bytes:
    return base64.b32decode(base32 + "=" * (-len(base32) % 8))


def enrol(store: UserStore, name: str, *, now: datetime = NOW) -> tuple[bytes, list[str]]:
    """Add and fully enrol a user; returns the TOTP secret and the recovery codes."""
    enrolment = store.add(name, [("*", "admin")], created_by="key:admin", now=now)
    totp = store.begin_enrolment(enrolment.code, PASSWORD, now=now)
    secret = secret_of(totp.secret_base32)
    return secret, store.finish_enrolment(enrolment.code, totp_code(secret, now), now=now)


def refusal(call: Any) -> tuple[type[BaseException], str, str]:
    with pytest.raises(BastionError) as caught:
        call()
    return type(caught.value), str(caught.value), caught.value.code


def test_enrolment_then_sign_in_with_totp_and_recovery_codes(store: UserStore) -> None:
    enrolment = store.add("alice", [("med", "publisher")], created_by="key:admin", now=NOW)
    assert enrolment.code.startswith("ben_")
    assert len(enrolment.code) == 36
    assert enrolment.expires_at == NOW + timedelta(days=3)
    totp = store.begin_enrolment(enrolment.code, PASSWORD, now=NOW)
    assert totp.otpauth_uri.startswith("otpauth://totp/Bastion:alice?secret=")
    assert totp.secret_base32 in totp.otpauth_uri
    secret = secret_of(totp.secret_base32)
    assert [u["status"] for u in store.list(now=NOW)] == ["pending"]

    codes = store.finish_enrolment(enrolment.code, totp_code(secret, NOW), now=NOW)
    assert len(codes) == 10
    assert len(set(codes)) == 10
    assert all(len(c) == 19 and c.count("-") == 3 for c in codes)
    assert [u["status"] for u in store.list(now=NOW)] == ["active"]

    at = NOW + STEP
    code = totp_code(secret, at)
    login = store.login("alice", PASSWORD, code, now=at)
    assert login == UserLogin(login.user_id, "alice", (("med", "publisher"),), "totp")
    with pytest.raises(AuthenticationError):  # the same code twice: replay
        store.login("alice", PASSWORD, code, now=at + timedelta(seconds=5))

    recovery = codes[3]
    assert store.login("Alice ", PASSWORD, recovery, now=at).mfa_method == "recovery"
    with pytest.raises(AuthenticationError):  # each recovery code works once
        store.login("alice", PASSWORD, recovery, now=at)
    typed = codes[4].upper().replace("-", " ")  # as copied from paper
    assert store.login("alice", PASSWORD, typed, now=at).mfa_method == "recovery"
    assert store.recovery_codes_left("alice") == 8
    assert store.list(now=at)[0]["last_login_at"] == "2026-11-22T12:00:30Z"


def test_the_enrolment_code_works_once_and_only_until_it_expires(store: UserStore) -> None:
    enrolment = store.add("bob", [("*", "consumer")], created_by="x", now=NOW)
    late = NOW + timedelta(days=3)
    expired = refusal(lambda: store.begin_enrolment(enrolment.code, PASSWORD, now=late))
    unknown = refusal(lambda: store.begin_enrolment("ben_" + "A" * 32, PASSWORD, now=NOW))
    malformed = refusal(lambda: store.begin_enrolment("nonsense", PASSWORD, now=NOW))
    assert expired == unknown == malformed
    assert expired[0] is AuthenticationError
    assert "ask an administrator for a new one" in expired[1]

    with pytest.raises(InputError, match="has not begun"):  # no password chosen yet
        store.finish_enrolment(enrolment.code, "123456", now=NOW)
    with pytest.raises(InputError, match="too short"):
        store.begin_enrolment(enrolment.code, "short", now=NOW)
    first = store.begin_enrolment(enrolment.code, PASSWORD, now=NOW)
    again = store.begin_enrolment(enrolment.code, PASSWORD, now=NOW)  # e.g. lost the QR code
    assert again.secret_base32 != first.secret_base32
    stale = totp_code(secret_of(first.secret_base32), NOW)
    with pytest.raises(AuthenticationError, match="authenticator code is wrong"):
        store.finish_enrolment(enrolment.code, stale, now=NOW)
    secret = secret_of(again.secret_base32)
    store.finish_enrolment(enrolment.code, totp_code(secret, NOW), now=NOW)
    used = refusal(lambda: store.begin_enrolment(enrolment.code, PASSWORD, now=NOW))
    assert used == unknown
    assert refusal(lambda: store.finish_enrolment(enrolment.code, "123456", now=NOW)) == unknown


def test_adding_users_checks_names_roles_and_duplicates(store: UserStore) -> None:
    store.add("carol", [("*", "auditor")], created_by="x", now=NOW)
    with pytest.raises(ConflictError, match="exists already"):
        store.add("carol", [("*", "auditor")], created_by="x", now=NOW)
    for name in ["Carol", "", "-carol", "a" * 65, "ca rol", "c..d", "carol\n"]:
        with pytest.raises(InputError, match="user name"):
            store.add(name, [("*", "auditor")], created_by="x", now=NOW)
    with pytest.raises(InputError, match="at least one role"):
        store.add("dave", [], created_by="x", now=NOW)
    with pytest.raises(InputError, match="unknown role"):
        store.add("dave", [("*", "reader")], created_by="x", now=NOW)  # type: ignore[list-item]
    with pytest.raises(InputError, match="namespace"):
        store.add("dave", [("Med", "consumer")], created_by="x", now=NOW)
    assert [u["name"] for u in store.list(now=NOW)] == ["carol"]


def test_every_failed_sign_in_gets_the_same_error(
    database: Database, hasher: CountingHasher, keys: LocalKeyring
) -> None:
    store = UserStore(database, hasher=hasher, keys=keys, max_failures_before_delay=10)
    secret, _ = enrol(store, "alice", now=NOW)
    store.add("pending", [("*", "admin")], created_by="x", now=NOW)
    begun = store.add("begun", [("*", "admin")], created_by="x", now=NOW)
    store.begin_enrolment(begun.code, PASSWORD, now=NOW)  # a password, but not active
    enrol(store, "disabled", now=NOW)
    with database.session() as s:
        s.execute(update(User).where(User.name == "disabled").values(status="disabled"))
    at = NOW + STEP
    good = totp_code(secret, at)
    cases = {
        "unknown user": ("nobody", PASSWORD, good),
        "wrong password": ("alice", PASSWORD + "!", good),
        "wrong code": ("alice", PASSWORD, "000000" if good != "000000" else "111111"),
        "wrong recovery code": ("alice", PASSWORD, "aaaa-aaaa-aaaa-aaaa"),
        "no code": ("alice", PASSWORD, ""),
        "pending user": ("pending", PASSWORD, good),
        "enrolment begun": ("begun", PASSWORD, good),
        "disabled user": ("disabled", PASSWORD, good),
        "malformed name": ("Robert'); DROP TABLE users;--", PASSWORD, good),
    }
    seen = {
        case: refusal(lambda args=args: store.login(*args, now=at)) for case, args in cases.items()
    }
    assert set(seen.values()) == {(AuthenticationError, LOGIN_REFUSED, "unauthenticated")}
    assert store.login("alice", PASSWORD, good, now=at).name == "alice"  # still works


def test_an_unknown_user_costs_a_dummy_argon2_verify(
    store: UserStore, hasher: CountingHasher
) -> None:
    enrol(store, "alice", now=NOW)
    hasher.verified.clear()
    hasher.argon2_runs = 0
    with pytest.raises(AuthenticationError):
        store.login("nobody", PASSWORD, "123456", now=NOW + STEP)
    assert hasher.verified == [None]
    assert hasher.argon2_runs == 1
    with pytest.raises(AuthenticationError):
        store.login("alice", "a wrong password", "123456", now=NOW + STEP)
    assert len(hasher.verified) == 2
    assert hasher.verified[1] is not None
    assert hasher.argon2_runs == 2


def attempt(store: UserStore, name: str, password: str, otp: str, at: datetime) -> str:
    try:
        store.login(name, password, otp, now=at)
    except RateLimitedError as exc:
        return f"wait {exc.retry_after}"
    except AuthenticationError:
        return "refused"
    return "ok"


@pytest.mark.parametrize("name", ["alice", "nobody"])
def test_failures_delay_more_and_more_then_lock_the_name(
    database: Database, hasher: CountingHasher, keys: LocalKeyring, name: str
) -> None:
    store = UserStore(
        database, hasher=hasher, keys=keys, lockout_after=7, max_delay=timedelta(seconds=4)
    )
    secret, _ = enrol(store, "alice", now=NOW)
    t = NOW + STEP
    wrong = [attempt(store, name, "wrong password!", "123456", t) for _ in range(3)]
    assert wrong == ["refused"] * 3
    outcomes = []
    for seconds in [0, 1, 1, 3, 3, 7, 7, 11]:  # delays of 1, 2, 4, then 4 (the cap) seconds
        outcomes.append(
            attempt(store, name, "wrong password!", "123456", t + timedelta(seconds=seconds))
        )
    assert outcomes == [
        "wait 1", "refused", "wait 2", "refused", "wait 4", "refused", "wait 4", "refused"
    ]  # fmt: skip
    # seven failures: locked for an hour, even with the right password and code
    locked_at = t + timedelta(seconds=11)
    later = locked_at + timedelta(minutes=5)
    assert attempt(store, name, PASSWORD, totp_code(secret, later), later) == "wait 3300"
    if name == "alice":
        assert store.list(now=later)[0]["locked"] is True
    hasher.verified.clear()
    attempt(store, name, PASSWORD, "123456", later)
    assert hasher.verified == []  # a throttled attempt checks no password
    after = locked_at + timedelta(hours=1)
    expected = "ok" if name == "alice" else "refused"
    assert attempt(store, name, PASSWORD, totp_code(secret, after), after) == expected


def test_unlock_clears_a_lock_out_and_success_resets_the_count(
    database: Database, hasher: CountingHasher, keys: LocalKeyring
) -> None:
    store = UserStore(database, hasher=hasher, keys=keys, max_failures_before_delay=3)
    secret, _ = enrol(store, "alice", now=NOW)
    t = NOW + STEP
    for _ in range(3):
        attempt(store, "alice", "wrong password!", "123456", t)
    assert attempt(store, "alice", "wrong password!", "123456", t) == "wait 1"
    assert store.list(now=t)[0]["locked"] is False  # delayed, not locked out
    assert store.unlock("alice", now=t) is False
    assert attempt(store, "alice", "wrong password!", "123456", t) == "refused"  # cleared
    assert attempt(store, "alice", "wrong password!", "123456", t) == "refused"
    assert attempt(store, "alice", PASSWORD, totp_code(secret, t), t) == "ok"
    for _ in range(3):  # the count starts from zero again after a success
        assert attempt(store, "alice", "wrong password!", "123456", t) == "refused"

    strict = UserStore(database, hasher=hasher, keys=keys, lockout_after=3)
    assert attempt(strict, "alice", PASSWORD, totp_code(secret, t), t) == "wait 1"
    later = t + timedelta(minutes=1)
    assert attempt(strict, "alice", "wrong password!", "123456", later) == "refused"
    assert strict.list(now=later)[0]["locked"] is True  # the fourth failure locks
    assert attempt(strict, "alice", PASSWORD, totp_code(secret, later), later) == "wait 3600"
    assert strict.unlock("alice", now=later) is True
    assert strict.list(now=later)[0]["locked"] is False
    assert attempt(strict, "alice", PASSWORD, totp_code(secret, later), later) == "ok"
    with pytest.raises(NotFoundError):
        strict.unlock("nobody", now=later)


def test_delays_fade_after_a_quiet_hour_and_purge_keeps_only_locks(
    database: Database, hasher: CountingHasher, keys: LocalKeyring
) -> None:
    store = UserStore(database, hasher=hasher, keys=keys, lockout_after=4)
    for name in ("faded", "locked"):
        assert [attempt(store, name, "wrong!", "1", NOW) for _ in range(4)] == [
            *["refused"] * 3,
            "wait 1",
        ]
    second = NOW + timedelta(seconds=1)
    assert attempt(store, "locked", "wrong!", "1", second) == "refused"  # the fourth: locked
    hour = NOW + timedelta(hours=1)
    assert attempt(store, "locked", "wrong!", "1", hour) == "wait 1"
    assert store.purge_throttle(now=hour) == 1  # "faded" had no failure for an hour
    again = [attempt(store, "faded", "wrong!", "1", hour) for _ in range(4)]
    assert again == [*["refused"] * 3, "wait 1"]  # counted from zero again
    later = hour + timedelta(seconds=1)
    assert attempt(store, "locked", "wrong!", "1", later) == "refused"
    assert attempt(store, "locked", "wrong!", "1", later) == "wait 3600"  # locks again at once
    with pytest.raises(InputError, match="lockout_after"):
        UserStore(database, hasher=hasher, keys=keys, max_failures_before_delay=5, lockout_after=4)
    with pytest.raises(InputError, match="issuer"):
        UserStore(database, hasher=hasher, keys=keys, issuer_name="Acme:Hub")


def test_step_up_checks_a_fresh_code_under_the_same_throttle(store: UserStore) -> None:
    secret, codes = enrol(store, "alice", now=NOW)
    t = NOW + STEP
    code = totp_code(secret, t)
    assert store.verify_mfa("alice", code, now=t) == "totp"
    replay = refusal(lambda: store.verify_mfa("alice", code, now=t))
    unknown = refusal(lambda: store.verify_mfa("nobody", code, now=t))
    assert replay == unknown == (AuthenticationError, LOGIN_REFUSED, "unauthenticated")
    assert store.verify_mfa("alice", codes[0], now=t) == "recovery"
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            store.verify_mfa("alice", "999999" if code != "999999" else "888888", now=t)
    with pytest.raises(RateLimitedError):  # the fourth failure in a row waits
        store.verify_mfa("alice", "999999", now=t)


def test_reset_clears_credentials_and_revokes_sessions(
    database: Database, store: UserStore
) -> None:
    secret, codes = enrol(store, "alice", now=NOW)
    t = NOW + STEP
    sessions = SessionStore(database)
    issued = sessions.open(
        store.login("alice", PASSWORD, totp_code(secret, t), now=t), now=t, source="test"
    )
    enrolment = store.reset("alice", created_by="key:admin", now=t)
    assert [u["status"] for u in store.list(now=t)] == ["pending"]
    with pytest.raises(AuthenticationError):
        sessions.authenticate(issued.token, now=t)
    later = t + STEP
    assert attempt(store, "alice", PASSWORD, codes[0], later) == "refused"
    with database.session() as s:
        assert s.scalars(select(RecoveryCode)).all() == []
    totp = store.begin_enrolment(enrolment.code, "a brand new passphrase", now=later)
    fresh = secret_of(totp.secret_base32)
    store.finish_enrolment(enrolment.code, totp_code(fresh, later), now=later)
    last = later + STEP
    assert attempt(store, "alice", "a brand new passphrase", totp_code(fresh, last), last) == "ok"


def test_roles_can_be_replaced_and_users_removed(store: UserStore) -> None:
    secret, _ = enrol(store, "alice", now=NOW)
    store.set_roles("alice", [("med", "deployer"), ("med", "deployer"), ("fin", "invoker")])
    user_id = store.list(now=NOW)[0]["id"]
    assert isinstance(user_id, int)
    assert store.roles_of(user_id) == (("med", "deployer"), ("fin", "invoker"))
    t = NOW + STEP
    assert store.login("alice", PASSWORD, totp_code(secret, t), now=t).roles == (
        ("med", "deployer"),
        ("fin", "invoker"),
    )
    store.remove("alice")
    assert store.list(now=t) == []
    assert store.roles_of(user_id) == ()
    with pytest.raises(NotFoundError):
        store.remove("alice")
    with pytest.raises(NotFoundError):
        store.set_roles("alice", [("*", "admin")])


def test_the_totp_secret_is_sealed_for_its_user_and_survives_kek_rotation(
    database: Database, store: UserStore, keys: LocalKeyring
) -> None:
    secret, _ = enrol(store, "alice", now=NOW)
    enrol(store, "bob", now=NOW)
    keys.rotate(now=NOW)
    t = NOW + STEP
    assert store.login("alice", PASSWORD, totp_code(secret, t), now=t).name == "alice"
    with database.session() as s:
        sealed = s.scalars(select(User.totp_secret).where(User.name == "alice")).one()
        s.execute(update(User).where(User.name == "bob").values(totp_secret=sealed))
    later = t + STEP
    with pytest.raises(IntegrityError, match="moved from another user"):
        store.login("bob", PASSWORD, totp_code(secret, later), now=later)


def test_the_password_hash_is_upgraded_at_sign_in(
    database: Database, store: UserStore, keys: LocalKeyring
) -> None:
    secret, _ = enrol(store, "alice", now=NOW)
    stronger = UserStore(database, hasher=CountingHasher(time_cost=2), keys=keys)
    t = NOW + STEP
    stronger.login("alice", PASSWORD, totp_code(secret, t), now=t)
    with database.session() as s:
        stored = s.scalars(select(User.password_hash)).one()
    assert stored is not None
    assert stored.startswith("$argon2id$v=19$m=1024,t=2,p=1$")


def test_no_secret_is_stored_listed_shown_or_told(
    database: Database, store: UserStore, tmp_path: Path
) -> None:
    enrolment = store.add("alice", [("*", "admin")], created_by="x", now=NOW)
    totp = store.begin_enrolment(enrolment.code, PASSWORD, now=NOW)
    secret = secret_of(totp.secret_base32)
    code = totp_code(secret, NOW)
    codes = store.finish_enrolment(enrolment.code, code, now=NOW)
    t = NOW + STEP
    login = store.login("alice", PASSWORD, totp_code(secret, t), now=t)
    errors = [
        refusal(lambda: store.login("alice", PASSWORD, code, now=t))[1],
        refusal(lambda: store.login("alice", PASSWORD + "x", codes[0], now=t))[1],
        refusal(lambda: store.begin_enrolment(enrolment.code, PASSWORD, now=t))[1],
    ]
    shown = " ".join([*errors, repr(enrolment), repr(totp), repr(login), repr(store)])
    shown += repr(store.list(now=t))
    assert all(code not in error for error in errors)
    secrets_ = [PASSWORD, enrolment.code, totp.secret_base32, totp.otpauth_uri, *codes]
    for value in secrets_:
        assert value not in shown
    with database.session() as s:
        row = s.scalars(select(User)).one()
        stored = " ".join(str(v) for v in vars(row).values())
    for value in secrets_:
        assert value not in stored
    assert secret.hex() not in stored
    if database.is_sqlite:
        raw = b"".join(p.read_bytes() for p in tmp_path.glob("hub.db*"))  # WAL included
        for value in secrets_:
            assert value.encode() not in raw
        assert secret not in raw


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> UserStore:
    folder = tmp_path_factory.mktemp("fuzzed")
    db = Database(sqlite_url(folder / "hub.db"))
    db.migrate()
    keys = LocalKeyring.create(folder / "keyring.json", now=NOW)
    store = UserStore(db, hasher=CountingHasher(), keys=keys)
    enrol(store, "alice", now=NOW)
    return store


@settings(max_examples=60, deadline=None)
@given(
    name=st.one_of(st.just("alice"), st.text(max_size=70)),
    password=st.one_of(st.just(PASSWORD), st.text(max_size=70)),
    otp=st.text(max_size=30),
    code=st.one_of(st.text(max_size=50), st.from_regex(r"ben_[A-Za-z0-9_-]{32}", fullmatch=True)),
)
def test_arbitrary_input_gets_only_bastion_errors(
    fuzzed: UserStore, name: str, password: str, otp: str, code: str
) -> None:
    at = NOW + STEP
    with pytest.raises(BastionError):  # nothing made up signs in
        fuzzed.login(name, password, otp, now=at)
    with pytest.raises(BastionError):
        fuzzed.verify_mfa(name, otp, now=at)
    with pytest.raises(BastionError):
        fuzzed.begin_enrolment(code, password, now=at)
    with pytest.raises(BastionError):
        fuzzed.finish_enrolment(code, otp, now=at)
    try:
        enrolment = fuzzed.add(name, [("*", "consumer")], created_by="fuzz", now=at)
    except (InputError, ConflictError):
        return
    assert enrolment.name == name
    fuzzed.remove(name)
