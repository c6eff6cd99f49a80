"""The rollout guard: a canary's windowed error rate and p99 latency, and the rollback verdict."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import InputError, UsageError
from bastion.serving._rollout_guard import ArmStats, RolloutGuard, RolloutThresholds


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def guard(clock: FakeClock | None = None, **limits: Any) -> RolloutGuard:
    return RolloutGuard(RolloutThresholds(**limits), clock=clock or FakeClock())


def feed(
    target: RolloutGuard, arm: str, count: int, *, seconds: float = 0.05, failed: bool = False
) -> None:
    for _ in range(count):
        target.record(arm, failed=failed, seconds=seconds)  # type: ignore[arg-type]


def test_default_thresholds() -> None:
    limits = RolloutThresholds()
    assert (limits.window_seconds, limits.min_requests, limits.max_error_rate) == (60.0, 20, 0.05)
    assert (limits.max_p99_seconds, limits.max_p99_ratio) == (None, 2.0)


@pytest.mark.parametrize(
    "limits",
    [
        RolloutThresholds(),
        RolloutThresholds(30, 5, 0.0, 0.25, None),
        RolloutThresholds(window_seconds=0.5, min_requests=1, max_error_rate=1, max_p99_ratio=1),
    ],
)
def test_thresholds_survive_json_and_back(limits: RolloutThresholds) -> None:
    document = json.loads(json.dumps(limits.to_dict()))
    assert document["format"] == 1
    assert RolloutThresholds.from_dict(document) == limits


def test_missing_threshold_fields_take_their_defaults() -> None:
    read = RolloutThresholds.from_dict({"format": 1, "max_error_rate": 0.1})
    assert read == RolloutThresholds(max_error_rate=0.1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"window_seconds": 0}, "window"),
        ({"window_seconds": -5}, "window"),
        ({"window_seconds": 86_401}, "window"),
        ({"window_seconds": float("inf")}, "window"),
        ({"window_seconds": "60"}, "window"),
        ({"min_requests": 0}, "min_requests"),
        ({"min_requests": 2.5}, "min_requests"),
        ({"min_requests": True}, "min_requests"),
        ({"max_error_rate": -0.1}, "max_error_rate"),
        ({"max_error_rate": 1.5}, "max_error_rate"),
        ({"max_error_rate": float("nan")}, "max_error_rate"),
        ({"max_p99_seconds": 0}, "max_p99_seconds must be a number above 0"),
        ({"max_p99_seconds": "fast"}, "max_p99_seconds"),
        ({"max_p99_ratio": 0.5}, "max_p99_ratio must be a number of at least 1"),
        ({"max_p99_ratio": float("inf")}, "max_p99_ratio"),
    ],
)
def test_thresholds_refuse_bad_values(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        RolloutThresholds(**fields)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([], "JSON object"),
        ({}, "'format': 1"),
        ({"format": 2}, "'format': 1"),
        ({"format": 1, "window": 60}, r"unknown fields \['window'\]"),
        ({"format": 1, "min_requests": None}, "min_requests"),
    ],
)
def test_from_dict_refuses_malformed_thresholds(document: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        RolloutThresholds.from_dict(document)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from([*RolloutThresholds().to_dict(), "x"]), children, max_size=7
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=JSON_VALUES)
def test_thresholds_from_arbitrary_json_raise_only_input_errors(document: object) -> None:
    try:
        read = RolloutThresholds.from_dict(document)
    except InputError:
        return
    assert RolloutThresholds.from_dict(read.to_dict()) == read


def test_no_verdict_below_the_minimum_number_of_candidate_requests() -> None:
    target = guard()
    feed(target, "candidate", 19, failed=True)
    assert target.verdict() is None
    feed(target, "candidate", 1, failed=True)
    assert target.verdict() is not None


def test_a_candidate_failing_too_often_is_rolled_back() -> None:
    target = guard()
    feed(target, "candidate", 22)
    feed(target, "candidate", 3, failed=True)
    feed(target, "stable", 100, failed=True)  # the stable version's failures do not count
    assert target.verdict() == "candidate error rate 12.0% over 60 s (25 requests) exceeds 5.0%"


def test_an_error_rate_at_the_threshold_is_fine() -> None:
    target = guard()
    feed(target, "candidate", 19)
    feed(target, "candidate", 1, failed=True)
    assert target.verdict() is None


def test_an_absolute_p99_cap() -> None:
    target = guard(max_p99_seconds=0.5, max_p99_ratio=None)
    feed(target, "candidate", 99, seconds=0.1)
    feed(target, "candidate", 1, seconds=3.0)
    assert target.verdict() is None  # the p99 of 100 requests is the 99th: 0.1 s
    feed(target, "candidate", 1, seconds=3.0)
    verdict = target.verdict()
    assert verdict is not None
    assert verdict.startswith("candidate p99 latency 2.9")
    assert verdict.endswith("s over 60 s (101 requests) exceeds 500.0 ms")


def test_a_p99_far_above_the_stable_versions() -> None:
    target = guard()
    feed(target, "candidate", 30, seconds=0.3)
    assert target.verdict() is None  # the stable version has too few requests to compare
    feed(target, "stable", 30, seconds=0.1)
    verdict = target.verdict()
    assert verdict is not None
    pattern = (
        r"candidate p99 latency (\d+\.\d) ms over 60 s \(30 requests\) is 3\.0x the stable "
        r"version's (\d+\.\d) ms, above 2x"
    )
    found = re.fullmatch(pattern, verdict)
    assert found is not None, verdict
    assert float(found[1]) == pytest.approx(300, rel=0.02)
    assert float(found[2]) == pytest.approx(100, rel=0.02)


def test_a_p99_within_the_ratio_or_with_the_ratio_off_is_fine() -> None:
    within = guard()
    feed(within, "stable", 30, seconds=0.1)
    feed(within, "candidate", 30, seconds=0.18)
    assert within.verdict() is None
    unchecked = guard(max_p99_ratio=None)
    feed(unchecked, "stable", 30, seconds=0.1)
    feed(unchecked, "candidate", 30, seconds=5.0)
    assert unchecked.verdict() is None


def test_requests_leave_the_window_as_time_passes() -> None:
    clock = FakeClock(1000.0)
    target = guard(clock)
    feed(target, "candidate", 25, failed=True)
    clock.now = 1059.5
    assert target.verdict() is not None
    feed(target, "candidate", 25)
    clock.now = 1060.5
    assert target.stats("candidate") == ArmStats(25, 0, pytest.approx(0.05, rel=0.03))  # type: ignore[arg-type]
    assert target.verdict() is None
    clock.now = 1200.0
    assert target.stats("candidate") == ArmStats(0, 0, None)


def test_a_steady_stream_keeps_only_the_last_window() -> None:
    clock = FakeClock(0.0)
    target = guard(clock, window_seconds=10)
    for second in range(500):
        clock.now = second + 0.5
        target.record("candidate", failed=second % 2 == 0, seconds=0.01)
    assert target.stats("candidate").requests == 10
    assert target.stats("candidate").failures == 5


def test_a_long_window_is_kept_in_coarser_slots() -> None:
    clock = FakeClock(0.0)
    target = guard(clock, window_seconds=3600)
    feed(target, "candidate", 3)
    clock.now = 1800.0
    feed(target, "candidate", 4)
    clock.now = 3590.0
    assert target.stats("candidate").requests == 7
    clock.now = 3700.0
    assert target.stats("candidate").requests == 4


def test_reset_forgets_everything() -> None:
    target = guard()
    feed(target, "candidate", 30, failed=True)
    feed(target, "stable", 30)
    target.reset()
    assert target.verdict() is None
    assert target.stats("stable") == ArmStats(0, 0, None)
    feed(target, "candidate", 20, failed=True)
    assert target.verdict() is not None


def test_record_refuses_unknown_arms_and_bad_latencies() -> None:
    target = guard()
    with pytest.raises(UsageError, match="stable or candidate"):
        target.record("shadow", failed=False, seconds=0.1)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="stable or candidate"):
        target.stats("canary")  # type: ignore[arg-type]
    for seconds in (-0.1, math.nan):
        with pytest.raises(UsageError, match="0 seconds or more"):
            target.record("stable", failed=False, seconds=seconds)


def test_extreme_latencies_are_counted() -> None:
    target = guard()
    target.record("stable", failed=False, seconds=0.0)
    target.record("stable", failed=False, seconds=math.inf)
    stats = target.stats("stable")
    assert stats.requests == 2
    assert stats.p99_seconds is not None
    assert stats.p99_seconds > 1e4


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.floats(1e-4, 100.0) | st.sampled_from([0.01, 0.5]),
        min_size=1,
        max_size=400,
    )
)
def test_p99_is_within_a_few_percent_of_numpys(samples: list[float]) -> None:
    target = guard()
    for seconds in samples:
        target.record("candidate", failed=False, seconds=seconds)
    expected = float(np.percentile(samples, 99, method="inverted_cdf"))
    assert target.stats("candidate").p99_seconds == pytest.approx(expected, rel=0.025)
