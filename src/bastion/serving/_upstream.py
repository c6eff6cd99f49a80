"""A client for an existing Open Inference Protocol server that the gateway fronts.

In upstream mode (``bastion deploy --upstream http://triton:8000``) requests that Bastion
has authorised, limited, validated and audited are forwarded to an OIP server (Triton,
KServe, MLServer) by :class:`UpstreamClient`, over a keep-alive pool of HTTP/1.1
connections built for the hot path (``_http1.py``). It sends only what it is given (the
validated body, its content type, the binary extension's header and a request id), never
the caller's credentials, follows no redirects, and bounds the time and size of every
answer. Failures of the upstream
server are :class:`UpstreamError` (HTTP 502) with a short message; its answer body, which
may be a Python traceback, is never put in an error (a 5xx body's first 200 characters are
logged at warning level instead).
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote

import yarl

from bastion.errors import InputError, UpstreamError, UsageError
from bastion.serving._http1 import AnswerTooLarge, ConnectFailed, ExchangeFailed, Http1Pool
from bastion.serving._oip import HEADER_LENGTH_HEADER
from bastion.serving._strict_json import load_strict_json
from bastion.serving._tensors import ModelSignature

__all__ = ["UpstreamAnswer", "UpstreamClient", "check_base_url"]

logger = logging.getLogger(__name__)

#: Most bytes read of an answer that is not an inference answer (metadata, errors, health).
MAX_SMALL_ANSWER = 1 << 20
#: Longest upstream ``error`` text passed on to the caller of a refused request.
MAX_ERROR_TEXT = 200
#: Statuses that say the deployment, not the caller's request, is wrong or the server busy.
_NOT_THE_CALLERS = {
    401: "it needs credentials that Bastion does not send; allow the gateway's address",
    403: "it needs credentials that Bastion does not send; allow the gateway's address",
    404: "it has no such model; check the deployment's upstream model name",
    405: "it does not speak the Open Inference Protocol at that URL; check the upstream URL",
    407: "a proxy needs credentials; point the upstream URL at the server itself",
    408: "it timed out reading the request; retry later",
    429: "it is overloaded; retry later",
}
_HEAD_CACHE_SIZE = 1024


@dataclass(frozen=True)
class UpstreamAnswer:
    """A 2xx answer to an inference request, as the upstream server sent it."""

    status: int
    body: bytes
    content_type: str | None
    header_length: int | None


def check_base_url(base_url: str) -> str:
    """``base_url`` checked (http or https, host, optional port and path prefix only)."""
    if not isinstance(base_url, str):
        raise InputError("the upstream URL must be text like http://triton:8000")
    # Never echo user info: it may hold a password.
    shown = "" if "@" in base_url else f" {base_url[:100]!r}"
    problem = f"upstream URL{shown}: use http(s)://host[:port][/path prefix]"
    if "?" in base_url or "#" in base_url:
        raise InputError(f"{problem}, without a query or fragment")
    if any(character.isspace() or not character.isprintable() for character in base_url):
        raise InputError(f"{problem}, without spaces or control characters")
    try:
        url = yarl.URL(base_url)
        port = url.port
    except (ValueError, TypeError) as exc:
        raise InputError(f"{problem}; it does not parse as a URL") from exc
    if url.raw_user is not None or url.raw_password is not None:
        raise InputError(f"{problem}, without user name or password in it")
    if url.scheme not in ("http", "https") or not url.raw_host or port is None:
        raise InputError(problem)
    return str(url.origin()) + url.raw_path.rstrip("/")


def _short_error(body: bytes) -> str | None:
    """The upstream's ``{"error": ...}`` text if it is short printable text, else None."""
    try:
        document = load_strict_json(body[:MAX_SMALL_ANSWER], max_depth=4)
    except InputError:
        return None
    if not isinstance(document, dict):
        return None
    error = document.get("error")
    if isinstance(error, str) and error and len(error) <= MAX_ERROR_TEXT and error.isprintable():
        return error
    return None


def _header_length(value: str | None) -> int | None:
    if value is None:
        return None
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        raise UpstreamError(
            f"the upstream server sent an invalid {HEADER_LENGTH_HEADER} header; "
            "check that it speaks the Open Inference Protocol"
        )
    return int(text)


class UpstreamClient:
    """Forwards validated OIP requests to the server at ``base_url`` over one pool.

    Nothing is sent until :meth:`start`; :meth:`close` closes its connections. Use it from one
    event loop. ``timeout`` bounds each request (connection, sending and the whole answer),
    ``max_answer_bytes`` the answer's body once decoded.
    """

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 30.0,
        max_connections: int = 64,
        max_answer_bytes: int = 64 << 20,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.base_url = check_base_url(base_url)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise UsageError("UpstreamClient timeout must be a number of seconds")
        if not (math.isfinite(timeout) and timeout > 0):
            raise UsageError("UpstreamClient timeout must be a positive number of seconds")
        for name, value in (
            ("max_connections", max_connections),
            ("max_answer_bytes", max_answer_bytes),
        ):
            if type(value) is not int or value < 1:
                raise UsageError(f"UpstreamClient {name} must be a positive integer")
        if ssl_context is not None and not self.base_url.startswith("https:"):
            raise UsageError("an ssl_context needs an https:// upstream URL")
        self._timeout = float(timeout)
        self._max_connections = max_connections
        self._max_answer_bytes = max_answer_bytes
        url = yarl.URL(self.base_url, encoded=True)
        self._host, self._port = url.raw_host or "", url.port or 0
        self._prefix = url.raw_path.rstrip("/")
        self._tls = url.scheme == "https"
        default_port = 443 if self._tls else 80
        host = f"[{self._host}]" if ":" in self._host else self._host
        authority = host if self._port == default_port else f"{host}:{self._port}"
        #: What every request's head starts with after its request line.
        self._common = (
            f"Host: {authority}\r\nUser-Agent: bastion-gateway\r\nAccept-Encoding: identity\r\n"
        )
        self._ssl_context = ssl_context
        self._pool: Http1Pool | None = None
        self._heads: dict[tuple[str, str], str] = {}

    async def start(self) -> None:
        """Open the connection pool (idempotent); connections open as requests need them."""
        if self._pool is not None:
            return
        context = self._ssl_context
        if context is None and self._tls:
            context = ssl.create_default_context()
        self._pool = Http1Pool(
            self._host, self._port, ssl_context=context, max_connections=self._max_connections
        )

    async def close(self) -> None:
        """Close the pool and its idle connections (idempotent)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    async def __aenter__(self) -> UpstreamClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    def _head(self, method: str, model: str | None, action: str) -> str:
        """The request line and fixed headers for ``method`` on a model's ``action`` (cached)."""
        key = (method, action if model is None else f"{model}\0{action}")
        head = self._heads.get(key)
        if head is None:
            if model is None:
                path = f"{self._prefix}{action}"
            elif isinstance(model, str) and model:
                path = f"{self._prefix}/v2/models/{quote(model, safe='')}{action}"
            else:
                raise UsageError("an upstream model name must be a non-empty string")
            head = f"{method} {path} HTTP/1.1\r\n{self._common}"
            if len(self._heads) >= _HEAD_CACHE_SIZE:
                self._heads.clear()
            self._heads[key] = head
        return head

    async def _request(
        self,
        head: str,
        limit: int,
        *,
        data: bytes | None = None,
        headers: str = "",
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """Status, body (at most ``limit`` bytes) and headers (lower-case names) of one
        exchange; ``headers`` are extra header lines, each ending in CRLF."""
        pool = self._pool
        if pool is None:
            raise UsageError("call UpstreamClient.start() before sending requests")
        if data is None:
            request = (f"{head}{headers}\r\n".encode("latin-1"), b"")
        else:
            length = f"Content-Length: {len(data)}\r\n\r\n"
            request = (f"{head}{headers}{length}".encode("latin-1"), data)
        try:
            async with asyncio.timeout(self._timeout):
                answer = await pool.exchange(request, limit)
        except TimeoutError as exc:
            raise UpstreamError(
                f"the upstream server at {self.base_url} did not answer within "
                f"{self._timeout:g} s; check its load, or raise the deployment's timeout"
            ) from exc
        except ConnectFailed as exc:
            raise UpstreamError(
                f"cannot connect to the upstream server at {self.base_url} "
                f"({type(exc.os_error).__name__}); check that it runs and that the "
                "deployment's upstream URL points at it"
            ) from exc
        except AnswerTooLarge as exc:
            raise self._too_large(limit) from exc
        except ExchangeFailed as exc:
            raise UpstreamError(
                f"the exchange with the upstream server at {self.base_url} failed "
                f"({exc.reason}); check the server and the network to it"
            ) from exc
        except OSError as exc:
            raise UpstreamError(
                f"the exchange with the upstream server at {self.base_url} failed "
                f"({type(exc).__name__}); check the server and the network to it"
            ) from exc
        return answer.status, answer.body, answer.headers

    def _too_large(self, limit: int) -> UpstreamError:
        return UpstreamError(
            f"the upstream server at {self.base_url} sent an answer over {limit} bytes; "
            "ask for fewer outputs or raise the deployment's answer limit"
        )

    def _refused(self, status: int, body: bytes, model: str) -> UpstreamError | InputError:
        """The error for a non-2xx answer about ``model``."""
        where = f"the upstream server at {self.base_url}"
        if status >= 500:
            logger.warning(
                "upstream %s answered %d for model %r: %r",
                self.base_url,
                status,
                model,
                body[:200].decode("utf-8", "replace"),
            )
            return UpstreamError(
                f"{where} failed with status {status} for model {model!r}; see its logs"
            )
        if status in _NOT_THE_CALLERS:
            return UpstreamError(
                f"{where} refused the request for model {model!r} with status {status}: "
                f"{_NOT_THE_CALLERS[status]}"
            )
        if 400 <= status < 500:
            error = _short_error(body)
            if error is not None:
                return InputError(f"{where} refused the request (status {status}): {error}")
            return InputError(
                f"{where} refused the request as invalid (status {status}); check the "
                "inputs against the model's metadata"
            )
        if 300 <= status < 400:
            return UpstreamError(
                f"{where} answered with a redirect (status {status}); Bastion follows none: "
                "point the deployment's upstream URL at the server itself"
            )
        return UpstreamError(f"{where} answered with unexpected status {status}")

    async def _probe(self, head: str) -> bool:
        try:
            status, _, _ = await self._request(head, MAX_SMALL_ANSWER)
        except UpstreamError as exc:
            logger.debug("upstream readiness probe failed: %s", exc.message)
            return False
        return status == 200

    async def ready(self) -> bool:
        """Whether the server answers 200 to ``GET /v2/health/ready``; False if unreachable."""
        return await self._probe(self._head("GET", None, "/v2/health/ready"))

    async def model_ready(self, model: str) -> bool:
        """Whether the server answers 200 to ``GET /v2/models/{model}/ready``."""
        return await self._probe(self._head("GET", model, "/ready"))

    async def model_metadata(self, model: str) -> ModelSignature:
        """The signature in the server's metadata for ``model``, parsed strictly."""
        status, body, _ = await self._request(self._head("GET", model, ""), MAX_SMALL_ANSWER)
        if not 200 <= status < 300:
            error = self._refused(status, body, model)
            raise error if isinstance(error, UpstreamError) else UpstreamError(error.message)
        try:
            return ModelSignature.from_dict(load_strict_json(body, max_depth=16))
        except InputError as exc:
            raise UpstreamError(
                f"the upstream server at {self.base_url} sent invalid metadata for model "
                f"{model!r}: {exc.message}"
            ) from exc

    async def infer(
        self,
        model: str,
        body: bytes,
        *,
        content_type: str,
        header_length: int | None = None,
        request_id: str | None = None,
    ) -> UpstreamAnswer:
        """POST the (already validated) ``body`` to ``/v2/models/{model}/infer`` as is.

        Raises UpstreamError when the server cannot be reached, times out, fails (5xx) or
        sends an answer over the size limit; InputError when it refuses the request (4xx).
        """
        if not (content_type.isascii() and content_type.isprintable()):
            raise UsageError("a content type must be printable ASCII")
        headers = f"Content-Type: {content_type}\r\n"
        if header_length is not None:
            if type(header_length) is not int or not 0 <= header_length <= len(body):
                raise UsageError(f"{HEADER_LENGTH_HEADER} must be a length within the body")
            headers += f"{HEADER_LENGTH_HEADER}: {header_length}\r\n"
        if request_id is not None:
            if len(request_id) > 256 or not (request_id.isascii() and request_id.isprintable()):
                raise UsageError("a request id must be printable ASCII of at most 256 characters")
            headers += f"X-Request-ID: {request_id}\r\n"
        status, answer, answer_headers = await self._request(
            self._head("POST", model, "/infer"),
            self._max_answer_bytes,
            data=body,
            headers=headers,
        )
        if not 200 <= status < 300:
            raise self._refused(status, answer, model)
        return UpstreamAnswer(
            status,
            answer,
            answer_headers.get("content-type"),
            _header_length(answer_headers.get(HEADER_LENGTH_HEADER.lower())),
        )
