"""Where the SDK finds its hub: arguments, environment, then the login file (mode 0600)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from bastion.client import Login, login_path, resolve_login, save_login
from bastion.client._http import HubSession
from bastion.errors import InputError, UsageError


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("BASTION_URL", "BASTION_TOKEN", "BASTION_CA"):
        monkeypatch.delenv(name, raising=False)


def test_the_login_file_is_private_and_read_back() -> None:
    path = save_login(Login("https://hub:8443", "bst_x", "/ca.crt"))
    assert path == login_path()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_login() == Login("https://hub:8443", "bst_x", "/ca.crt")


def test_the_environment_wins_over_the_file(monkeypatch: pytest.MonkeyPatch) -> None:
    save_login(Login("https://saved", "bst_saved", None))
    monkeypatch.setenv("BASTION_URL", "https://env/")
    monkeypatch.setenv("BASTION_TOKEN", "bst_env")
    assert resolve_login() == Login("https://env", "bst_env", None)
    assert resolve_login("https://arg", token="bst_arg").token == "bst_arg"


def test_missing_or_bad_settings_are_clear_errors() -> None:
    with pytest.raises(UsageError, match="which hub"):
        resolve_login()
    with pytest.raises(UsageError, match="must start with https"):
        resolve_login("ftp://hub")
    path = save_login(Login("https://hub", "t", None))
    path.chmod(0o644)
    with pytest.raises(InputError, match="chmod 600"):
        resolve_login()
    path.chmod(0o600)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        resolve_login()


def test_the_token_never_shows_in_a_repr() -> None:
    assert "bst_secret" not in repr(Login("https://hub", "bst_secret", None))


def test_a_key_read_with_its_line_break_is_still_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BASTION_URL", "https://hub")
    monkeypatch.setenv("BASTION_TOKEN", "bst_env\r\n")  # a token file saved on Windows
    assert resolve_login().token == "bst_env"
    assert resolve_login(token=" bst_arg\n").token == "bst_arg"


@pytest.mark.parametrize("token", ["bst_a b", "bst_a\x00", "bst_\u00e9t\u00e9", "bst_a\tb"])
def test_a_credential_that_cannot_be_sent_is_refused_without_showing_it(token: str) -> None:
    # It once reached httpx, whose error quoted the whole header, secret and all.
    with pytest.raises(InputError, match="cannot be sent") as raised:
        HubSession(Login("https://hub", token, None))
    assert token not in raised.value.message
    assert "bst_" not in raised.value.message
