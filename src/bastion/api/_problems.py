"""The API's one error boundary: every error becomes an RFC 9457 problem document.

A Bastion error keeps its stable ``code``; the HTTP status comes from the
table below. Anything else is logged with its traceback and answered as a
bare ``internal`` problem that tells the caller nothing about the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from bastion import errors

__all__ = [
    "STATUS",
    "install_problem_handlers",
    "problem",
    "problem_bytes",
    "send_problem",
    "status_for",
]

log = logging.getLogger(__name__)

#: Stable error code -> HTTP status. Codes not listed are 400 (InputError) or 500.
STATUS: dict[str, int] = {
    "usage": 400,
    "bad_input": 400,
    "not_found": 404,
    "conflict": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "version_yanked": 410,
    "verification_failed": 422,
    "version_quarantined": 422,
    "integrity_failed": 500,
    "unauthenticated": 401,
    "forbidden": 403,
    "step_up_required": 403,
    "rate_limited": 429,
    "hub_unavailable": 503,
    "model_unavailable": 503,
    "upstream_failed": 502,
    "storage_full": 507,
    "method_not_allowed": 405,
    "internal": 500,
}

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    408: "Request timeout",
    413: "Content too large",
    415: "Unsupported media type",
    429: "Too many requests",
    431: "Request header fields too large",
    422: "Unprocessable content",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    507: "Insufficient storage",
}


def status_for(exc: errors.BastionError) -> int:
    if exc.code in STATUS:
        return STATUS[exc.code]
    return 400 if isinstance(exc, errors.InputError) else 500


def problem_document(
    status: int, code: str, detail: str, *, request_id: str | None = None, **extra: Any
) -> dict[str, Any]:
    """An RFC 9457 problem document carrying Bastion's stable ``code``.

    ``error`` repeats ``detail``: it is where Open Inference Protocol clients (tritonclient,
    KServe's) look for the message.
    """
    body: dict[str, Any] = {
        "type": f"urn:bastion:problem:{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "error": detail,
    }
    if request_id:
        body["instance"] = f"urn:bastion:request:{request_id}"
    body.update(extra)
    return body


def problem_bytes(
    status: int, code: str, detail: str, *, request_id: str | None = None, **extra: Any
) -> bytes:
    """:func:`problem_document` as the JSON body sent, encoded as FastAPI encodes the
    problems it answers (compact, UTF-8), so a problem reads the same from any layer."""
    document = problem_document(status, code, detail, request_id=request_id, **extra)
    return _COMPACT.encode(document).encode()


#: ``json.dumps`` with these options builds a new encoder per call; refusals are a hot path.
_COMPACT = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


async def send_problem(
    send: Send,
    status: int,
    code: str,
    detail: str,
    *,
    request_id: str | None = None,
    headers: Sequence[tuple[bytes, bytes]] = (),
    **extra: Any,
) -> None:
    """Answer a problem from raw ASGI code (middleware that answers before the app)."""
    body = problem_bytes(status, code, detail, request_id=request_id, **extra)
    start = [
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})


def problem(request: Request, status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    body = problem_document(status, code, detail, request_id=request_id, **extra)
    headers = {"WWW-Authenticate": 'Bearer realm="bastion"'} if status == 401 else None
    if "retry_after" in extra:
        headers = {"Retry-After": str(extra["retry_after"])}
    request.state.error_code = code
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def install_problem_handlers(app: FastAPI) -> None:
    async def bastion_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.BastionError)
        status = status_for(exc)
        extra: dict[str, Any] = {}
        if isinstance(exc, errors.VerificationError) and exc.result is not None:
            extra["result"] = exc.result.to_dict()
        if isinstance(exc, errors.RateLimitedError):  # a sign-in lock-out, say
            extra["retry_after"] = exc.retry_after
        if status >= 500 and exc.code in ("internal", "integrity_failed"):
            log.error("request failed: %s", exc.message, exc_info=exc)
            return problem(request, status, exc.code, "the hub failed; see its log")
        return problem(request, status, exc.code, exc.message, **extra)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        where = []
        for item in exc.errors()[:5]:
            loc = ".".join(str(p) for p in item.get("loc", ()))
            where.append(f"{loc}: {item.get('msg', 'invalid')}")
        return problem(request, 400, "bad_input", "invalid request: " + "; ".join(where))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_input")
        detail = {404: "no such route", 405: "method not allowed on this route"}.get(
            exc.status_code, str(exc.detail)
        )
        return problem(request, exc.status_code, code, detail)

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        return problem(request, 500, "internal", "the hub failed; see its log")

    app.add_exception_handler(errors.BastionError, bastion_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
