"""What the routes are given: the hub's services, bundled once per application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import Request

from bastion.auth import ApiKeyStore, OidcAuthenticator
from bastion.auth._policy_store import PolicyStore
from bastion.auth._ratelimit import RateLimiter
from bastion.auth._sessions import SessionStore
from bastion.auth._users import UserStore
from bastion.registry import Catalog, Hub, Publisher

if TYPE_CHECKING:
    from bastion.auth._mtls import ClientCertificates
    from bastion.serving._gateway import Gateway
    from bastion.serving._records import InferenceRecorder

__all__ = ["AuditRecorder", "Services", "services", "services_of"]


class AuditRecorder(Protocol):
    """Appends one entry to the tamper-evident audit log."""

    def record(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        outcome: str,
        source: str,
        request_id: str,
        details: dict[str, Any],
    ) -> object: ...


@dataclass(frozen=True, slots=True)
class Services:
    hub: Hub
    catalog: Catalog
    publisher: Publisher
    api_keys: ApiKeyStore
    users: UserStore
    sessions: SessionStore
    policies: PolicyStore
    limiter: RateLimiter
    audit: AuditRecorder
    audit_reader: Any
    #: Trusted OpenID Connect issuers; None: bearer JWTs are refused.
    oidc: OidcAuthenticator | None = None
    #: Client certificates mapped to service accounts; None: certificates name no one.
    mtls: ClientCertificates | None = None
    #: The largest JSON request body accepted (uploads are bounded by what they declare).
    max_json_body: int = 4 << 20
    #: Sign an audit checkpoint this often (seconds) when entries were added; None: never.
    checkpoint_seconds: float | None = None
    #: Send Strict-Transport-Security (the hub is served over TLS).
    hsts: bool = False
    #: Browser origins allowed to call the API (CORS); empty: none.
    cors_origins: tuple[str, ...] = ()
    #: The inference gateway (``/v2/...``); None: this server serves no models.
    gateway: Gateway | None = None
    #: Where every inference call is recorded, in batches; None: not recorded.
    inference_records: InferenceRecorder | None = None


async def services(request: Request) -> Services:
    """The application's services (a coroutine: FastAPI then runs it without a thread)."""
    return services_of(request)


def services_of(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
