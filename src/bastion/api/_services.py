"""What the routes are given: the hub's services, bundled once per application."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request

from bastion.auth import ApiKeyStore
from bastion.registry import Catalog, Hub, Publisher

__all__ = ["AuditRecorder", "Services", "services"]


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
    audit: AuditRecorder
    audit_reader: Any
    #: The largest JSON request body accepted (uploads are bounded by what they declare).
    max_json_body: int = 4 << 20
    #: Sign an audit checkpoint this often (seconds) when entries were added; None: never.
    checkpoint_seconds: float | None = None


def services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found
