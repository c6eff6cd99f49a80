"""Passwords: argon2id PHC hashes, a dummy verify for unknown users, the password rules."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.auth._passwords import (
    MAX_PASSWORD_BYTES,
    MIN_PASSWORD_CHARS,
    PasswordHasher,
    check_password_policy,
)
from bastion.errors import InputError

PASSWORD = "correct horse battery staple"


class CountingHasher(PasswordHasher):
    """Records every argon2 verification it runs (which stored hash), not the passwords."""

    def __init__(self, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self.checked: list[str] = []

    def _check(self, stored: str, encoded: bytes) -> bool:
        self.checked.append(stored)
        return super()._check(stored, encoded)


@pytest.fixture(scope="module")
def hasher() -> CountingHasher:
    return CountingHasher(time_cost=1, memory_cost_kib=1024)


def test_a_hash_is_an_argon2id_phc_string_with_the_parameters(hasher: PasswordHasher) -> None:
    stored = hasher.hash(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    assert PASSWORD not in stored
    assert hasher.hash(PASSWORD) != stored  # a fresh salt each time


def test_the_defaults_are_rfc_9106_second_option() -> None:
    stored = PasswordHasher().hash(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=65536,t=3,p=1$")


def test_verify_accepts_the_password_and_nothing_else(hasher: PasswordHasher) -> None:
    stored = hasher.hash(PASSWORD)
    assert hasher.verify(stored, PASSWORD)
    assert not hasher.verify(stored, PASSWORD + " ")
    assert not hasher.verify(stored, PASSWORD.upper())
    assert not hasher.verify(stored, "")


def test_an_unknown_user_costs_one_argon2_verify_against_the_dummy(
    hasher: CountingHasher,
) -> None:
    hasher.checked.clear()
    assert not hasher.verify(None, PASSWORD)
    assert hasher.checked == [hasher.dummy_hash]
    assert hasher.dummy_hash.startswith("$argon2id$v=19$m=1024,t=1,p=1$")
    stored = hasher.hash(PASSWORD)
    hasher.checked.clear()
    assert not hasher.verify(stored, "wrong password here")
    assert hasher.checked == [stored]


def test_damaged_hashes_and_oversized_passwords_are_mismatches(hasher: CountingHasher) -> None:
    assert not hasher.verify("$argon2id$v=19$m=1024,t=1,p=1$bm9wZQ$bm9wZQ", PASSWORD)
    assert not hasher.verify("not a hash", PASSWORD)
    assert not hasher.verify("", PASSWORD)
    hasher.checked.clear()
    huge = "x" * (MAX_PASSWORD_BYTES + 1)
    assert not hasher.verify(hasher.hash(PASSWORD), huge)
    assert hasher.checked == [hasher.dummy_hash]  # still one argon2 run: same cost


def test_passwords_are_compared_in_unicode_nfkc_form(hasher: PasswordHasher) -> None:
    stored = hasher.hash(
        "\uff43\uff4f\uff52\uff52\uff45\uff43\uff54 \uff48\uff4f\uff52\uff53\uff45"
    )  # full-width
    assert hasher.verify(stored, "correct horse")
    composed = hasher.hash("caf\u00e9 au lait, s'il vous pla\u00eet")
    assert hasher.verify(composed, "cafe\u0301 au lait, s'il vous plai\u0302t")


def test_needs_rehash_when_the_parameters_change(hasher: PasswordHasher) -> None:
    stored = hasher.hash(PASSWORD)
    assert not hasher.needs_rehash(stored)
    stronger = PasswordHasher(time_cost=2, memory_cost_kib=1024)
    assert stronger.needs_rehash(stored)
    assert stronger.verify(stored, PASSWORD)  # old hashes still verify
    assert hasher.needs_rehash("garbage")


def test_unusable_argon2_settings_are_refused() -> None:
    with pytest.raises(InputError, match="argon2id needs"):
        PasswordHasher(time_cost=0)
    with pytest.raises(InputError, match="argon2id needs"):
        PasswordHasher(memory_cost_kib=4)


def test_the_repr_names_parameters_only(hasher: PasswordHasher) -> None:
    assert repr(hasher) == "PasswordHasher(time_cost=1, memory_cost_kib=1024, parallelism=1)"
    assert hasher.dummy_hash not in repr(hasher)


@pytest.mark.parametrize(
    ("password", "rule"),
    [
        ("short pass", "too short"),
        ("\uff41\uff42\uff43" * 3, "too short"),  # full-width: "abcabcabc"
        ("x" * (MAX_PASSWORD_BYTES + 1), "too long"),
        ("é" * (MAX_PASSWORD_BYTES // 2 + 1), "too long"),  # 2 bytes each in UTF-8
        ("aaaaaaaaaaaaaaaa", "repeats one character"),
        ("my name is Alice.Smith!", "contains the user name"),
        ("x-alice.smith-x-secure", "contains the user name"),
        ("lone \ud800 surrogate here", "not valid text"),
    ],
)
def test_the_password_rules(password: str, rule: str) -> None:
    with pytest.raises(InputError, match=rule) as caught:
        check_password_policy(password, user="alice.smith")
    assert password not in str(caught.value)
    assert password not in repr(caught.value)


def test_a_good_password_passes() -> None:
    check_password_policy("correct horse battery staple", user="alice")
    check_password_policy("x" * 11 + "y", user="alice")
    check_password_policy("max and moritz are here", user="ma")  # short names: not looked for


CHEAPEST = PasswordHasher(time_cost=1, memory_cost_kib=64)


@settings(max_examples=60, deadline=None)
@given(password=st.text(max_size=40), stored=st.none() | st.text(max_size=120))
def test_arbitrary_passwords_and_stored_values_never_crash(
    password: str, stored: str | None
) -> None:
    assert CHEAPEST.verify(stored, password) is False
    message = ""
    try:
        check_password_policy(password, user="alice")
    except InputError as exc:
        message = str(exc)
    assert len(password) < MIN_PASSWORD_CHARS or password not in message
    with contextlib.suppress(InputError):  # unusable text is refused, never crashes
        assert CHEAPEST.verify(CHEAPEST.hash(password), password)
