"""Starting the hub: open the data folder, recover, bootstrap an admin, serve over TLS.

The data folder holds everything: ``hub.sqlite`` (unless a PostgreSQL URL is
configured), ``store/`` (encrypted blobs), ``staging/`` (the scan's plaintext,
emptied at start), ``keyring.json`` (key-encryption keys, mode 0600),
``audit-key.pem`` (the audit checkpoint signing key, 0600) and ``tls/``.
"""

from __future__ import annotations

import logging
import os
import ssl
import sys
from pathlib import Path
from typing import Any

from bastion.api._app import create_app
from bastion.api._services import Services
from bastion.api._settings import ServerSettings
from bastion.audit import AuditLog
from bastion.auth import ApiKeyStore
from bastion.crypto import LocalKeyring
from bastion.db import Database, sqlite_url
from bastion.errors import KeyringError
from bastion.registry import Catalog, Hub, HubLimits, LocalBlobStore, Publisher

__all__ = ["bootstrap_admin", "open_services", "serve"]

log = logging.getLogger(__name__)


def open_services(settings: ServerSettings) -> Services:
    data = settings.data_dir
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = Database(settings.database_url or sqlite_url(data / "hub.sqlite"))
    db.migrate()
    keyring_path = data / "keyring.json"
    try:
        keyring = LocalKeyring(keyring_path)
    except KeyringError:
        if keyring_path.exists():
            raise
        keyring = LocalKeyring.create(keyring_path)
    limits = HubLimits(max_version_bytes=settings.max_version_bytes)
    hub = Hub(db, LocalBlobStore(data / "store"), keyring, data / "staging", limits)
    publisher = Publisher(hub)
    dropped = publisher.recover()
    if dropped:
        log.warning("removed %d upload(s) interrupted by the last shutdown", dropped)
    audit = AuditLog.open(
        db,
        data / "audit-key.pem",
        checkpoint_every=settings.checkpoint_every,
        now=hub.now,
    )
    return Services(
        hub=hub,
        catalog=Catalog(hub),
        publisher=publisher,
        api_keys=ApiKeyStore(db),
        audit=audit,
        audit_reader=audit,
        checkpoint_seconds=settings.checkpoint_seconds,
    )


def bootstrap_admin(services: Services, token_file: Path | None) -> str | None:
    """Create the first admin key if there is none; the token, unless written to ``token_file``."""
    if services.api_keys.has_admin():
        return None
    issued = services.api_keys.create(
        "bootstrap-admin", [("*", "admin")], created_by="bootstrap", now=services.hub.now()
    )
    services.audit.record(
        actor="bootstrap",
        action="apikey.create",
        resource=f"key:{issued.key_id}",
        outcome="allowed",
        source="local",
        request_id="bootstrap",
        details={"name": issued.name, "roles": "*:admin"},
    )
    if token_file is None:
        return issued.token
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(issued.token + "\n")
    return None


def serve(settings: ServerSettings) -> None:  # pragma: no cover - exercised as a subprocess
    import uvicorn

    services = open_services(settings)
    token = bootstrap_admin(services, settings.admin_token_file)
    tls: dict[str, Any] = {}
    lines = []
    if not settings.insecure_http:
        if settings.tls_cert is not None and settings.tls_key is not None:
            tls = {"ssl_certfile": str(settings.tls_cert), "ssl_keyfile": str(settings.tls_key)}
        else:
            from bastion.crypto import ensure_tls_material

            material = ensure_tls_material(settings.data_dir / "tls")
            tls = {
                "ssl_certfile": str(material.server_cert),
                "ssl_keyfile": str(material.server_key),
            }
            lines.append(f"CA certificate: {material.ca_cert}")
            lines.append(f"CA fingerprint (SHA-256): {material.fingerprint}")
    url = f"{settings.scheme}://{settings.host}:{settings.port}"
    lines.insert(0, f"Bastion hub on {url} (data in {settings.data_dir})")
    if token is not None:
        lines.append(f"Admin token (shown once, store it now): {token}")
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    app = create_app(services)
    config = _tls_config_class()(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
        timeout_keep_alive=30,
        **tls,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        services.hub.db.dispose()


def _tls_config_class() -> Any:
    import uvicorn

    class TlsConfig(uvicorn.Config):
        """uvicorn's configuration with TLS 1.2 as the oldest protocol accepted."""

        def load(self) -> None:
            super().load()
            if self.ssl is not None:
                self.ssl.minimum_version = ssl.TLSVersion.TLSv1_2

    return TlsConfig
