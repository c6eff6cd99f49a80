"""The server's settings: command-line flags first, then ``BASTION_*`` environment variables.

* ``BASTION_DATA_DIR``: where the hub keeps its database, blobs, keys and TLS material.
* ``BASTION_DATABASE_URL``: ``postgresql+psycopg://...`` instead of the embedded SQLite file.
* ``BASTION_MAX_VERSION_BYTES``: the largest version accepted (default 64 GiB).
* ``BASTION_ACCESS_CONFIG``: the access settings file (rate limits, OIDC issuers, mutual
  TLS, sessions, CORS; ``docs/access.md``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from bastion._net import is_loopback
from bastion.errors import UsageError

__all__ = ["ServerSettings"]


@dataclass(frozen=True, slots=True)
class ServerSettings:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 8443
    database_url: str | None = None
    admin_token_file: Path | None = None
    insecure_http: bool = False
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_version_bytes: int = 64 << 30
    checkpoint_every: int = 1000
    checkpoint_seconds: float = 60.0
    access_config: Path | None = None

    def __post_init__(self) -> None:
        if self.insecure_http and not is_loopback(self.host):
            raise UsageError(
                "--insecure-http is only for loopback development; bind 127.0.0.1 or use TLS"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise UsageError("give both --tls-cert and --tls-key, or neither")
        if not 0 < self.port < 65536:
            raise UsageError(f"port {self.port} is not between 1 and 65535")

    @classmethod
    def from_env(cls, **overrides: object) -> ServerSettings:
        values: dict[str, object] = {}
        if "BASTION_DATA_DIR" in os.environ:
            values["data_dir"] = Path(os.environ["BASTION_DATA_DIR"])
        if "BASTION_DATABASE_URL" in os.environ:
            values["database_url"] = os.environ["BASTION_DATABASE_URL"]
        if "BASTION_MAX_VERSION_BYTES" in os.environ:
            raw = os.environ["BASTION_MAX_VERSION_BYTES"]
            if not raw.isdigit():
                raise UsageError("BASTION_MAX_VERSION_BYTES must be a whole number of bytes")
            values["max_version_bytes"] = int(raw)
        if "BASTION_ACCESS_CONFIG" in os.environ:
            values["access_config"] = Path(os.environ["BASTION_ACCESS_CONFIG"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        values.setdefault("data_dir", Path(".bastion"))
        return cls(**values)  # type: ignore[arg-type]

    @property
    def scheme(self) -> str:
        return "http" if self.insecure_http else "https"
