"""ASGI middleware: request ids, JSON body limits, and the audit record of every request.

Every state-changing request and every pull is recorded in the audit log after
it completes, allowed or denied, with who, what, which resource, from where,
the outcome and the request id. Reads that change nothing are recorded only
when the policies refuse them (403); a refused credential on such a read (401)
is counted against its source address and logged by the access layer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion._key_text import redact_tokens
from bastion.api._problems import send_problem
from bastion.api._services import Services

__all__ = [
    "AuditMiddleware",
    "BodyLimitMiddleware",
    "audit_failed",
    "record_request",
    "request_header",
    "request_id_for",
]

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")
_UPLOAD_PUT = re.compile(r"/api/v1/uploads/[^/]+/files/")
#: GET routes recorded although they change nothing: pulls and audit exports.
AUDITED_READS = frozenset({"version.pull", "audit.export"})
#: Routes that leave an inference record instead of an audit entry (``bastion.serving``).
RECORDED_NOT_AUDITED = frozenset({"invoke"})
#: What the audit log refuses in its text fields: control, bidirectional and surrogate characters.


class _RequestIds:
    """Random request ids (16 hex digits), cut from a buffer filled 4 KiB at a time.

    One ``os.urandom`` call per id cost more than the rest of the audit layer's work.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._used = 0
        self._lock = threading.Lock()  # ids are also made in worker threads

    def new(self) -> str:
        with self._lock:
            if self._used + 8 > len(self._buffer):
                self._buffer, self._used = os.urandom(4096), 0
            start = self._used
            self._used += 8
        return self._buffer[start : start + 8].hex()


_IDS = _RequestIds()


def request_id_for(scope: Scope) -> str:
    """The caller's ``X-Request-Id`` when it is a sane token, otherwise a new random one."""
    given = request_header(scope, b"x-request-id")
    return given if given and _REQUEST_ID.fullmatch(given) else _IDS.new()


def request_header(scope: Scope, name: bytes) -> str | None:
    """The first value of request header ``name`` (lower-case bytes), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes, except streamed uploads (bounded per file)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["method"] == "PUT" and _UPLOAD_PUT.match(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        declared = request_header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0
        over = started = False

        async def counting() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _BodyTooLarge
            return message

        async def sending(message: Message) -> None:
            # Once the body is over the limit, the app's answer (FastAPI turns the
            # interrupted read into "cannot parse the body") is replaced by a 413.
            nonlocal started
            if not over:
                started = started or message["type"] == "http.response.start"
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting, sending)
        if over and not started:
            scope.setdefault("state", {})["error_code"] = "payload_too_large"
            await _too_large(send, self.limit)


class _BodyTooLarge(Exception):
    pass


async def _too_large(send: Send, limit: int) -> None:
    detail = f"the request body is larger than {limit} bytes"
    await send_problem(send, 413, "payload_too_large", detail)


async def audit_failed(send: Send, request_id: str) -> None:
    detail = "the hub could not record this request in its audit log; see its log"
    headers = [(b"x-request-id", request_id.encode())]
    await send_problem(send, 500, "internal", detail, request_id=request_id, headers=headers)


class AuditMiddleware:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_for(scope)
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status: int | None = None
        recorded = False
        replaced = False

        def audited(status: int | None) -> tuple[bool, str]:
            route = scope.get("route")
            action = getattr(route, "name", None) or state.get("route_name") or "request.unmatched"
            if state.get("audit_skip"):  # a rate-limit refusal: counted, not logged one by one
                return False, action
            # A refused credential on a plain read is counted against its address and
            # logged, not written here: a flood of bad keys would otherwise write the audit
            # log at the flood's rate. Changes and pulls are recorded whatever the outcome.
            # Inference is traffic, not a change: it leaves an inference record (written
            # in batches by the gateway) rather than an audit entry, unless refused by policy.
            if action in RECORDED_NOT_AUDITED and status != 403:
                return False, action
            wanted = (
                scope["method"] not in ("GET", "HEAD", "OPTIONS")
                or action in AUDITED_READS
                or status == 403
            )
            return wanted, action

        async def sending(message: Message) -> None:
            # The entry is written before the response leaves: a request whose audit
            # entry cannot be written is answered 500, never silently done.
            nonlocal status, recorded, replaced
            if replaced:
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                wanted, action = audited(status)
                if wanted:
                    recorded = True
                    try:
                        await anyio.to_thread.run_sync(
                            record_request, self.services, scope, action, status, request_id
                        )
                    except Exception:
                        replaced = True
                        await audit_failed(send, request_id)
                        return
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            wanted, action = audited(status)
            if wanted and not recorded:  # no response was sent: a disconnect or a crash
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(
                        record_request, self.services, scope, action, status, request_id
                    )


def record_request(
    services: Services, scope: Scope, action: str, status: int | None, request_id: str
) -> None:
    """Write the audit entry of one request (blocking: call it from a worker thread)."""
    state: dict[str, Any] = scope.get("state", {})
    principal = state.get("principal")
    outcome = (
        "allowed"
        if status is not None and status < 400
        else "denied"
        if status in (401, 403)
        else "failed"
    )
    details: dict[str, Any] = {"method": scope["method"], "status": status}
    if state.get("error_code"):
        details["error"] = state["error_code"]
    details.update(state.get("audit_details", {}))
    client = scope.get("client")
    try:
        services.audit.record(
            actor=principal.actor if principal is not None else "anonymous",
            action=action,
            resource=state.get("audit_resource") or _resource(scope),
            outcome=outcome,
            source=client[0] if client else "unknown",
            request_id=request_id,
            details=details,
        )
    except Exception:
        log.exception("could not write the audit entry for request %s", request_id)
        raise


def _resource(scope: Scope) -> str:
    # A key's secret sent in a path by mistake (as a key id) is never recorded.
    return redact_tokens(_named_resource(scope))


def _named_resource(scope: Scope) -> str:
    # Routed requests carry their path parameters; those refused before routing, the ones
    # the access layer matched.
    params: dict[str, Any] = scope.get("path_params") or scope.get("state", {}).get(
        "path_params", {}
    )
    ns, model = params.get("namespace"), params.get("model")
    if ns and model:
        name = f"{ns}/{model}"
        if params.get("version"):
            name += f"@{params['version']}"
        elif params.get("alias"):
            name += f":{params['alias']}"
        return name[:512]
    for key in ("namespace", "upload_id", "key_id", "deployment"):
        if params.get(key):
            return f"{key.removesuffix('_id')}:{params[key]}"[:512]
    return str(scope.get("path", ""))[:512]
