"""The login file since people sign in: ``user`` and ``kind`` beside url, token and CA.

Version 1 files written before those keys existed still read; the file is local but may
be damaged or hand-edited, so any content reads as a login or fails with a Bastion error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.client import Login, login_path, resolve_login, save_login
from bastion.client._login import forget_saved_token, saved_login
from bastion.errors import InputError, UsageError


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for name in ("BASTION_URL", "BASTION_TOKEN", "BASTION_CA"):
        monkeypatch.delenv(name, raising=False)


def _write(document: object) -> Path:
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document))
    path.chmod(0o600)
    return path


def test_a_session_login_keeps_its_user_and_kind() -> None:
    path = save_login(Login("https://hub", "bss_x", "/ca.crt", user="alice", kind="session"))
    assert json.loads(path.read_text()) == {
        "version": 1,
        "url": "https://hub",
        "token": "bss_x",
        "ca": "/ca.crt",
        "user": "alice",
        "kind": "session",
    }
    assert resolve_login() == Login("https://hub", "bss_x", "/ca.crt", "alice", "session")
    assert saved_login() == resolve_login()


def test_a_version_1_file_from_before_people_still_reads() -> None:
    _write({"version": 1, "url": "https://hub", "token": "bst_old", "ca": None})
    assert resolve_login() == Login("https://hub", "bst_old", None, None, None)


def test_a_kind_from_a_newer_bastion_is_ignored_but_the_token_still_works() -> None:
    _write({"version": 1, "url": "https://hub", "token": "t", "kind": "passkey", "user": "al"})
    assert resolve_login() == Login("https://hub", "t", None, "al", None)


def test_a_token_from_the_environment_is_nobody_the_file_knows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    save_login(Login("https://hub", "bss_saved", None, user="alice", kind="session"))
    monkeypatch.setenv("BASTION_TOKEN", "bst_env")
    assert resolve_login() == Login("https://hub", "bst_env", None)


def test_forgetting_the_token_keeps_the_hub_and_its_ca() -> None:
    assert forget_saved_token() is None  # nothing saved: nothing to forget
    save_login(Login("https://hub", "bss_x", "/ca.crt", user="alice", kind="session"))
    before = forget_saved_token()
    assert before == Login("https://hub", "bss_x", "/ca.crt", "alice", "session")
    assert saved_login() == Login("https://hub", None, "/ca.crt")
    assert "bss_x" not in login_path().read_text()
    assert resolve_login().token is None


def test_the_token_never_shows_in_a_repr() -> None:
    shown = repr(Login("https://hub", "bss_secret", None, "alice", "session"))
    assert "bss_secret" not in shown
    assert "alice" in shown


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_FIELDS = st.fixed_dictionaries(
    {"version": st.sampled_from([1, 2, "1", None])},
    optional={
        "url": st.sampled_from(["https://hub", "http://127.0.0.1:8080/", "ftp://hub"]) | _JSON,
        "kind": st.sampled_from(["api_key", "session", "passkey"]) | _JSON,
        **dict.fromkeys(("token", "ca", "user"), _JSON),
    },
)


@settings(max_examples=150, deadline=None)
@given(content=st.one_of(st.binary(max_size=200), _JSON.map(json.dumps), _FIELDS.map(json.dumps)))
def test_any_login_file_reads_as_a_login_or_a_clear_error(content: str | bytes) -> None:
    path = login_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(content if isinstance(content, bytes) else content.encode())
    try:
        login = resolve_login()
    except (InputError, UsageError) as exc:
        assert exc.message  # noqa: PT017 (the message is what a person reads)
    else:
        assert login.url.startswith(("https://", "http://"))
        assert login.kind in (None, "api_key", "session")


def test_the_sdk_keeps_no_cookie_the_hub_sets() -> None:
    import httpx

    from bastion.client import Client

    seen: list[str | None] = []

    def hub(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("cookie"))
        body = {"user": "erin", "token": "bss_x", "csrf_token": "c"}
        return httpx.Response(201, json=body, headers={"set-cookie": "bastion-session=s; Path=/"})

    with Client("http://127.0.0.1:8443", transport=httpx.MockTransport(hub)) as client:
        client.sign_in("erin", "a password", "123456")
        client.sign_in("erin", "a password", "123456")
    assert seen == [None, None]
