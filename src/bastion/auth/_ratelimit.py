"""Rate limits and quotas per source address, principal, route and model, over ``limits``.

:class:`RateLimits` is the operator's configuration (validated when built);
:class:`RateLimiter` applies it and answers each request with a :class:`RateDecision`
that carries the ``RateLimit-*`` and ``Retry-After`` headers. Counters live in a
``limits`` storage: ``memory://`` (one process) or ``redis://`` (shared between processes).

Who is counted: an authenticated request counts against its principal; an anonymous one
against its source address (IPv6 per /64, since one client usually holds a whole /64).
Route, model and quota limits count against the same subject. Storage keys are
``bastion:<scope>/<id>/<amount>/<multiples>/<granularity>``; principals and models are
hashed (32 hex characters) so no caller-chosen string can grow a key.

Each request first *tests* every limit that concerns it and *hits* them only if all allow:
a refused request consumes nothing. Two racing requests can both pass the test; the hit
that then exceeds a limit refuses its request, but the hits it already made stay counted
(a small overcount under races, never an undercount). The ``limits`` package reads the
wall clock itself, so these calls take no ``now=``.

Every request passes here, so the common case is kept cheap: the rules, storage keys and
policy lists for a request's (principal or address, route, model) are prepared once and kept
in a bounded table, and with the in-process store and the sliding window (the defaults) the
limiter reads and updates the store's counters itself, in one pass per phase at one instant
and under one lock, with the arithmetic of ``limits``' ``SlidingWindowCounterRateLimiter``
over its ``MemoryStorage`` (:mod:`bastion.auth._ratelimit_memory`). Other stores and
strategies go through ``limits``' strategies.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, get_args
from urllib.parse import urlsplit

from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.strategies import RateLimiter as LimitsStrategy

from bastion.auth._ratelimit_memory import Outcome, Plan, QuietMemoryStorage, Rule, slide
from bastion.errors import HubUnavailableError, InputError, RateLimitedError

__all__ = ["RateDecision", "RateLimiter", "RateLimits", "Strategy", "parse_limit"]

Strategy = Literal["sliding-window", "moving-window", "fixed-window"]
_STRATEGIES: Final[dict[str, type[LimitsStrategy]]] = {
    "sliding-window": SlidingWindowCounterRateLimiter,
    "moving-window": MovingWindowRateLimiter,
    "fixed-window": FixedWindowRateLimiter,
}
_KEY_PREFIX: Final = "bastion"
_MAX_TEXT: Final = 200
_MAX_PARTS: Final = 8
_MAX_AMOUNT: Final = 1_000_000_000
_MAX_WINDOW: Final = 366 * 86_400
_MAX_ENTRIES: Final = 256
#: Prepared requests a limiter keeps (callers choose the names: the table is cleared when
#: full), and the longest name kept there.
_MAX_PLANS: Final = 4096
_MAX_PLAN_TEXT: Final = 256
_PART = re.compile(r"\s*([0-9]{1,10})\s*(?:/|per)\s*([0-9]{1,7})?\s*([A-Za-z]{1,12})\s*", re.I)
_ROUTE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: ``ns/model`` for the hub's routes, ``deployment:NAME`` for the gateway's.
_MODEL = re.compile(
    r"(?:[A-Za-z0-9][A-Za-z0-9._-]{0,127}/|deployment:)[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
)
_ALL = "*"
_LIMIT_HINT = 'write e.g. "10/minute", "100 per hour" or "5/second;100/minute"'


def parse_limit(text: object, *, where: str) -> tuple[RateLimitItem, ...]:
    """The windows of a limit string such as ``"5/second;100/minute"``; InputError if unusable.

    ``where`` names the setting in the error. Amounts run from 1 to 10⁹ and windows from one
    second to a year; a string holds at most eight windows.
    """
    if not isinstance(text, str) or not text.strip() or len(text) > _MAX_TEXT:
        raise InputError(f"rate limit {where} must be a limit string; {_LIMIT_HINT}")
    parts = re.split(r"[,;|]", text)
    if len(parts) > _MAX_PARTS:
        raise InputError(f"rate limit {where} has more than {_MAX_PARTS} windows; merge some")
    items: dict[tuple[int, int], RateLimitItem] = {}
    for part in parts:
        match = _PART.fullmatch(part)
        if match is None or (match.group(2) is not None and int(match.group(2)) == 0):
            raise InputError(f"rate limit {where} = {text[:64]!r} is not a limit; {_LIMIT_HINT}")
        try:
            (item,) = parse_many(part)
        except ValueError as exc:
            raise InputError(
                f"rate limit {where}: {match.group(3)!r} is not a unit of time; use second, "
                "minute, hour, day, month or year"
            ) from exc
        if not 1 <= item.amount <= _MAX_AMOUNT:
            raise InputError(f"rate limit {where} must allow from 1 to {_MAX_AMOUNT} requests")
        if item.get_expiry() > _MAX_WINDOW:
            raise InputError(f"rate limit {where} has a window over a year; shorten it")
        items.setdefault((item.amount, item.get_expiry()), item)
    return tuple(items.values())


def _limit_table(value: object, where: str, key_pattern: re.Pattern[str]) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or len(value) > _MAX_ENTRIES:
        raise InputError(f"rate limit setting {where!r} must be a table of at most {_MAX_ENTRIES}")
    for key, limit in value.items():
        if not isinstance(key, str) or not (key == _ALL or key_pattern.fullmatch(key)):
            raise InputError(f"rate limit setting {where!r}: {str(key)[:64]!r} is not a name")
        parse_limit(limit, where=f"{where}.{key!r}")
    return MappingProxyType(dict(value))


def _check_storage(url: object) -> None:
    if url == "memory://":
        return
    hint = 'use "memory://" or a redis://HOST:PORT/DB or rediss:// URL'
    if not isinstance(url, str) or len(url) > 2048:
        raise InputError(f"rate limit setting 'storage' must be a URL; {hint}")
    try:
        parts = urlsplit(url)
        _ = parts.port
    except ValueError:
        raise InputError(f"rate limit setting 'storage' is not a valid URL; {hint}") from None
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise InputError(f"rate limit setting 'storage' has an unsupported store; {hint}")


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The operator's rate limits: limit strings as ``limits.parse`` reads them.

    ``anonymous`` counts per source address, ``principal`` per authenticated caller;
    ``routes`` and ``quotas`` map a route name (``"*"`` for every route, quotas only) to a
    limit per caller; ``models`` maps ``"ns/model"`` (``"*"``: every model) to a limit per
    caller per model. ``login_failure_limit`` counts failed logins per source address.
    ``storage`` may hold a password, so it is left out of the repr.
    """

    storage: str = field(default="memory://", repr=False)
    strategy: Strategy = "sliding-window"
    anonymous: str = "60/minute"
    principal: str = "1200/minute"
    routes: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    models: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({_ALL: "600/minute"})
    )
    quotas: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    login_failure_limit: str = "20/minute"

    def __post_init__(self) -> None:
        _check_storage(self.storage)
        if self.strategy not in get_args(Strategy):
            raise InputError(
                f"rate limit setting 'strategy' must be one of {', '.join(get_args(Strategy))}"
            )
        for name in ("anonymous", "principal", "login_failure_limit"):
            parse_limit(getattr(self, name), where=repr(name))
        routes = _limit_table(self.routes, "routes", _ROUTE)
        if _ALL in routes:
            raise InputError("rate limit setting 'routes' cannot name '*'; use 'principal'")
        object.__setattr__(self, "routes", routes)
        object.__setattr__(self, "models", _limit_table(self.models, "models", _MODEL))
        object.__setattr__(self, "quotas", _limit_table(self.quotas, "quotas", _ROUTE))

    @property
    def storage_kind(self) -> str:
        """``memory`` or ``redis``: the store, without the URL (which may hold a password)."""
        return "memory" if self.storage == "memory://" else "redis"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RateLimits:
        """Build from a configuration table (``[rate_limits]``); InputError naming what is wrong.

        ``models`` may also be one limit string: the limit for every model.
        """
        if not isinstance(data, Mapping):
            raise InputError("the rate limits must be a table of settings")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(str(key)[:64] for key in data if key not in known)
        if unknown:
            raise InputError(
                f"unknown rate limit setting(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(sorted(known))}"
            )
        kwargs: dict[str, Any] = dict(data)
        if isinstance(kwargs.get("models"), str):
            kwargs["models"] = {_ALL: kwargs["models"]}
        return cls(**kwargs)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _source_id(source_ip: str) -> str:
    """An address as counted: IPv4 as is, IPv6 by its /64; anything else hashed."""
    if not isinstance(source_ip, str):
        raise InputError("source_ip must be a string")
    return _counted_as(source_ip)


@functools.lru_cache(maxsize=4096)  # every request asks, mostly for the same few addresses
def _counted_as(source_ip: str) -> str:
    try:
        address = ipaddress.ip_address(source_ip) if len(source_ip) <= 64 else None
    except ValueError:
        address = None
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return f"{ipaddress.IPv6Address(int(address) >> 64 << 64)}/64"
    return "h." + _digest(source_ip)


@dataclass(frozen=True, slots=True)
class RateDecision:
    """The answer for one request, described by its tightest limit (least remaining).

    When refused, the limit described is the refusing one that frees up last, and
    ``retry_after`` (at least 1) is how many seconds to wait. ``window`` is that limit's
    window in seconds; ``policies`` lists every applied ``(limit, window)``, this one first.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: int
    retry_after: int | None
    scope: str
    window: int
    policies: tuple[tuple[int, int], ...] = ()

    def headers(self) -> list[tuple[str, str]]:
        """The ``RateLimit-*`` fields (IETF draft), plus ``Retry-After`` if refused."""
        policies = self.policies or ((self.limit, self.window),)
        headers = [
            ("RateLimit-Limit", str(self.limit)),
            ("RateLimit-Remaining", str(self.remaining)),
            ("RateLimit-Reset", str(self.reset_after)),
            ("RateLimit-Policy", _policy_text(policies)),
        ]
        if self.retry_after is not None:
            headers.append(("Retry-After", str(self.retry_after)))
        return headers

    def error(self) -> RateLimitedError:
        """The error to raise for a refused request (HTTP 429)."""
        wait = self.retry_after or 1
        if self.scope == "login":
            return RateLimitedError(
                f"too many failed logins or bad credentials from this address; wait {wait} seconds",
                retry_after=wait,
            )
        return RateLimitedError(
            f"too many requests ({self.scope}: {self.limit} per {self.window} seconds); "
            f"retry after {wait} seconds",
            retry_after=wait,
        )


@functools.lru_cache(maxsize=1024)
def _policy_text(policies: tuple[tuple[int, int], ...]) -> str:
    """The ``RateLimit-Policy`` value: a limiter only ever builds a few distinct ones."""
    return ", ".join(f"{limit};w={window}" for limit, window in policies)


#: Past this many recently failing addresses, every login check asks the store.
_MAX_FAILING = 100_000


def _open_storage(url: str) -> Storage:
    if url == "memory://":
        return QuietMemoryStorage()
    options = {"socket_connect_timeout": 2.0, "socket_timeout": 2.0}
    try:
        storage = storage_from_string(url, wrap_exceptions=True, **options)
    except (ConfigurationError, ValueError):  # the message may hold the URL and its password
        raise InputError("the rate-limit storage cannot be opened; check its URL") from None
    if not isinstance(storage, Storage):
        raise InputError("the rate-limit storage must be a synchronous store")
    return storage


class RateLimiter:
    """Applies :class:`RateLimits` to requests. Synchronous: each call is a few store operations.

    ``storage`` overrides the store named by the configuration (tests pass one with their own
    key prefix). For ``redis://`` call it from a worker thread. A store that cannot be reached
    refuses the request with :class:`HubUnavailableError` (fail closed).
    """

    def __init__(
        self,
        config: RateLimits,
        *,
        storage: Storage | None = None,
        memory_sweep_seconds: float = 60.0,
    ) -> None:
        self._storage = storage if storage is not None else _open_storage(config.storage)
        try:
            self._strategy = _STRATEGIES[config.strategy](self._storage)
        except NotImplementedError:
            raise InputError(
                f"the rate-limit store does not support strategy {config.strategy!r}"
            ) from None
        self._errors: tuple[type[Exception], ...] = (StorageError,)
        if not isinstance(self._storage, MemoryStorage):
            base = self._storage.base_exceptions
            self._errors += base if isinstance(base, tuple) else (base,)
        self._swept: QuietMemoryStorage | None = None
        if isinstance(self._storage, QuietMemoryStorage):
            self._swept = self._storage
        #: The store whose sliding-window counters this limiter works itself (see _slide):
        #: only exactly our own memory store, whose methods no subclass has changed.
        self._sliding: QuietMemoryStorage | None = None
        if type(self._storage) is QuietMemoryStorage and config.strategy == "sliding-window":
            self._sliding = self._storage
        #: Held while working the sliding window or sweeping: sign-in runs in worker threads.
        self._lock = threading.Lock()
        self._plans: dict[tuple[str | None, str | None, str | None, str | None], Plan] = {}
        self._sweep_seconds = memory_sweep_seconds
        self._last_sweep = time.monotonic()
        self._anonymous = self._items("anonymous", config.anonymous)
        #: Addresses with a failed login lately (in-process store only), and how long a
        #: failure is remembered: two of the longest window, as a sliding window counts.
        self._failed: dict[str, float] = {}
        self._principal = self._items("principal", config.principal)
        self._login = self._items("login", config.login_failure_limit)
        self._routes = {r: self._items(f"route:{r}", t) for r, t in config.routes.items()}
        self._quotas = {r: self._items(f"quota:{r}", t) for r, t in config.quotas.items()}
        self._models = {m: self._items("model", t) for m, t in config.models.items()}
        self._login_memory = 2 * max(item.get_expiry() for _, item, _ in self._login)
        self._clean_login: RateDecision | None = None
        if self._swept is not None:  # the answer for an address that never failed
            self._clean_login = self._decide(Plan(_bind(self._login, "none")), consume=False)

    @staticmethod
    def _items(scope: str, text: str) -> tuple[Rule, ...]:
        namespace = f"{_KEY_PREFIX}:{scope}"
        return tuple(
            (scope, type(item)(item.amount, item.multiples, namespace=namespace), "")
            for item in parse_limit(text, where=scope)
        )

    @property
    def in_process(self) -> bool:
        """Whether the store is this process's memory: answered at once, without a thread."""
        return isinstance(self._storage, MemoryStorage)

    def check(
        self, *, principal: str | None, source_ip: str, route: str | None, model: str | None
    ) -> RateDecision:
        """Test every limit that concerns this request, then count it if all allow."""
        memo = (principal, source_ip if principal is None else None, route, model)
        try:
            plan = self._plans.get(memo)
        except TypeError:  # an unhashable argument: building the plan says what is wrong
            plan = None
        if plan is None:
            plan = Plan(self._rules(principal, source_ip, route, model))
            if all(p is None or (type(p) is str and len(p) <= _MAX_PLAN_TEXT) for p in memo):
                if len(self._plans) >= _MAX_PLANS:
                    self._plans.clear()
                self._plans[memo] = plan
        return self._decide(plan, consume=True)

    def _rules(
        self, principal: str | None, source_ip: str, route: str | None, model: str | None
    ) -> list[Rule]:
        if principal is None:
            subject = _source_id(source_ip)
            rules = _bind(self._anonymous, subject)
        else:
            subject = "p." + _digest(principal)
            rules = _bind(self._principal, subject)
        if route is not None and route in self._routes:
            rules += _bind(self._routes[route], subject)
        if model is not None:
            per_model = self._models.get(model, self._models.get(_ALL, ()))
            rules += _bind(per_model, f"{subject}:{_digest(model)}")
        for name in (route, _ALL):
            if name is not None and name in self._quotas:
                rules += _bind(self._quotas[name], subject)
        return rules

    def check_login_source(self, source_ip: str) -> RateDecision:
        """Whether this address may try to log in now (counts nothing).

        With the in-process store, an address with no failure in the last two windows is
        allowed without asking the store: every credentialed request asks this first.
        """
        subject = _source_id(source_ip)
        if self._clean_login is not None and len(self._failed) < _MAX_FAILING:
            last = self._failed.get(subject)
            if last is None or time.monotonic() - last > self._login_memory:
                return self._clean_login
        return self._decide(Plan(_bind(self._login, subject)), consume=False)

    def hit_login_failure(self, source_ip: str) -> RateDecision:
        """Count a failed login from this address; the decision says whether it is now blocked."""
        subject = _source_id(source_ip)
        self._failed[subject] = time.monotonic()
        return self._decide(Plan(_bind(self._login, subject)), consume=True)

    def _decide(self, plan: Plan, *, consume: bool) -> RateDecision:
        if self._swept and time.monotonic() - self._last_sweep >= self._sweep_seconds:
            self._sweep(self._swept)
        if self._sliding is not None:
            with self._lock:
                refused, views = slide(self._sliding, plan, consume, time.time())
        else:
            refused, views = self._through_strategy(plan.rules, consume)
        if refused:
            remaining, reset, chosen = max((v for v in views if v[2] in refused), key=_by_reset)
            reset = retry_after = max(1, reset)
        else:
            remaining, reset, chosen = min(views, key=_by_room)
            retry_after = None
        scope, item, _ = plan.rules[chosen]
        return RateDecision(
            allowed=not refused,
            limit=item.amount,
            remaining=remaining,
            reset_after=reset,
            retry_after=retry_after,
            scope=scope,
            window=item.get_expiry(),
            policies=plan.policies(chosen),
        )

    def _sweep(self, store: QuietMemoryStorage) -> None:
        with self._lock:
            self._last_sweep = time.monotonic()
            store.sweep()
            cutoff = self._last_sweep - self._login_memory
            self._failed = {k: at for k, at in self._failed.items() if at >= cutoff}

    def _through_strategy(self, rules: tuple[Rule, ...], consume: bool) -> Outcome:
        """Test, hit and read every rule through the ``limits`` strategy (any store)."""
        strategy = self._strategy
        try:
            refused = {i for i, (_, item, key) in enumerate(rules) if not strategy.test(item, key)}
            if consume and not refused:
                refused = {
                    i for i, (_, item, key) in enumerate(rules) if not strategy.hit(item, key)
                }
            stats = [strategy.get_window_stats(item, key) for _, item, key in rules]
        except self._errors as exc:
            raise HubUnavailableError(
                "the rate-limit store cannot be reached, so the request was refused; "
                "check that the configured Redis server is running"
            ) from exc
        now = time.time()
        views = [
            (
                0 if i in refused else max(0, stat.remaining),
                max(0, math.ceil(stat.reset_time - now)),
                i,
            )
            for i, stat in enumerate(stats)
        ]
        return refused, views


def _by_reset(view: tuple[int, int, int]) -> int:
    return view[1]


def _by_room(view: tuple[int, int, int]) -> tuple[int, int]:
    return view[0], -view[1]


def _bind(rules: tuple[Rule, ...], key: str) -> list[Rule]:
    return [(scope, item, key) for scope, item, _ in rules]
