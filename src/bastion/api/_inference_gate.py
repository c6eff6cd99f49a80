"""The gateway's hot path: ``POST /v2/models/NAME/infer`` served in one pass, before FastAPI.

Taken through the hub's five middleware layers and FastAPI's own three, an inference paid
more for the layers' wrapping than for the model. The gate does for these requests what
those layers do, by calling the same code, in their order:

1. the request id (:func:`~bastion.api._middleware.request_id_for`, the audit layer's rule);
2. admission (:class:`~bastion.api._admission.Admission`: credential, rate limits), with
   the access layer's refusals;
3. the body, bounded by the JSON body limit;
4. :func:`~bastion.api._routes_gateway.call_deployment`: the policy decision, validation,
   the worker, output hardening, metrics and the inference record;
5. the answer's headers: the rate-limit fields, ``X-Request-Id`` and the security headers
   (:class:`~bastion.api._hygiene.SecurityHeaders`); a policy refusal (403) is written to
   the audit log first, and answered 500 if it cannot be.

The gate computes each answer whole (:meth:`InferenceGate.answer`, a :class:`Reply`), and
the hub's HTTP protocol (:class:`~bastion.api._transport.HubHttpProtocol`) writes it to the
connection at once, without an ASGI cycle.

Requests it does not take go through the full stack: another path or method, and anything
with an ``Origin`` header (CORS is decided there). FastAPI's route for the same path
serves them with the same :func:`call_deployment`, as it serves every inference call when
the application runs under another server.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

import anyio
from starlette.requests import Request
from starlette.types import Message, Receive, Scope

from bastion.api._admission import Admission, OverLimit, refuse
from bastion.api._hygiene import SecurityHeaders
from bastion.api._middleware import audit_failed, record_request, request_id_for
from bastion.api._problems import send_problem, status_for
from bastion.api._routes_gateway import call_deployment
from bastion.errors import BastionError, InputError, PayloadTooLargeError

__all__ = ["InferenceGate", "Reply"]

log = logging.getLogger(__name__)

_PREFIX = "/v2/models/"
_SUFFIX = "/infer"
_ROUTE = "invoke"


class _Headers(dict[str, str]):
    """Request headers by lower-case name (the last value of a repeated header wins)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class Reply(NamedTuple):
    """One whole answer: its status, its headers (all but the server's own) and its body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class InferenceGate:
    """Serve inference calls in one pass; :meth:`takes` says which requests are its own."""

    def __init__(self, admission: Admission, security: SecurityHeaders, *, limit: int) -> None:
        self.admission = admission
        self.services = admission.services
        self.security = security
        self.limit = limit

    def takes(self, scope: Scope) -> str | None:
        """The deployment named by an inference call this gate serves, else None."""
        if scope["type"] != "http" or scope["method"] != "POST":
            return None
        path: str = scope["path"]
        if not (path.startswith(_PREFIX) and path.endswith(_SUFFIX)):
            return None
        name = path[len(_PREFIX) : -len(_SUFFIX)]
        if not name or "/" in name:  # the route's {deployment} is one path segment
            return None
        if any(key == b"origin" for key, _ in scope["headers"]):
            return None
        return name

    async def answer(
        self, scope: Scope, receive: Receive, deployment: str, *, alone: bool = False
    ) -> Reply:
        """The whole answer to an inference call, every layer's headers included.

        ``receive`` gives the body as ASGI ``http.request`` messages; ``alone`` says that
        the server has no other request on its way (the model's worker is asked at once).
        """
        state = scope.setdefault("state", {})
        request_id = request_id_for(scope)
        params = {"deployment": deployment}
        state.update(request_id=request_id, route_name=_ROUTE, path_params=params)
        extra = [(b"x-request-id", request_id.encode())]
        reply = await self._answer(scope, receive, deployment, params, extra, alone)
        if reply.status == 403 and not await self._audited(scope):
            kept = _Kept()
            await audit_failed(kept.send, request_id)
            return Reply(kept.status, self.security.finish(kept.headers), kept.body)
        if reply.status == 200:  # the gate's own headers: see _answer
            return Reply(200, self.security.finish_own(reply.headers + extra), reply.body)
        return Reply(reply.status, self.security.finish(reply.headers + extra), reply.body)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        deployment: str,
        params: dict[str, Any],
        extra: list[tuple[bytes, bytes]],
        alone: bool,
    ) -> Reply:
        """The answer without the headers added to every one (``extra``, security)."""
        state = scope["state"]
        kept = _Kept()
        try:
            await self.admission.admit(scope, _ROUTE, params)
        except OverLimit as over:
            self.admission.refused(scope, _ROUTE, params, over.error)
            await refuse(scope, kept.send, over.error, over.headers)
            return kept.reply()
        except BastionError as exc:
            self.admission.refused(scope, _ROUTE, params, exc)
            await refuse(scope, kept.send, exc, [])
            return kept.reply()
        except Exception as exc:  # a failing store: answered as FastAPI's handler answers
            return await _failed(scope, exc)
        extra[:0] = [(k.lower().encode(), v.encode()) for k, v in state["rate_limit"]]
        headers = _Headers(
            (key.decode("latin-1"), value.decode("latin-1")) for key, value in scope["headers"]
        )
        try:
            body = await self._body(receive, headers)
            answer = await call_deployment(
                Request(scope), state["principal"], deployment, body, headers, alone=alone
            )
        except BastionError as exc:
            state["error_code"] = exc.code
            status, detail = status_for(exc), exc.message
            if status >= 500 and exc.code in ("internal", "integrity_failed"):
                log.error("request failed: %s", exc.message, exc_info=exc)
                detail = "the hub failed; see its log"
            await send_problem(kept.send, status, exc.code, detail, request_id=state["request_id"])
            return kept.reply()
        except Exception as exc:
            return await _failed(scope, exc)
        start = [(b"content-length", str(len(answer.body)).encode())]
        start += [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
        return Reply(200, start, answer.body)

    async def _body(self, receive: Receive, headers: _Headers) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            raise PayloadTooLargeError(f"the request body is larger than {self.limit} bytes")
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise InputError("the client went away before sending its whole body")
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                raise PayloadTooLargeError(f"the request body is larger than {self.limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _audited(self, scope: Scope) -> bool:
        """Write the audit entry of a refused call; False if it cannot be written."""
        state = scope["state"]
        try:
            await anyio.to_thread.run_sync(
                record_request, self.services, scope, _ROUTE, 403, state["request_id"]
            )
        except Exception:
            return False
        return True


async def _failed(scope: Scope, exc: Exception) -> Reply:
    """Answer an unexpected failure: 500, logged with its traceback, no detail sent."""
    log.error("unexpected error", exc_info=exc)
    state = scope["state"]
    state["error_code"] = "internal"
    detail = "the hub failed; see its log"
    kept = _Kept()
    await send_problem(kept.send, 500, "internal", detail, request_id=state["request_id"])
    return kept.reply()


class _Kept:
    """An ASGI ``send`` that keeps the one answer sent through it."""

    __slots__ = ("body", "headers", "status")

    def __init__(self) -> None:
        self.status = 500
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            self.headers = list(message.get("headers", ()))
        else:
            self.body += message.get("body", b"")

    def reply(self) -> Reply:
        return Reply(self.status, self.headers, self.body)
