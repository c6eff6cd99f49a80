"""The hub's HTTP face: routes, authentication, problem documents, audit middleware.

No domain logic lives here: routes check who is calling and hand over to
``bastion.registry``. See ``docs/hub.md`` for the API.
"""

from bastion.api._app import create_app
from bastion.api._services import AuditRecorder, Services

__all__ = ["AuditRecorder", "Services", "create_app"]
