"""Client certificates on the real hub, over TLS: an identity, or an attribute of a request.

A certificate mapped in the access settings' clients file is a service account when the
request carries no other credential; with a bearer credential, its fingerprint is part of
the request's context for the policies. A certificate from another CA fails the handshake.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from bastion.api import create_app
from bastion.api._server import bootstrap_admin, open_services
from bastion.api._settings import ServerSettings
from bastion.api._transport import hub_server_config
from tests.integration.hub.conftest import CHEAP_HASHER, bearer
from tests.unit.api.test_transport import Pki, client_context, pki, serving

__all__ = ["pki"]  # the module-scoped certificate fixture, shared with the transport tests


@pytest.fixture
def mtls_hub(pki: Pki, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A TLS hub that maps the client certificate to ``build-farm``; (URL, admin token)."""
    der = pki.client.public_bytes(serialization.Encoding.DER)
    (tmp_path / "clients.toml").write_text(
        "[[clients]]\n"
        'name = "build-farm"\n'
        f'sha256 = "{hashlib.sha256(der).hexdigest()}"\n'
        'roles = ["publisher:med"]\n'
    )
    (tmp_path / "access.toml").write_text(
        f'[mtls]\nclient_ca = "{pki.ca}"\nclients = "clients.toml"\n'
    )
    settings = ServerSettings(data_dir=tmp_path / "hub", access_config=tmp_path / "access.toml")
    services = open_services(settings, hasher=CHEAP_HASHER)
    token = bootstrap_admin(services, None) or ""
    config = hub_server_config(
        create_app(services),
        host="127.0.0.1",
        port=0,
        ssl_certfile=pki.server_cert,
        ssl_keyfile=pki.server_key,
        client_ca=pki.ca,
    )
    with serving(config) as port:
        yield f"https://127.0.0.1:{port}", token
    services.hub.db.dispose()


def test_a_mapped_certificate_is_a_service_account(pki: Pki, mtls_hub: tuple[str, str]) -> None:
    url, _ = mtls_hub
    context = client_context(pki, cert=(pki.client_cert, pki.client_key))
    with httpx.Client(base_url=url, verify=context) as client:
        who = client.get("/api/v1/whoami")
        assert who.status_code == 200, who.text
        body = who.json()
        assert body["actor"] == "mtls:build-farm"
        assert body["auth_method"] == "mtls"
        assert body["roles"] == [{"namespace": "med", "role": "publisher"}]
        der = pki.client.public_bytes(serialization.Encoding.DER)
        assert body["client_certificate"] == hashlib.sha256(der).hexdigest()
        denied = client.get("/api/v1/audit/key")
        assert denied.status_code == 403


def test_a_certificate_is_an_attribute_beside_a_bearer_credential(
    pki: Pki, mtls_hub: tuple[str, str]
) -> None:
    url, token = mtls_hub
    context = client_context(pki, cert=(pki.client_cert, pki.client_key))
    with httpx.Client(base_url=url, verify=context, headers=bearer(token)) as client:
        body = client.get("/api/v1/whoami").json()
    assert body["actor"].startswith("key:")  # the key is who; the certificate is context
    assert body["client_certificate"] is not None
    with httpx.Client(base_url=url, verify=client_context(pki)) as plain:
        assert plain.get("/api/v1/whoami").status_code == 401  # no certificate, no key
        assert (
            plain.get("/api/v1/whoami", headers=bearer(token)).json()["client_certificate"] is None
        )


def test_a_certificate_from_another_ca_fails_the_handshake(
    pki: Pki, mtls_hub: tuple[str, str]
) -> None:
    url, _ = mtls_hub
    context = client_context(pki, cert=(pki.foreign_cert, pki.foreign_key))
    with (
        httpx.Client(base_url=url, verify=context) as client,
        pytest.raises(
            (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError, ssl.SSLError)
        ),
    ):
        client.get("/api/v1/whoami")
