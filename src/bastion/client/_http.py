"""The SDK's HTTP session: TLS trust, the API key, and problem documents turned back into errors."""

from __future__ import annotations

import http.client
import json
import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from bastion import errors
from bastion.client._login import Login

__all__ = ["HubSession"]

_BY_CODE: dict[str, type[errors.BastionError]] = {
    cls.code: cls
    for name in errors.__all__
    if isinstance(cls := getattr(errors, name), type)
    and issubclass(cls, errors.BastionError)
    and cls is not errors.BastionError
}
_TIMEOUT = httpx.Timeout(30.0, read=900.0)
#: What a credential may hold to be sent in a header: visible ASCII, no space.
_SENDABLE = re.compile(r"[\x21-\x7e]+")


def _ssl_context(ca: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca) if ca else ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def raise_for_problem(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    _raise_problem(response.status_code, body)


def _raise_problem(status: int, body: object) -> None:
    code = body.get("code") if isinstance(body, dict) else None
    detail = body.get("detail") if isinstance(body, dict) else None
    message = detail if isinstance(detail, str) else f"the hub answered HTTP {status}"
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        cls = errors.HubUnavailableError if status >= 500 else errors.InputError
    if cls is errors.RateLimitedError:
        wait = body.get("retry_after") if isinstance(body, dict) else None
        raise errors.RateLimitedError(message, retry_after=wait if type(wait) is int else 1)
    raise cls(message)


class HubSession:
    """One connection pool to one hub."""

    def __init__(self, login: Login, *, transport: httpx.BaseTransport | None = None) -> None:
        headers = {"user-agent": "bastion-sdk"}
        if login.token:
            if not _SENDABLE.fullmatch(login.token):  # never echoed: it is a secret
                raise errors.InputError(
                    "the API key or token holds a character that cannot be sent (a space, a "
                    "line break or a non-ASCII letter); copy it again exactly as it was shown"
                )
            headers["authorization"] = f"Bearer {login.token}"
        self.url = login.url
        self._headers = headers
        self._transport = transport
        try:
            verify: Any = _ssl_context(login.ca) if login.url.startswith("https://") else True
        except (OSError, ssl.SSLError) as exc:
            raise errors.InputError(f"cannot use the CA certificate {login.ca!r}: {exc}") from exc
        self._ssl = verify if isinstance(verify, ssl.SSLContext) else None
        self._http = httpx.Client(
            base_url=login.url,
            headers=headers,
            verify=verify,
            timeout=_TIMEOUT,
            transport=transport,
            follow_redirects=False,
            # The SDK sends bearer credentials only: it keeps no cookie, so the session
            # cookie the hub sets at sign-in never rides along unasked.
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        )

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc
        raise_for_problem(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    @contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        try:
            with self._http.stream(method, path, **kwargs) as response:
                if response.status_code >= 400:
                    response.read()
                    raise_for_problem(response)
                yield response
        except httpx.TransportError as exc:
            raise _unreachable(self.url, exc) from exc

    @contextmanager
    def download(
        self, path: str, params: dict[str, str], chunk: int = 1 << 20
    ) -> Iterator[Iterator[bytes]]:
        """A large response body as chunks of up to ``chunk`` bytes.

        Read with the standard library's HTTP client, whose reads of a whole chunk run in
        C: httpx hands a download over one TLS record (16 KiB) per call, which costs
        three times the CPU. With a custom transport (tests), httpx is used.
        """
        if self._transport is not None:
            with self.stream("GET", path, params=params) as streamed:
                yield streamed.iter_bytes(chunk)
            return
        parts = urlsplit(self.url)
        host, port = parts.hostname or "", parts.port
        connection: http.client.HTTPConnection
        if parts.scheme == "https":
            connection = http.client.HTTPSConnection(
                host, port, context=self._ssl, timeout=_TIMEOUT.read
            )
        else:
            connection = http.client.HTTPConnection(host, port, timeout=_TIMEOUT.read)
        try:
            try:
                connection.request(
                    "GET",
                    f"{parts.path.rstrip('/')}{path}?{urlencode(params)}",
                    headers=self._headers,
                )
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise _unreachable(self.url, exc) from exc
            if response.status >= 400:
                raw = response.read(1 << 16)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                _raise_problem(response.status, body)
            yield _chunks(response, chunk, self.url)
        finally:
            connection.close()


def _chunks(response: http.client.HTTPResponse, chunk: int, url: str) -> Iterator[bytes]:
    expected = response.getheader("content-length")
    done = 0
    try:
        while data := response.read(chunk):
            done += len(data)
            yield data
    except (OSError, http.client.HTTPException) as exc:
        raise _unreachable(url, exc) from exc
    if expected is not None and expected.isdigit() and done != int(expected):
        raise errors.HubUnavailableError(
            f"the hub at {url} ended a download after {done} of {expected} bytes"
        )


def _unreachable(url: str, exc: Exception) -> errors.BastionError:
    if isinstance(exc, httpx.LocalProtocolError):
        # The request could not be written; its text may quote a header, credentials and all.
        return errors.InputError(
            f"the request to the hub at {url} could not be sent ({type(exc).__name__}); "
            "check the values given in headers"
        )
    reason = str(exc) or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return errors.HubUnavailableError(
            f"the hub at {url} presented a certificate this client does not trust; "
            "pass its CA with --ca (bastion login) or BASTION_CA"
        )
    return errors.HubUnavailableError(f"cannot reach the hub at {url}: {reason}")
