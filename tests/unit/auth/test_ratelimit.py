"""Rate limits and quotas: counting, refusals and headers, configuration, bounded memory.

Behaviour tests run against ``limits``' memory store and, when ``BASTION_TEST_REDIS_URL``
names a server (``make test`` sets it), against real Redis with a key prefix of their own
that is deleted afterwards. Windows are an hour or a day, so no test straddles a window
boundary; only the expiry tests use one-second windows and wait for them to pass.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from limits.storage import MemoryStorage, RedisStorage, Storage, storage_from_string

from bastion.auth._ratelimit import (
    _MAX_PLANS,
    RateDecision,
    RateLimiter,
    RateLimits,
    _source_id,
    parse_limit,
)
from bastion.auth._ratelimit_memory import QuietMemoryStorage
from bastion.errors import HubUnavailableError, InputError, RateLimitedError

REDIS_ENV = "BASTION_TEST_REDIS_URL"
MakeLimiter = Callable[..., RateLimiter]
STRATEGIES = ["sliding-window", "moving-window", "fixed-window"]


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> Iterator[Storage]:
    """A fresh memory store, or the test Redis server under a key prefix of this test's own."""
    if request.param == "memory":
        yield QuietMemoryStorage()
        return
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set; `make test` sets it (scripts/with-test-services)")
    redis_store = storage_from_string(
        url, key_prefix=f"bastion-test-{secrets.token_hex(8)}", wrap_exceptions=True
    )
    assert isinstance(redis_store, RedisStorage)
    try:
        yield redis_store
    finally:
        redis_store.reset()


@pytest.fixture
def make(storage: Storage) -> MakeLimiter:
    def build(**settings: Any) -> RateLimiter:
        return RateLimiter(RateLimits.from_dict(settings), storage=storage)

    return build


def anonymous(limiter: RateLimiter, ip: str = "203.0.113.7") -> RateDecision:
    return limiter.check(principal=None, source_ip=ip, route=None, model=None)


def request(
    limiter: RateLimiter,
    principal: str = "alice",
    *,
    route: str | None = None,
    model: str | None = None,
    ip: str = "198.51.100.1",
) -> RateDecision:
    return limiter.check(principal=principal, source_ip=ip, route=route, model=model)


# --- counting and refusing --------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_requests_are_allowed_up_to_the_limit_then_refused(
    make: MakeLimiter, strategy: str
) -> None:
    limiter = make(strategy=strategy, anonymous="3/hour")
    assert [anonymous(limiter).remaining for _ in range(3)] == [2, 1, 0]
    refused = anonymous(limiter)
    assert not refused.allowed
    assert (refused.limit, refused.remaining, refused.window) == (3, 0, 3600)
    assert refused.scope == "anonymous"
    assert refused.retry_after is not None
    assert 1 <= refused.retry_after <= 3600
    assert refused.reset_after == refused.retry_after
    headers = dict(refused.headers())
    assert headers == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": str(refused.retry_after),
        "RateLimit-Policy": "3;w=3600",
        "Retry-After": str(refused.retry_after),
    }
    assert not anonymous(limiter).allowed  # a refused request is refused again, not reset


def test_an_allowed_decision_has_no_retry_after(make: MakeLimiter) -> None:
    decision = anonymous(make(anonymous="10/hour"))
    assert decision.allowed
    assert decision.retry_after is None
    names = [name for name, _ in decision.headers()]
    assert names == [
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "RateLimit-Policy",
    ]
    assert 0 <= decision.reset_after <= 3600


def test_source_addresses_are_counted_apart_and_ipv6_per_64(make: MakeLimiter) -> None:
    limiter = make(anonymous="1/hour")
    assert anonymous(limiter, "192.0.2.1").allowed
    assert not anonymous(limiter, "192.0.2.1").allowed
    assert not anonymous(limiter, "::ffff:192.0.2.1").allowed  # the same IPv4 client
    assert anonymous(limiter, "192.0.2.2").allowed
    assert anonymous(limiter, "2001:db8:1:2::1").allowed
    assert not anonymous(limiter, "2001:db8:1:2:ffff::9").allowed  # same /64
    assert anonymous(limiter, "2001:db8:1:3::1").allowed
    assert anonymous(limiter, "testclient").allowed  # not an address: counted by its name
    assert not anonymous(limiter, "testclient").allowed


def test_principals_are_counted_apart_from_each_other_and_from_addresses(
    make: MakeLimiter,
) -> None:
    limiter = make(principal="2/hour", anonymous="1/hour")
    assert request(limiter, "alice").allowed
    assert request(limiter, "alice").allowed
    refused = request(limiter, "alice")
    assert (refused.allowed, refused.scope) == (False, "principal")
    assert request(limiter, "bob").allowed
    assert anonymous(limiter, "198.51.100.1").allowed  # alice's address is not alice


def test_a_route_limit_counts_per_caller_on_that_route_only(make: MakeLimiter) -> None:
    limiter = make(principal="100/hour", routes={"version.push": "2/hour"})
    first = request(limiter, route="version.push")
    assert (first.scope, first.limit, first.remaining) == ("route:version.push", 2, 1)
    assert request(limiter, route="version.push").allowed
    refused = request(limiter, route="version.push")
    assert (refused.allowed, refused.scope) == (False, "route:version.push")
    assert request(limiter, "bob", route="version.push").allowed
    other = request(limiter, route="version.list")
    assert (other.allowed, other.scope, other.remaining) == (True, "principal", 97)


def test_route_limits_apply_per_address_to_anonymous_requests(make: MakeLimiter) -> None:
    limiter = make(anonymous="100/hour", routes={"session.create": "2/hour"})

    def login(ip: str) -> RateDecision:
        return limiter.check(principal=None, source_ip=ip, route="session.create", model=None)

    assert login("192.0.2.1").allowed
    assert login("192.0.2.1").allowed
    assert login("192.0.2.1").scope == "route:session.create"
    assert not login("192.0.2.1").allowed
    assert login("192.0.2.2").allowed


def test_a_refused_request_consumes_nothing(make: MakeLimiter) -> None:
    limiter = make(principal="5/hour", routes={"version.push": "1/hour"})
    assert request(limiter, route="version.push").allowed
    for _ in range(3):
        assert not request(limiter, route="version.push").allowed
    assert [request(limiter).allowed for _ in range(5)] == [True] * 4 + [False]


def test_models_are_limited_per_caller_and_per_model(make: MakeLimiter) -> None:
    limiter = make(models={"*": "2/hour", "acme/llm": "1/hour"})
    assert request(limiter, model="acme/vision").scope == "model"
    assert request(limiter, model="acme/vision").allowed
    assert not request(limiter, model="acme/vision").allowed
    assert request(limiter, model="acme/other").allowed
    assert request(limiter, "bob", model="acme/vision").allowed
    assert request(limiter, model="acme/llm").allowed
    assert not request(limiter, model="acme/llm").allowed
    assert request(limiter).allowed  # no model named: no model limit


def test_a_single_model_limit_string_applies_to_every_model(make: MakeLimiter) -> None:
    limiter = make(models="1/hour")
    assert request(limiter, model="a/b").allowed
    assert not request(limiter, model="a/b").allowed
    assert request(limiter, model="a/c").allowed
    assert RateLimits.from_dict({"models": {}}).models == {}


def test_quotas_apply_over_long_windows(make: MakeLimiter) -> None:
    limiter = make(quotas={"version.pull": "2/day", "*": "4/day"})
    assert request(limiter, route="version.pull").allowed
    assert request(limiter, route="version.pull").allowed
    refused = request(limiter, route="version.pull")
    assert (refused.allowed, refused.scope, refused.window) == (False, "quota:version.pull", 86400)
    assert refused.retry_after is not None
    assert refused.retry_after >= 1
    assert request(limiter, route="version.show").allowed
    assert request(limiter, route="version.list").allowed
    everything = request(limiter, route="version.show")
    assert (everything.allowed, everything.scope) == (False, "quota:*")


def test_the_tightest_limit_is_described_and_every_policy_listed(make: MakeLimiter) -> None:
    limiter = make(principal="100/hour", routes={"alias.set": "5/hour;3/day"})
    decision = request(limiter, route="alias.set", model="a/b")
    assert (decision.scope, decision.limit, decision.remaining, decision.window) == (
        "route:alias.set",
        3,
        2,
        86400,
    )
    assert decision.policies[0] == (3, 86400)
    assert set(decision.policies) == {(3, 86400), (5, 3600), (100, 3600), (600, 60)}
    assert dict(decision.headers())["RateLimit-Policy"].startswith("3;w=86400, ")


def test_the_error_for_a_refusal_is_a_rate_limited_error(make: MakeLimiter) -> None:
    limiter = make(principal="1/hour")
    request(limiter, "s3cr3t-principal-name")
    error = request(limiter, "s3cr3t-principal-name").error()
    assert isinstance(error, RateLimitedError)
    assert error.code == "rate_limited"
    assert error.retry_after >= 1
    assert "s3cr3t" not in error.message
    assert "retry after" in error.message


# --- failed logins ----------------------------------------------------------------------------


def test_failed_logins_are_limited_per_source_address(make: MakeLimiter) -> None:
    limiter = make(login_failure_limit="3/hour", anonymous="100/hour")
    ip = "192.0.2.50"
    for _ in range(5):
        assert limiter.check_login_source(ip).remaining == 3  # checking counts nothing
    assert [limiter.hit_login_failure(ip).allowed for _ in range(4)] == [True] * 3 + [False]
    blocked = limiter.check_login_source(ip)
    assert (blocked.allowed, blocked.scope) == (False, "login")
    assert blocked.retry_after is not None
    assert blocked.retry_after >= 1
    assert "failed logins" in blocked.error().message
    assert limiter.check_login_source("192.0.2.51").allowed
    assert anonymous(limiter, ip).allowed  # ordinary requests are counted apart


# --- storage ----------------------------------------------------------------------------------


def test_keys_are_namespaced_and_bounded_whatever_the_caller_sends(make: MakeLimiter) -> None:
    limiter = make(routes={"version.push": "10/hour"}, quotas={"*": "10/day"})
    hostile = "x/" * 50_000
    assert request(limiter, hostile, route="version.push", model=hostile, ip=hostile).allowed
    assert anonymous(limiter, hostile).allowed
    assert limiter.hit_login_failure(hostile).allowed
    storage = limiter._storage
    if isinstance(storage, MemoryStorage):
        keys = list(storage.storage)
    else:
        assert isinstance(storage, RedisStorage)
        connection = storage.get_connection()
        keys = [k.decode() for k in connection.scan_iter(f"{storage.key_prefix}:*")]
        assert all(0 < connection.ttl(key) <= 2 * 86400 for key in keys)  # all expire
    assert len(keys) >= 6
    for key in keys:
        assert "bastion:" in key
        assert len(key) < 160
        assert "x/x/" not in key


def _store_size(storage: MemoryStorage) -> int:
    return max(len(storage.storage), len(storage.events), len(storage.locks))


def _flood(limiter: RateLimiter, count: int, *, offset: int = 0) -> None:
    for n in range(offset, offset + count):
        ip = f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
        assert limiter.check(principal=None, source_ip=ip, route=None, model=None).allowed


@pytest.mark.slow
def test_the_memory_store_shrinks_after_a_flood_of_addresses_expires() -> None:
    storage = QuietMemoryStorage()
    limiter = RateLimiter(RateLimits(anonymous="5/second"), storage=storage, memory_sweep_seconds=1)
    _flood(limiter, 100_000)
    assert _store_size(storage) > 1000
    time.sleep(2.2)  # the sliding window keeps a counter for two windows
    anonymous(limiter, "192.0.2.1")  # the sweep runs on the request path
    assert _store_size(storage) <= 2


@pytest.mark.parametrize("strategy", ["fixed-window", "moving-window"])
def test_the_memory_store_shrinks_with_other_strategies(strategy: Any) -> None:
    storage = QuietMemoryStorage()
    config = RateLimits(anonymous="5/second", strategy=strategy)
    limiter = RateLimiter(config, storage=storage, memory_sweep_seconds=0.5)
    _flood(limiter, 10_000)
    assert _store_size(storage) > 100
    time.sleep(1.2)
    anonymous(limiter, "192.0.2.1")
    assert _store_size(storage) <= 2


def test_the_memory_store_starts_no_threads() -> None:
    before = {t.ident for t in threading.enumerate()}
    limiter = RateLimiter(RateLimits(anonymous="1000/second"))
    _flood(limiter, 2_000)
    assert {t.ident for t in threading.enumerate()} <= before


def test_limiters_sharing_the_configured_redis_share_their_counters() -> None:
    url = os.environ.get(REDIS_ENV)
    if not url:
        pytest.skip(f"{REDIS_ENV} is not set; `make test` sets it (scripts/with-test-services)")
    import redis

    config = RateLimits(storage=url, anonymous="2/hour")
    first, second = RateLimiter(config), RateLimiter(config)  # as two hub processes would
    source = f"client-{secrets.token_hex(8)}"
    try:
        assert anonymous(first, source).allowed
        assert anonymous(second, source).remaining == 0
        assert not anonymous(first, source).allowed
    finally:
        connection = redis.Redis.from_url(url)
        pattern = f"LIMITS:{{bastion:anonymous/{_source_id(source)}/*"  # {}: a cluster hash tag
        keys = list(connection.scan_iter(pattern))
        assert keys
        connection.delete(*keys)


def test_an_unreachable_redis_refuses_the_request() -> None:
    config = RateLimits(storage="redis://127.0.0.1:1/0")
    with pytest.raises(HubUnavailableError, match="rate-limit store cannot be reached"):
        anonymous(RateLimiter(config))


# --- configuration ----------------------------------------------------------------------------


def test_defaults() -> None:
    config = RateLimits()
    assert (config.storage, config.strategy) == ("memory://", "sliding-window")
    assert (config.anonymous, config.principal) == ("60/minute", "1200/minute")
    assert (config.models, config.routes, config.quotas) == ({"*": "600/minute"}, {}, {})
    assert config.login_failure_limit == "20/minute"
    assert config.storage_kind == "memory"
    assert RateLimits.from_dict({}) == config


def test_a_full_configuration_is_read() -> None:
    config = RateLimits.from_dict(
        {
            "storage": "redis://:hunter2@redis.internal:6379/3",
            "strategy": "moving-window",
            "anonymous": "30 per minute",
            "principal": "5/second;1000/hour",
            "routes": {"version.push": "60/hour", "session.create": "10/minute"},
            "models": {"*": "600/minute", "acme/llm": "20/minute"},
            "quotas": {"version.pull": "10000/day"},
            "login_failure_limit": "10/minute",
        }
    )
    assert config.storage_kind == "redis"
    assert config.routes == {"version.push": "60/hour", "session.create": "10/minute"}
    assert config.models["acme/llm"] == "20/minute"
    assert "hunter2" not in repr(config)
    with pytest.raises(TypeError):
        config.routes["x"] = "1/hour"  # type: ignore[index]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"anonymus": "1/hour"}, "unknown rate limit setting"),
        ({"strategy": "token-bucket"}, "must be one of"),
        ({"storage": "memcached://localhost:11211"}, "unsupported store"),
        ({"storage": "redis://"}, "unsupported store"),
        ({"storage": "redis://h:99999/0"}, "not a valid URL"),
        ({"storage": 5}, "must be a URL"),
        ({"anonymous": "ten per minute"}, "'anonymous'.*not a limit"),
        ({"anonymous": "0/minute"}, "from 1 to"),
        ({"anonymous": "10000000000/minute"}, "not a limit"),
        ({"principal": "5/0 seconds"}, "not a limit"),
        ({"principal": "5/fortnight"}, "not a unit of time"),
        ({"principal": "5/2 years"}, "over a year"),
        ({"principal": ";".join(["1/hour"] * 9)}, "more than 8"),
        ({"principal": ""}, "limit string"),
        ({"principal": 60}, "limit string"),
        ({"routes": {"version.push": "lots"}}, "routes.'version.push'"),
        ({"routes": {"Version Push": "1/hour"}}, "not a name"),
        ({"routes": {"*": "1/hour"}}, "cannot name"),
        ({"routes": ["version.push"]}, "must be a table"),
        ({"models": {"no-namespace": "1/hour"}}, "not a name"),
        ({"models": 5}, "must be a table"),
        ({"quotas": {"version.pull": "1/eon"}}, "not a unit"),
    ],
)
def test_bad_settings_are_input_errors_saying_where(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        RateLimits.from_dict(data)


def test_a_storage_url_with_a_password_never_appears_in_errors() -> None:
    with pytest.raises(InputError) as caught:
        RateLimits.from_dict({"storage": "mongodb://user:hunter2@db:27017"})
    assert "hunter2" not in str(caught.value)


def test_limit_strings_are_read_as_limits_reads_them() -> None:
    (item,) = parse_limit("100 per hour", where="x")
    assert (item.amount, item.get_expiry()) == (100, 3600)
    windows = parse_limit("5/second; 100/2 minutes, 5/second", where="x")
    assert [(i.amount, i.get_expiry()) for i in windows] == [(5, 1), (100, 120)]


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=30)
    | st.sampled_from(["10/minute", "1/0 hour", "5/second;1/day", "memory://", "redis://h/0"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "storage",
        "strategy",
        "anonymous",
        "principal",
        "routes",
        "models",
        "quotas",
        "login_failure_limit",
        "bogus",
    ]
)


@given(st.dictionaries(_KEYS, _VALUES) | st.dictionaries(st.text(max_size=8), _VALUES))
def test_random_tables_give_limits_or_an_input_error(data: dict[str, Any]) -> None:
    try:
        config = RateLimits.from_dict(data)
    except InputError:
        return
    RateLimiter(config if config.storage == "memory://" else RateLimits(), storage=MemoryStorage())


@given(
    st.text(max_size=250)
    | st.from_regex(r"\s*[0-9]{1,12}\s*(/|per)\s*[0-9]{0,8}\s*[a-z]{1,9}(;[0-9]{1,4}/[a-z]+)*")
)
def test_random_limit_strings_give_windows_or_an_input_error(text: str) -> None:
    try:
        windows = parse_limit(text, where="x")
    except InputError:
        return
    assert 1 <= len(windows) <= 8
    assert all(1 <= w.amount <= 10**9 and 1 <= w.get_expiry() <= 366 * 86400 for w in windows)


@given(st.integers(1, 10**9), st.integers(1, 59), st.sampled_from(["second", "minute", "hour"]))
def test_generated_limits_read_back_exactly(amount: int, multiples: int, unit: str) -> None:
    (item,) = parse_limit(f"{amount}/{multiples} {unit}s", where="x")
    seconds = {"second": 1, "minute": 60, "hour": 3600}[unit]
    assert (item.amount, item.get_expiry()) == (amount, multiples * seconds)


# --- the in-process sliding window -----------------------------------------------------------


class _LimitsPath(QuietMemoryStorage):
    """The in-process store, but not exactly it: the limiter leaves it to ``limits``."""


class _Clock:
    """A wall clock that moves only when told; ``limits`` reads ``time.time`` itself."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_only_the_in_process_sliding_window_is_worked_directly() -> None:
    store = QuietMemoryStorage()
    assert RateLimiter(RateLimits(), storage=store)._sliding is store
    assert RateLimiter(RateLimits())._sliding is not None
    for other in (_LimitsPath(), MemoryStorage()):
        assert RateLimiter(RateLimits(), storage=other)._sliding is None
    for strategy in ("moving-window", "fixed-window"):
        limiter = RateLimiter(RateLimits(strategy=strategy), storage=QuietMemoryStorage())
        assert limiter._sliding is None


_WINDOWS = st.builds("{}/{} seconds".format, st.integers(1, 6), st.sampled_from([1, 3, 10]))
_LIMITS = _WINDOWS | st.builds("{};{}".format, _WINDOWS, _WINDOWS)
_CONFIGS = st.fixed_dictionaries(
    {
        "anonymous": _LIMITS,
        "principal": _LIMITS,
        "login_failure_limit": _LIMITS,
        "routes": st.dictionaries(st.just("a.b"), _LIMITS),
        "models": st.dictionaries(st.sampled_from(["*", "acme/llm"]), _LIMITS),
        "quotas": st.dictionaries(st.sampled_from(["*", "a.b"]), _LIMITS),
    }
)
_STEPS = st.lists(
    st.tuples(
        st.sampled_from([0, 0, 0, 0, 0.001, 0.4, 0.999, 1.3, 2.5, 6.1, 25]),  # seconds first
        st.sampled_from(["check", "check", "check", "login-check", "login-failure"]),
        st.sampled_from([None, "alice"]),
        st.sampled_from(["192.0.2.1", "2001:db8::1"]),
        st.sampled_from([None, "a.b", "*"]),  # "*" binds a "*" quota twice
        st.sampled_from([None, "acme/llm", "acme/vision"]),
    ),
    max_size=80,
)


@settings(max_examples=300)
@given(
    _CONFIGS,
    _STEPS,
    st.floats(1_700_000_000.01, 1_700_000_099.99),
    st.sampled_from([0.0, 60.0]),
)
def test_the_direct_sliding_window_decides_as_limits_does(
    settings: dict[str, Any], steps: list[Any], start: float, sweep: float
) -> None:
    config = RateLimits.from_dict(settings)
    direct, through = QuietMemoryStorage(), _LimitsPath()
    clock = _Clock(start)
    with mock.patch("time.time", clock):
        fast = RateLimiter(config, storage=direct, memory_sweep_seconds=sweep)
        slow = RateLimiter(config, storage=through, memory_sweep_seconds=sweep)
        assert fast._sliding is direct
        assert slow._sliding is None
        for wait, action, principal, ip, route, model in steps:
            clock.now += wait
            for_fast, for_slow = (
                limiter.check(principal=principal, source_ip=ip, route=route, model=model)
                if action == "check"
                else limiter.check_login_source(ip)
                if action == "login-check"
                else limiter.hit_login_failure(ip)
                for limiter in (fast, slow)
            )
            assert for_fast == for_slow
            assert for_fast.headers() == for_slow.headers()
    assert dict(direct.storage) == dict(through.storage)
    assert direct.expirations == through.expirations


def test_a_quota_bound_twice_counts_twice(make: MakeLimiter) -> None:
    limiter = make(quotas={"*": "3/hour"})
    first = request(limiter, route="*")
    assert (first.allowed, first.remaining) == (True, 1)
    second = request(limiter, route="*")
    assert (second.allowed, second.scope, second.remaining) == (False, "quota:*", 0)


def test_prepared_requests_are_bounded_and_long_names_are_not_kept() -> None:
    limiter = RateLimiter(RateLimits(anonymous="5/second"))
    _flood(limiter, _MAX_PLANS + 10)
    assert 0 < len(limiter._plans) <= _MAX_PLANS
    limiter._plans.clear()
    assert request(limiter, "x" * 300).allowed
    assert request(limiter, "alice", model="a/" + "b" * 300).allowed
    assert not limiter._plans
    assert request(limiter, "alice", model="a/b").allowed
    assert len(limiter._plans) == 1


def test_arguments_that_are_not_names_are_refused_as_before(make: MakeLimiter) -> None:
    limiter = make()
    for source in (["192.0.2.1"], 5, None):
        with pytest.raises(InputError, match="source_ip must be a string"):
            limiter.check(principal=None, source_ip=source, route=None, model=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        request(limiter, route=["a.b"])  # type: ignore[arg-type]


def test_concurrent_requests_in_process_are_counted_exactly() -> None:
    limiter = RateLimiter(RateLimits(anonymous="1000/hour"))
    allowed = [0] * 4

    def send(worker: int) -> None:
        for _ in range(400):
            allowed[worker] += anonymous(limiter).allowed

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 1000
    assert anonymous(limiter).remaining == 0
