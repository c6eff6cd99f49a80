"""The hub's access settings: one TOML file (``bastion serve --access-config FILE``).

::

    cors_origins = ["https://console.example.org"]   # browsers allowed to call the API

    [sessions]
    idle_minutes = 30          # a session unused this long ends
    lifetime_hours = 8         # and every session ends this long after sign-in

    [rate_limits]              # see docs/access.md
    anonymous = "60/minute"

    [[oidc]]                   # one table per trusted OpenID Connect issuer
    issuer = "https://login.example.org/realms/ml"
    audience = "bastion"

    [mtls]
    client_ca = "clients-ca.pem"     # verify client certificates against this CA
    clients = "clients.toml"         # certificates mapped to service accounts

Relative paths are taken from the file's folder. Unknown keys are refused.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion._files import read_input
from bastion.auth import OidcIssuer
from bastion.auth._ratelimit import RateLimits
from bastion.errors import InputError

if TYPE_CHECKING:
    from bastion.auth._mtls import ClientCertificates

__all__ = ["AccessConfig"]

_MAX_FILE = 1 << 20
_KEYS = {"cors_origins", "sessions", "rate_limits", "oidc", "mtls"}


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputError(f"access config: {where} must be a table")
    return value


def _minutes(table: Mapping[str, Any], key: str, default: float, top: float) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= top:
        raise InputError(f"access config: sessions.{key} must be a number from 0 to {top}")
    return float(value)


@dataclass(frozen=True, slots=True)
class AccessConfig:
    limits: RateLimits = field(default_factory=lambda: RateLimits.from_dict({}))
    issuers: tuple[OidcIssuer, ...] = ()
    client_ca: Path | None = None
    clients: ClientCertificates | None = None
    cors_origins: tuple[str, ...] = ()
    session_idle: timedelta = timedelta(minutes=30)
    session_lifetime: timedelta = timedelta(hours=8)

    @classmethod
    def load(cls, path: Path | None) -> AccessConfig:
        """The settings in ``path``; the defaults when None."""
        if path is None:
            return cls()
        text = read_input(path, "access config", limit=_MAX_FILE).decode("utf-8", "replace")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"access config {path} is not valid TOML: {exc}") from exc
        return cls.from_dict(data, base=path.parent)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base: Path) -> AccessConfig:
        unknown = sorted(str(k) for k in data if k not in _KEYS)
        if unknown:
            raise InputError(f"access config: unknown keys {unknown}; use {sorted(_KEYS)}")
        origins = data.get("cors_origins", [])
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise InputError("access config: cors_origins must be a list of origins")
        sessions = _table(data.get("sessions", {}), "[sessions]")
        extra = sorted(str(k) for k in sessions if k not in ("idle_minutes", "lifetime_hours"))
        if extra:
            raise InputError(f"access config: unknown keys {extra} in [sessions]")
        issuers = data.get("oidc", [])
        if not isinstance(issuers, list):
            raise InputError("access config: write each OIDC issuer as an [[oidc]] table")
        client_ca, clients = cls._mtls(_table(data.get("mtls", {}), "[mtls]"), base)
        return cls(
            limits=RateLimits.from_dict(_table(data.get("rate_limits", {}), "[rate_limits]")),
            issuers=tuple(OidcIssuer.from_dict(_table(i, "[[oidc]]")) for i in issuers),
            client_ca=client_ca,
            clients=clients,
            cors_origins=tuple(origins),
            session_idle=timedelta(minutes=_minutes(sessions, "idle_minutes", 30, 24 * 60)),
            session_lifetime=timedelta(hours=_minutes(sessions, "lifetime_hours", 8, 24 * 7)),
        )

    @staticmethod
    def _mtls(
        table: Mapping[str, Any], base: Path
    ) -> tuple[Path | None, ClientCertificates | None]:
        extra = sorted(str(k) for k in table if k not in ("client_ca", "clients"))
        if extra:
            raise InputError(f"access config: unknown keys {extra} in [mtls]")
        ca, clients = table.get("client_ca"), table.get("clients")
        if ca is None and clients is None:
            return None, None
        if not isinstance(ca, str) or (clients is not None and not isinstance(clients, str)):
            raise InputError("access config: [mtls] needs client_ca (and clients) as file paths")
        ca_path = base / ca
        read_input(ca_path, "client CA certificate", limit=_MAX_FILE)
        if clients is None:
            return ca_path, None
        from bastion.auth._mtls import ClientCertificates

        text = read_input(base / clients, "mTLS clients", limit=_MAX_FILE)
        return ca_path, ClientCertificates.from_toml(text.decode("utf-8", "replace"))
