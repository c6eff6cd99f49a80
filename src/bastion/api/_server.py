"""Starting the hub: open the data folder, recover, bootstrap an admin, serve over TLS.

The data folder holds everything: ``hub.sqlite`` (unless a PostgreSQL URL is
configured), ``store/`` (encrypted blobs), ``keyring.json`` (key-encryption keys, mode 0600),
``audit-key.pem`` (the audit checkpoint signing key, 0600), ``audit-witness.json`` (the last
checkpoint it signed, 0600) and ``tls/``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from bastion.api._access_config import AccessConfig
from bastion.api._app import create_app
from bastion.api._services import Services
from bastion.api._settings import ServerSettings
from bastion.api._transport import hub_server_config
from bastion.audit import AuditLog
from bastion.auth import ApiKeyStore, OidcAuthenticator
from bastion.auth._passwords import PasswordHasher
from bastion.auth._policy_store import PolicyStore
from bastion.auth._ratelimit import RateLimiter
from bastion.auth._sessions import SessionStore
from bastion.auth._users import UserStore
from bastion.crypto import LocalKeyring
from bastion.db import Database, sqlite_url
from bastion.errors import KeyringError
from bastion.registry import Catalog, Hub, HubLimits, LocalBlobStore, Publisher
from bastion.serving._deployment_store import DeploymentStore
from bastion.serving._gateway import SYSTEM_ACTOR, ChangeRecorder, Gateway
from bastion.serving._metrics import GatewayMetrics
from bastion.serving._model_source import HubModelSource
from bastion.serving._records import InferenceRecorder

__all__ = ["bootstrap_admin", "open_services", "serve"]

log = logging.getLogger(__name__)


def open_services(settings: ServerSettings, *, hasher: PasswordHasher | None = None) -> Services:
    """Everything the application needs, from the data folder and the access settings.

    ``hasher`` replaces the production argon2id parameters (tests use cheap ones).
    """
    access = AccessConfig.load(settings.access_config)
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
    # Earlier versions decrypted each version into staging/ for its scan; a folder
    # left there by a crash would hold plaintext.
    shutil.rmtree(data / "staging", ignore_errors=True)
    hub = Hub(db, LocalBlobStore(data / "store"), keyring, limits)
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
    catalog = Catalog(hub)
    gateway = Gateway(
        DeploymentStore(db, hub.now),
        HubModelSource(catalog, now=hub.now),
        GatewayMetrics(),
        record_change=_change_recorder(audit),
    )
    return Services(
        hub=hub,
        catalog=catalog,
        publisher=publisher,
        api_keys=ApiKeyStore(db),
        users=UserStore(db, hasher=hasher or PasswordHasher(), keys=keyring),
        sessions=SessionStore(db, idle=access.session_idle, lifetime=access.session_lifetime),
        policies=PolicyStore(db),
        limiter=RateLimiter(access.limits),
        audit=audit,
        audit_reader=audit,
        oidc=OidcAuthenticator(access.issuers) if access.issuers else None,
        mtls=access.clients,
        checkpoint_seconds=settings.checkpoint_seconds,
        hsts=not settings.insecure_http,
        cors_origins=access.cors_origins,
        gateway=gateway,
        inference_records=InferenceRecorder(data / "inference"),
    )


def _change_recorder(audit: AuditLog) -> ChangeRecorder:
    """Audit entries for the changes the gateway makes on its own (rollbacks on yank or error)."""

    def record(action: str, resource: str, details: dict[str, Any]) -> None:
        audit.record(
            actor=SYSTEM_ACTOR,
            action=action,
            resource=resource,
            outcome="allowed",
            source="local",
            request_id="gateway",
            details=details,
        )

    return record


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
    client_ca = AccessConfig.load(settings.access_config).client_ca
    config = hub_server_config(
        create_app(services),
        host=settings.host,
        port=settings.port,
        ssl_certfile=tls.get("ssl_certfile"),
        ssl_keyfile=tls.get("ssl_keyfile"),
        client_ca=client_ca,
    )
    try:
        uvicorn.Server(config).run()
    finally:
        services.hub.db.dispose()
