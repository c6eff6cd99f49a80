"""TOTP (RFC 6238): the RFC's test vectors, the drift window, replay refusal, otpauth URIs."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.auth import _totp
from bastion.auth._totp import (
    TotpAlgorithm,
    base32_secret,
    new_totp_secret,
    otpauth_uri,
    time_step,
    totp_code,
    verify_totp,
)
from bastion.errors import InputError, UsageError

# RFC 6238 Appendix B: the seeds are the ASCII digits repeated to the hash's length.
SEEDS: dict[TotpAlgorithm, bytes] = {
    "SHA1": b"12345678901234567890",
    "SHA256": b"12345678901234567890123456789012",
    "SHA512": b"1234567890123456789012345678901234567890123456789012345678901234",
}
RFC_VECTORS: list[tuple[int, str, TotpAlgorithm]] = [
    (59, "94287082", "SHA1"),
    (59, "46119246", "SHA256"),
    (59, "90693936", "SHA512"),
    (1111111109, "07081804", "SHA1"),
    (1111111109, "68084774", "SHA256"),
    (1111111109, "25091201", "SHA512"),
    (1111111111, "14050471", "SHA1"),
    (1111111111, "67062674", "SHA256"),
    (1111111111, "99943326", "SHA512"),
    (1234567890, "89005924", "SHA1"),
    (1234567890, "91819424", "SHA256"),
    (1234567890, "93441116", "SHA512"),
    (2000000000, "69279037", "SHA1"),
    (2000000000, "90698825", "SHA256"),
    (2000000000, "38618901", "SHA512"),
    (20000000000, "65353130", "SHA1"),
    (20000000000, "77737706", "SHA256"),
    (20000000000, "47863826", "SHA512"),
]
SECRET = SEEDS["SHA1"]
NOW = datetime(2026, 11, 22, 12, 0, 10, tzinfo=UTC)


@pytest.mark.parametrize(("unix", "expected", "algorithm"), RFC_VECTORS)
def test_the_rfc_6238_test_vectors(unix: int, expected: str, algorithm: TotpAlgorithm) -> None:
    seed = SEEDS[algorithm]
    assert totp_code(seed, unix, digits=8, algorithm=algorithm) == expected
    at = datetime.fromtimestamp(unix, UTC)
    assert totp_code(seed, at, digits=8, algorithm=algorithm) == expected
    step = time_step(unix)
    assert verify_totp(seed, expected, now=unix, last_step=None, digits=8, algorithm=algorithm) == (
        step
    )


def test_six_digit_codes_are_the_last_six_digits_of_the_eight() -> None:
    assert totp_code(SECRET, 59) == "287082"
    assert totp_code(SECRET, 1111111109) == "081804"  # leading zeros kept


def test_a_code_is_accepted_one_step_either_side_and_no_further() -> None:
    step = time_step(NOW)
    for offset in (-1, 0, 1):
        code = totp_code(SECRET, NOW + timedelta(seconds=30 * offset))
        assert verify_totp(SECRET, code, now=NOW, last_step=None) == step + offset
    for offset in (-2, 2):
        code = totp_code(SECRET, NOW + timedelta(seconds=30 * offset))
        assert verify_totp(SECRET, code, now=NOW, last_step=None) is None
    late = totp_code(SECRET, NOW - timedelta(seconds=60))
    assert verify_totp(SECRET, late, now=NOW, last_step=None, window=2) == step - 2


def test_a_code_is_never_accepted_twice() -> None:
    code = totp_code(SECRET, NOW)
    step = verify_totp(SECRET, code, now=NOW, last_step=None)
    assert step is not None
    assert verify_totp(SECRET, code, now=NOW, last_step=step) is None
    assert verify_totp(SECRET, code, now=NOW + timedelta(seconds=25), last_step=step) is None
    # an earlier step than the last one accepted is refused too
    earlier = totp_code(SECRET, NOW - timedelta(seconds=30))
    assert verify_totp(SECRET, earlier, now=NOW, last_step=step) is None
    later = totp_code(SECRET, NOW + timedelta(seconds=30))
    assert verify_totp(SECRET, later, now=NOW, last_step=step) == step + 1


@pytest.mark.parametrize(
    "code",
    [
        "",
        "12345",
        "1234567",
        "12345a",
        " 123456",
        "123456 ",
        "123456\n",
        "١٢٣٤٥٦",
        "\uff11\uff12\uff13\uff14\uff15\uff16",
    ],
)
def test_codes_that_are_not_six_ascii_digits_are_refused_without_computing(
    code: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    computed: list[int] = []
    real = _totp._hotp

    def counting(secret: bytes, counter: int, digits: int, algorithm: str) -> str:
        computed.append(counter)
        return real(secret, counter, digits, algorithm)

    monkeypatch.setattr(_totp, "_hotp", counting)
    assert verify_totp(SECRET, code, now=NOW, last_step=None) is None
    assert computed == []
    assert verify_totp(SECRET, "000000", now=NOW, last_step=None) in (None, time_step(NOW))
    assert len(computed) == 3  # a well-formed code is checked against every step of the window


@given(code=st.text(max_size=20))
def test_any_string_as_a_code_is_refused_or_names_a_step(code: str) -> None:
    step = verify_totp(SECRET, code, now=NOW, last_step=None)
    if step is not None:
        assert code == totp_code(SECRET, step * 30)


@given(unix=st.integers(min_value=0, max_value=2**40))
def test_codes_always_have_six_ascii_digits(unix: int) -> None:
    code = totp_code(SECRET, unix)
    assert len(code) == 6
    assert code.isascii()
    assert code.isdigit()


def test_new_secrets_are_160_random_bits() -> None:
    secrets = {new_totp_secret() for _ in range(20)}
    assert len(secrets) == 20
    assert all(len(s) == 20 for s in secrets)


def test_the_otpauth_uri_names_the_issuer_account_and_parameters() -> None:
    uri = otpauth_uri(SECRET, account="alice", issuer="Bastion")
    assert uri == (
        "otpauth://totp/Bastion:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        "&issuer=Bastion&algorithm=SHA1&digits=6&period=30"
    )


def test_the_otpauth_uri_is_url_quoted_and_round_trips() -> None:
    secret = new_totp_secret()
    uri = otpauth_uri(secret, account="bob.smith", issuer="Acme Hub & Co")
    parts = urlsplit(uri)
    assert parts.scheme == "otpauth"
    assert parts.netloc == "totp"
    assert " " not in uri
    assert unquote(parts.path) == "/Acme Hub & Co:bob.smith"
    query = parse_qs(parts.query)
    assert query["issuer"] == ["Acme Hub & Co"]
    assert query["algorithm"] == ["SHA1"]
    encoded = query["secret"][0]
    assert "=" not in encoded
    assert encoded == base32_secret(secret)
    assert base64.b32decode(encoded + "=" * (-len(encoded) % 8)) == secret


@pytest.mark.parametrize(
    ("account", "issuer"), [("a:b", "Bastion"), ("alice", "Bas:tion"), ("", "B"), ("a", "\x00")]
)
def test_the_otpauth_uri_refuses_colons_and_empty_or_odd_labels(account: str, issuer: str) -> None:
    with pytest.raises(InputError):
        otpauth_uri(SECRET, account=account, issuer=issuer)


def test_bad_parameters_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="timezone-aware"):
        totp_code(SECRET, datetime(2026, 1, 1))  # naive: the point of the test
    with pytest.raises(UsageError, match="secret"):
        totp_code(b"short", 59)
    with pytest.raises(UsageError, match="digits"):
        totp_code(SECRET, 59, digits=4)
    with pytest.raises(UsageError, match="algorithm"):
        totp_code(SECRET, 59, algorithm="MD5")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="epoch"):
        totp_code(SECRET, -1)
    with pytest.raises(UsageError, match="window"):
        verify_totp(SECRET, "123456", now=NOW, last_step=None, window=-1)
