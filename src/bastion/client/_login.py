"""Where the SDK finds the hub and its key: arguments, then ``BASTION_URL`` / ``BASTION_TOKEN``
/ ``BASTION_CA``, then the file ``bastion login`` writes (``$XDG_CONFIG_HOME/bastion/login.json``,
mode 0600)."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from bastion._files import read_input
from bastion.errors import InputError, UsageError

__all__ = ["Login", "config_dir", "login_path", "resolve_login", "save_login"]

_MAX_LOGIN_FILE = 64 << 10


@dataclass(frozen=True, slots=True)
class Login:
    url: str
    token: str | None
    ca: str | None

    def __repr__(self) -> str:  # never show the token
        return f"Login(url={self.url!r}, token={'<set>' if self.token else None}, ca={self.ca!r})"


def config_dir() -> Path:
    """Where the client keeps its state: ``$XDG_CONFIG_HOME/bastion`` (``~/.config/bastion``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "bastion"


def login_path() -> Path:
    return config_dir() / "login.json"


def save_login(login: Login) -> Path:
    path = login_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"version": 1, "url": login.url, "token": login.token, "ca": login.ca}, f)
    os.replace(tmp, path)
    return path


def _saved() -> dict[str, str | None]:
    path = login_path()
    if not path.exists():
        return {}
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise InputError(f"{path} is readable by others; run: chmod 600 {path}")
    try:
        body = json.loads(read_input(path, "login file", limit=_MAX_LOGIN_FILE))
    except ValueError as exc:
        raise InputError(f"{path} is not valid JSON; run bastion login again") from exc
    if not isinstance(body, dict) or body.get("version") != 1:
        raise InputError(f"{path} is not a Bastion login file; run bastion login again")
    return {k: v for k, v in body.items() if k in ("url", "token", "ca") and isinstance(v, str)}


def resolve_login(url: str | None = None, token: str | None = None, ca: str | None = None) -> Login:
    saved: dict[str, str | None] = {}
    if url is None and "BASTION_URL" not in os.environ:
        saved = _saved()
    url = url or os.environ.get("BASTION_URL") or saved.get("url")
    if not url:
        raise UsageError("which hub? run bastion login URL, or set BASTION_URL")
    if not url.startswith(("https://", "http://")):
        raise UsageError(f"the hub URL {url!r} must start with https:// (or http:// on loopback)")
    token = token or os.environ.get("BASTION_TOKEN") or saved.get("token")
    ca = ca or os.environ.get("BASTION_CA") or saved.get("ca")
    return Login(url.rstrip("/"), token, ca)
