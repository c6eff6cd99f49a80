"""The gateway's hot path: ``POST /v2/models/NAME/infer`` answered without FastAPI.

The access layer has authenticated the caller and applied the rate limits by then; this
middleware reads the body (bounded), and hands it to the same
:func:`~bastion.api._routes_gateway.call_deployment` the FastAPI route uses, skipping the
router's second match, dependency resolution and response classes, which cost more than
the inference itself. Errors become the same problem documents as anywhere else.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from bastion.api._problems import send_problem, status_for
from bastion.api._routes_gateway import call_deployment
from bastion.errors import BastionError, InputError, PayloadTooLargeError

__all__ = ["InferencePath"]


class _Headers(dict[str, str]):
    """Request headers by lower-case name (the last value of a repeated header wins)."""

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


class InferencePath:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = scope.get("state")
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or state is None
            or state.get("route_name") != "invoke"
            or state.get("principal") is None
        ):
            await self.app(scope, receive, send)
            return
        headers = _Headers(
            (key.decode("latin-1"), value.decode("latin-1")) for key, value in scope["headers"]
        )
        request = Request(scope)
        try:
            body = await self._body(receive, headers)
            answer = await call_deployment(
                request, state["principal"], state["path_params"]["deployment"], body, headers
            )
        except BastionError as exc:
            state["error_code"] = exc.code
            await send_problem(
                send, status_for(exc), exc.code, exc.message, request_id=state.get("request_id")
            )
            return
        start = [(b"content-length", str(len(answer.body)).encode())]
        start += [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
        await send({"type": "http.response.start", "status": 200, "headers": start})
        await send({"type": "http.response.body", "body": answer.body})

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
