"""Where the SDK finds the hub and its credential: arguments, then ``BASTION_URL`` /
``BASTION_TOKEN`` / ``BASTION_CA``, then the file ``bastion login`` writes
(``$XDG_CONFIG_HOME/bastion/login.json``, mode 0600).

The file is version 1: ``url``, ``token``, ``ca``, and since people sign in too, ``user``
(who the token belongs to) and ``kind`` (``"api_key"`` or ``"session"``). Files written
before those two keys existed read as before, with both unknown.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from bastion._files import read_input
from bastion.errors import InputError, UsageError

__all__ = [
    "Login",
    "LoginKind",
    "config_dir",
    "forget_saved_token",
    "login_path",
    "resolve_login",
    "save_login",
    "saved_login",
]

_MAX_LOGIN_FILE = 64 << 10
_VERSION = 1
_KINDS = ("api_key", "session")

#: What the saved token is: an API key (``bst_...``) or a person's session (``bss_...``).
LoginKind = Literal["api_key", "session"]


@dataclass(frozen=True, slots=True)
class Login:
    """A hub, the credential to send it, and the CA its TLS certificate chains to."""

    url: str
    token: str | None
    ca: str | None
    user: str | None = None
    kind: LoginKind | None = None

    def __repr__(self) -> str:  # never show the token
        return (
            f"Login(url={self.url!r}, token={'<set>' if self.token else None}, ca={self.ca!r}, "
            f"user={self.user!r}, kind={self.kind!r})"
        )


def config_dir() -> Path:
    """Where the client keeps its state: ``$XDG_CONFIG_HOME/bastion`` (``~/.config/bastion``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bastion"


def login_path() -> Path:
    return config_dir() / "login.json"


def save_login(login: Login) -> Path:
    """Write ``login`` to the login file (mode 0600, replaced atomically); its path."""
    path = login_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    document: dict[str, Any] = {
        "version": _VERSION,
        "url": login.url,
        "token": login.token,
        "ca": login.ca,
        "user": login.user,
        "kind": login.kind,
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(document, f)
    os.replace(tmp, path)
    return path


def _saved() -> dict[str, str]:
    path = login_path()
    if not path.exists():
        return {}
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise InputError(f"{path} is readable by others; run: chmod 600 {path}")
    try:
        body = json.loads(read_input(path, "login file", limit=_MAX_LOGIN_FILE))
    except (ValueError, RecursionError) as exc:
        raise InputError(f"{path} is not valid JSON; run bastion login again") from exc
    if not isinstance(body, dict) or body.get("version") != _VERSION:
        raise InputError(f"{path} is not a Bastion login file; run bastion login again")
    fields = ("url", "token", "ca", "user", "kind")
    saved = {k: v for k, v in body.items() if k in fields and isinstance(v, str)}
    if saved.get("kind") not in (None, *_KINDS):
        del saved["kind"]  # written by a newer Bastion: the token still works
    return saved


def _kind(value: str | None) -> LoginKind | None:
    return "api_key" if value == "api_key" else "session" if value == "session" else None


def saved_login() -> Login | None:
    """What ``bastion login`` saved, ignoring the environment; None if nothing was saved."""
    saved = _saved()
    url = saved.get("url")
    if not url:
        return None
    return Login(
        url, saved.get("token"), saved.get("ca"), saved.get("user"), _kind(saved.get("kind"))
    )


def forget_saved_token() -> Login | None:
    """Drop the credential from the login file, keeping the hub and its CA; what was saved."""
    saved = saved_login()
    if saved is not None and saved.token is not None:
        save_login(replace(saved, token=None, user=None, kind=None))
    return saved


def resolve_login(url: str | None = None, token: str | None = None, ca: str | None = None) -> Login:
    saved: dict[str, str] = {}
    if url is None and "BASTION_URL" not in os.environ:
        saved = _saved()
    url = url or os.environ.get("BASTION_URL") or saved.get("url")
    if not url:
        raise UsageError("which hub? run bastion login URL, or set BASTION_URL")
    if not url.startswith(("https://", "http://")):
        raise UsageError(f"the hub URL {url!r} must start with https:// (or http:// on loopback)")
    ca = ca or os.environ.get("BASTION_CA") or saved.get("ca")
    # A key pasted or read with its line break (a file saved on Windows) is still the key.
    token = (token or os.environ.get("BASTION_TOKEN") or "").strip()
    if token:
        return Login(url.rstrip("/"), token, ca)
    token = saved.get("token")
    user = saved.get("user") if token else None
    kind = _kind(saved.get("kind")) if token else None
    return Login(url.rstrip("/"), token, ca, user, kind)
