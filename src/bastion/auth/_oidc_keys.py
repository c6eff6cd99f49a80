"""An issuer's signing keys: discovery, the JWKS, a cache with a TTL and rate-limited refetches.

:class:`IssuerKeys` fetches ``<issuer>/.well-known/openid-configuration``,
checks that its ``issuer`` is the configured one exactly, fetches the
``jwks_uri`` it names and keeps the usable keys for the configured TTL. A
token whose ``kid`` is not cached triggers one refetch (the provider rotated
its keys), at most once per ``jwks_refetch_interval_seconds``: a flood of
tokens with random ``kid`` values cannot make Bastion hammer the provider. A
fetch that fails blocks every fetch for that interval, and tokens are refused
meanwhile (fail closed). Responses are bounded in size, redirects are not
followed, and nothing fetched is trusted further than a public key. Time is
passed in (``now``, seconds since the epoch).
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Final

import httpx

from bastion.auth._jwk import VerifyingKey, parse_jwk
from bastion.auth._jwt import TokenRejectedError, shown
from bastion.auth._oidc_issuer import OidcIssuer, is_acceptable_url
from bastion.errors import InputError

__all__ = ["IssuerKeys"]

logger = logging.getLogger(__name__)

_MAX_KEYS: Final = 64
_MAX_URL: Final = 2048


class _FetchError(InputError):
    """A discovery document or JWKS could not be fetched or used (reason in the message)."""


@dataclass(frozen=True, slots=True)
class _KeySet:
    jwks_uri: str
    keys: tuple[VerifyingKey, ...]
    fetched_at: float

    def fresh(self, now: float, ttl: float) -> bool:
        return 0 <= now - self.fetched_at < ttl

    def find(self, kid: str | None) -> list[VerifyingKey]:
        if kid is None:
            return list(self.keys) if len(self.keys) == 1 else []
        return [k for k in self.keys if k.kid == kid]


def _fetch_json(http: httpx.Client, url: str, issuer: OidcIssuer, what: str) -> dict[str, Any]:
    limit = issuer.max_response_bytes
    headers = {"accept": "application/json", "accept-encoding": "identity"}
    try:
        with http.stream(
            "GET", url, headers=headers, timeout=issuer.http_timeout_seconds
        ) as response:
            if response.status_code != 200:
                raise _FetchError(f"the {what} at {url} answered HTTP {response.status_code}")
            if response.headers.get("content-encoding", "identity").lower() != "identity":
                raise _FetchError(f"the {what} at {url} came compressed, though not asked to")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise _FetchError(f"the {what} at {url} is larger than {limit} bytes")
            body = bytearray()
            for chunk in response.iter_bytes():  # identity: no decompression
                body += chunk
                if len(body) > limit:
                    raise _FetchError(f"the {what} at {url} is larger than {limit} bytes")
    except (httpx.HTTPError, httpx.StreamError) as exc:
        raise _FetchError(f"cannot fetch the {what} at {url}: {type(exc).__name__}") from exc
    try:
        document = json.loads(bytes(body))
    except (ValueError, RecursionError) as exc:
        raise _FetchError(f"the {what} at {url} is not JSON") from exc
    if not isinstance(document, dict):
        raise _FetchError(f"the {what} at {url} is not a JSON object")
    return document


def _jwks_uri(issuer: OidcIssuer, discovery: dict[str, Any]) -> str:
    if discovery.get("issuer") != issuer.issuer:
        raise _FetchError(
            f"the discovery document names issuer {shown(discovery.get('issuer'))}, "
            f"not {issuer.issuer!r}; check the configured issuer URL character for character"
        )
    uri = discovery.get("jwks_uri")
    loopback_ok = issuer.issuer.startswith("http://")
    if (
        not isinstance(uri, str)
        or len(uri) > _MAX_URL
        or not is_acceptable_url(uri, allow_loopback_http=loopback_ok)
    ):
        raise _FetchError(f"the discovery document of {issuer.issuer} has no usable jwks_uri")
    return uri


def _parse_jwks(issuer: OidcIssuer, document: dict[str, Any]) -> tuple[VerifyingKey, ...]:
    entries = document.get("keys")
    if not isinstance(entries, list) or len(entries) > _MAX_KEYS:
        raise _FetchError(f"the JWKS of {issuer.issuer} has no 'keys' list of <= {_MAX_KEYS}")
    keys: list[VerifyingKey] = []
    for entry in entries:
        try:
            keys.append(parse_jwk(entry))
        except InputError as exc:
            logger.info("OIDC issuer %s: JWKS entry skipped: %s", issuer.issuer, exc.message)
    if not keys:
        raise _FetchError(f"the JWKS of {issuer.issuer} holds no usable signing key")
    return tuple(keys)


class KeysNotCached(Exception):
    """Checking the token would need a request to its issuer (asked for ``offline``)."""


class IssuerKeys:
    """The cached keys of one issuer; safe to share between threads."""

    def __init__(self, issuer: OidcIssuer, http: httpx.Client) -> None:
        self._issuer = issuer
        self._http = http
        self._lock = threading.Lock()
        self._current: _KeySet | None = None
        self._last_forced: float | None = None
        self._failed_at: float | None = None
        self._last_error = "never fetched"

    def candidates(
        self, kid: str | None, *, now: float, offline: bool = False
    ) -> list[VerifyingKey]:
        """The keys a token with ``kid`` may be signed with, refetching when needed.

        TokenRejectedError if the keys cannot be had, or none has that ``kid``. With
        ``offline``, KeysNotCached instead of any fetch (the caller retries where it may wait).
        """
        ttl = self._issuer.jwks_cache_ttl_seconds
        current = self._current
        if offline and (current is None or not current.fresh(now, ttl) or not current.find(kid)):
            raise KeysNotCached(self._issuer.issuer)
        if current is None or not current.fresh(now, ttl):
            current = self._refresh(now, stale=current)
            if current is None or not current.fresh(now, ttl):
                raise TokenRejectedError(
                    f"the signing keys of {self._issuer.issuer} cannot be had now "
                    f"(last fetch: {self._last_error})"
                )
        found = current.find(kid)
        if not found and kid is not None:
            refreshed = self._refresh(now, stale=current, forced=True)
            found = refreshed.find(kid) if refreshed is not None else []
        if not found:
            if kid is None:
                raise TokenRejectedError("the token has no 'kid' and the issuer has several keys")
            raise TokenRejectedError(f"no key of {self._issuer.issuer} has kid {shown(kid)}")
        return found

    def _refresh(
        self, now: float, *, stale: _KeySet | None, forced: bool = False
    ) -> _KeySet | None:
        """Fetch anew unless another thread just did, or the rate limit says wait.

        ``forced`` (a ``kid`` not in a fresh key set): at most once per interval.
        After a failed fetch, nothing is fetched for an interval, for any reason.
        """
        interval = self._issuer.jwks_refetch_interval_seconds

        def recent(at: float | None) -> bool:
            return at is not None and 0 <= now - at < interval

        with self._lock:
            if self._current is not stale:
                return self._current
            if recent(self._failed_at) or (forced and recent(self._last_forced)):
                return self._current
            if forced:
                self._last_forced = now
            try:
                self._current = self._fetch(now)
                self._failed_at = None
            except _FetchError as exc:
                self._failed_at = now
                self._last_error = exc.message
                logger.warning("OIDC issuer %s: keys not refreshed: %s", self._issuer.issuer, exc)
            return self._current

    def _fetch(self, now: float) -> _KeySet:
        discovery = _fetch_json(
            self._http, self._issuer.discovery_url, self._issuer, "discovery document"
        )
        uri = _jwks_uri(self._issuer, discovery)
        keys = _parse_jwks(self._issuer, _fetch_json(self._http, uri, self._issuer, "JWKS"))
        logger.info("OIDC issuer %s: %d signing keys fetched", self._issuer.issuer, len(keys))
        return _KeySet(jwks_uri=uri, keys=keys, fetched_at=now)
