"""A client for an existing Open Inference Protocol server that the gateway fronts.

In upstream mode (``bastion deploy --upstream http://triton:8000``) requests that Bastion
has authorised, limited, validated and audited are forwarded to an OIP server (Triton,
KServe, MLServer) by :class:`UpstreamClient`: one aiohttp session with a keep-alive pool,
built for the hot path. It sends only what it is given (the validated body, its content
type, the binary extension's header and a request id), never the caller's credentials,
follows no redirects, and bounds the time and size of every answer. Failures of the upstream
server are :class:`UpstreamError` (HTTP 502) with a short message; its answer body, which
may be a Python traceback, is never put in an error (a 5xx body's first 200 characters are
logged at warning level instead).
"""

from __future__ import annotations

import logging
import math
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import quote

import aiohttp
import yarl

from bastion.errors import InputError, UpstreamError, UsageError
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
_URL_CACHE_SIZE = 1024


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
    """Forwards validated OIP requests to the server at ``base_url`` over one session.

    Nothing is sent until :meth:`start`; :meth:`close` ends the session. Use it from one
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
        self._ssl_context = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[tuple[str, str], yarl.URL] = {}

    async def start(self) -> None:
        """Open the session and its connection pool (idempotent)."""
        if self._session is not None:
            return
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            ssl=self._ssl_context if self._ssl_context is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": "bastion-gateway", "Accept-Encoding": "identity"},
            trust_env=False,
        )

    async def close(self) -> None:
        """Close the session and its connections (idempotent)."""
        session, self._session = self._session, None
        if session is not None:
            await session.close()

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

    def _url(self, model: str, action: str) -> yarl.URL:
        key = (model, action)
        url = self._urls.get(key)
        if url is None:
            if not isinstance(model, str) or not model:
                raise UsageError("an upstream model name must be a non-empty string")
            url = yarl.URL(
                f"{self.base_url}/v2/models/{quote(model, safe='')}{action}", encoded=True
            )
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[key] = url
        return url

    async def _request(
        self,
        method: str,
        url: yarl.URL,
        limit: int,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """Status, body (at most ``limit`` bytes) and headers of one exchange."""
        session = self._session
        if session is None:
            raise UsageError("call UpstreamClient.start() before sending requests")
        try:
            async with session.request(
                method, url, data=data, headers=headers, allow_redirects=False
            ) as answer:
                length = answer.content_length
                if length is not None and length > limit:
                    raise self._too_large(limit)
                if length is not None and not answer.headers.get("Content-Encoding"):
                    body = await answer.read()
                else:
                    body = await self._read_bounded(answer, limit)
                return answer.status, body, answer.headers
        except TimeoutError as exc:
            raise UpstreamError(
                f"the upstream server at {self.base_url} did not answer within "
                f"{self._timeout:g} s; check its load, or raise the deployment's timeout"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamError(
                f"cannot connect to the upstream server at {self.base_url} "
                f"({type(exc.os_error).__name__}); check that it runs and that the "
                "deployment's upstream URL points at it"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamError(
                f"the exchange with the upstream server at {self.base_url} failed "
                f"({type(exc).__name__}); check the server and the network to it"
            ) from exc

    async def _read_bounded(self, answer: aiohttp.ClientResponse, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in answer.content.iter_any():
            size += len(chunk)
            if size > limit:
                raise self._too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

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

    async def _probe(self, url: yarl.URL) -> bool:
        try:
            status, _, _ = await self._request("GET", url, MAX_SMALL_ANSWER)
        except UpstreamError as exc:
            logger.debug("upstream readiness probe failed: %s", exc.message)
            return False
        return status == 200

    async def ready(self) -> bool:
        """Whether the server answers 200 to ``GET /v2/health/ready``; False if unreachable."""
        return await self._probe(yarl.URL(f"{self.base_url}/v2/health/ready", encoded=True))

    async def model_ready(self, model: str) -> bool:
        """Whether the server answers 200 to ``GET /v2/models/{model}/ready``."""
        return await self._probe(self._url(model, "/ready"))

    async def model_metadata(self, model: str) -> ModelSignature:
        """The signature in the server's metadata for ``model``, parsed strictly."""
        status, body, _ = await self._request("GET", self._url(model, ""), MAX_SMALL_ANSWER)
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
        headers = {"Content-Type": content_type}
        if header_length is not None:
            if type(header_length) is not int or not 0 <= header_length <= len(body):
                raise UsageError(f"{HEADER_LENGTH_HEADER} must be a length within the body")
            headers[HEADER_LENGTH_HEADER] = str(header_length)
        if request_id is not None:
            if len(request_id) > 256 or not (request_id.isascii() and request_id.isprintable()):
                raise UsageError("a request id must be printable ASCII of at most 256 characters")
            headers["X-Request-ID"] = request_id
        status, answer, answer_headers = await self._request(
            "POST",
            self._url(model, "/infer"),
            self._max_answer_bytes,
            data=body,
            headers=headers,
        )
        if not 200 <= status < 300:
            raise self._refused(status, answer, model)
        return UpstreamAnswer(
            status,
            answer,
            answer_headers.get("Content-Type"),
            _header_length(answer_headers.get(HEADER_LENGTH_HEADER)),
        )
