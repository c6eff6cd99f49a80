"""Routing plans, their transitions, and the per-request choice of versions."""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import ConflictError, InputError
from bastion.serving._routing import (
    MAX_MEMBERS,
    CandidateMode,
    Choice,
    DeploymentRouter,
    RoutePlan,
)

OLD, NEW, OTHER = "med/xray@1.2.0", "med/xray@1.3.0", "med/xray@1.4.0"
POOL = ("med/xray-a@1", "med/xray-b@1", "med/xray-c@1")


def plan(**fields: Any) -> RoutePlan:
    return RoutePlan(**{"stable": (OLD,), **fields})


def test_a_single_plan_serves_one_version() -> None:
    single = plan()
    assert single.mode == "single"
    assert single.versions() == (OLD,)
    assert single.candidate is None
    assert single.canary_percent == 0.0


def test_plans_of_every_kind_are_built_and_list_their_versions() -> None:
    canary = plan(candidate=NEW, candidate_mode="canary", canary_percent=10)
    assert canary.versions() == (OLD, NEW)
    assert canary.canary_percent == 10.0
    assert isinstance(canary.canary_percent, float)
    assert plan(candidate=NEW, candidate_mode="shadow").versions() == (OLD, NEW)
    assert RoutePlan(POOL, "ensemble", "vote").versions() == POOL
    assert RoutePlan(POOL, "switch", "random").versions() == POOL
    weighted = RoutePlan(list(POOL), "switch", "weighted", [3, 1, 1])  # type: ignore[arg-type]
    assert weighted.stable == POOL
    assert weighted.weights == (3.0, 1.0, 1.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stable": ()}, "1 to 16 versions"),
        ({"stable": "med/xray@1"}, "1 to 16 versions"),
        ({"stable": tuple(f"m@{i}" for i in range(MAX_MEMBERS + 1)), "mode": "switch"}, "1 to 16"),
        ({"stable": ("",)}, "not a version"),
        ({"stable": ("med/xray @1",)}, "without spaces"),
        ({"stable": ("a\x00",)}, "not a version"),
        ({"stable": ("x" * 257,)}, "at most 256"),
        ({"stable": (7,)}, "not a version"),
        ({"stable": (OLD, OLD), "mode": "ensemble", "method": "vote"}, "repeated"),
        ({"stable": POOL}, "exactly one version"),
        ({"mode": "cluster"}, "single, switch or ensemble"),
        ({"method": "vote"}, "no method or weights"),
        ({"weights": (1.0,)}, "no method or weights"),
        ({"mode": "switch", "method": "random"}, "at least 2 versions"),
        ({"mode": "ensemble", "method": "vote"}, "at least 2 versions"),
        ({"stable": POOL, "mode": "ensemble"}, "use vote or mean"),
        ({"stable": POOL, "mode": "ensemble", "method": "random"}, "use vote or mean"),
        ({"stable": POOL, "mode": "switch", "method": "mean"}, "use random or weighted"),
        ({"stable": POOL, "mode": "switch", "method": "random", "weights": (1, 1, 1)}, "weighted"),
        ({"stable": POOL, "mode": "switch", "method": "weighted"}, "one weight per version"),
        ({"stable": POOL, "mode": "switch", "method": "weighted", "weights": (1, 1)}, "one weight"),
        ({"stable": POOL, "mode": "switch", "method": "weighted", "weights": (1, 0, 1)}, "above 0"),
        ({"stable": POOL, "mode": "switch", "method": "weighted", "weights": (1, -1, 1)}, "above"),
        (
            {"stable": POOL, "mode": "switch", "method": "weighted", "weights": (1, True, 1)},
            "above",
        ),
        (
            {
                "stable": POOL,
                "mode": "switch",
                "method": "weighted",
                "weights": (1, float("inf"), 1),
            },
            "at most 1e\\+06",
        ),
        ({"stable": POOL, "mode": "switch", "method": "weighted", "weights": (1, 2e6, 1)}, "most"),
        (
            {"stable": POOL, "mode": "ensemble", "method": "vote", "candidate": NEW},
            "single-version",
        ),
        ({"candidate": NEW}, "use canary or shadow"),
        ({"candidate": NEW, "candidate_mode": "blue-green"}, "use canary or shadow"),
        ({"candidate": OLD, "candidate_mode": "shadow"}, "already the stable version"),
        ({"candidate": "", "candidate_mode": "shadow"}, "candidate version"),
        ({"candidate_mode": "canary"}, "needs a candidate version"),
        ({"canary_percent": 5.0}, "needs a candidate version"),
        ({"candidate": NEW, "candidate_mode": "shadow", "canary_percent": 5}, "no canary percent"),
        ({"candidate": NEW, "candidate_mode": "canary"}, "above 0 and below 100"),
        ({"candidate": NEW, "candidate_mode": "canary", "canary_percent": 100}, "below 100"),
        ({"candidate": NEW, "candidate_mode": "canary", "canary_percent": -1}, "above 0"),
        ({"candidate": NEW, "candidate_mode": "canary", "canary_percent": 10.005}, "2 decimals"),
        ({"candidate": NEW, "candidate_mode": "canary", "canary_percent": 1e-9}, "above 0"),
        ({"candidate": NEW, "candidate_mode": "canary", "canary_percent": 99.999999999}, "below"),
        ({"candidate": NEW, "candidate_mode": "canary", "canary_percent": "10"}, "a number"),
        ({"candidate": NEW, "candidate_mode": "canary", "canary_percent": True}, "a number"),
        (
            {"candidate": NEW, "candidate_mode": "canary", "canary_percent": float("nan")},
            "a number",
        ),
    ],
)
def test_plans_refuse_what_cannot_be_served(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        plan(**fields)


def test_canary_percent_keeps_two_decimals() -> None:
    assert plan(candidate=NEW, candidate_mode="canary", canary_percent=0.01).canary_percent == 0.01
    assert (
        plan(candidate=NEW, candidate_mode="canary", canary_percent=99.99).canary_percent == 99.99
    )
    assert (
        plan(candidate=NEW, candidate_mode="canary", canary_percent=12.34).canary_percent == 12.34
    )


PLANS = [
    plan(),
    plan(candidate=NEW, candidate_mode="canary", canary_percent=12.5),
    plan(candidate=NEW, candidate_mode="shadow"),
    RoutePlan(POOL, "switch", "random"),
    RoutePlan(POOL, "switch", "weighted", (0.5, 2.0, 1.0)),
    RoutePlan(POOL, "ensemble", "mean"),
    RoutePlan(POOL[:2], "ensemble", "vote"),
]


@pytest.mark.parametrize("original", PLANS)
def test_a_plan_survives_json_and_back(original: RoutePlan) -> None:
    document = json.loads(json.dumps(original.to_dict()))
    assert document["format"] == 1
    assert RoutePlan.from_dict(document) == original


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ([OLD], "JSON object"),
        ({"stable": [OLD]}, "no 'format'"),
        ({"format": 2, "stable": [OLD]}, "format 2 is not supported"),
        ({"format": True, "stable": [OLD]}, "not supported"),
        ({"format": "1", "stable": [OLD]}, "not supported"),
        ({"format": 1, "stable": [OLD], "colour": "blue"}, "unknown fields \\['colour'\\]"),
        ({"format": 1, "stable": OLD}, "'stable' must be a list"),
        ({"format": 1}, "'stable' must be a list"),
        (
            {
                "format": 1,
                "stable": list(POOL),
                "mode": "switch",
                "method": "weighted",
                "weights": 3,
            },
            "'weights' must be a list",
        ),
        ({"format": 1, "stable": [OLD], "mode": None}, "routing mode"),
    ],
)
def test_from_dict_refuses_malformed_documents(document: object, message: str) -> None:
    with pytest.raises(InputError, match=message):
        RoutePlan.from_dict(document)


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from([1, OLD, NEW, "single", "switch", "ensemble", "vote", "canary", 10.0]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "format",
                    "stable",
                    "mode",
                    "method",
                    "weights",
                    "candidate",
                    "candidate_mode",
                    "canary_percent",
                    "x",
                ]
            ),
            children,
            max_size=8,
        )
    ),
    max_leaves=16,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=JSON_VALUES)
def test_from_dict_on_arbitrary_json_raises_only_input_errors(document: object) -> None:
    try:
        parsed = RoutePlan.from_dict(document)
    except InputError:
        return
    assert RoutePlan.from_dict(parsed.to_dict()) == parsed


VERSIONS = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FF).filter(str.isprintable),
    min_size=1,
    max_size=12,
)


@st.composite
def route_plans(draw: st.DrawFn) -> RoutePlan:
    kind = draw(st.sampled_from(["single", "canary", "shadow", "switch", "weighted", "ensemble"]))
    members = draw(st.lists(VERSIONS, min_size=3, max_size=MAX_MEMBERS + 1, unique=True))
    if kind in ("single", "canary", "shadow"):
        candidate = members[1] if kind != "single" else None
        percent = draw(st.integers(1, 9999)) / 100 if kind == "canary" else 0.0
        mode = cast(CandidateMode | None, None if kind == "single" else kind)
        return RoutePlan(
            (members[0],), candidate=candidate, candidate_mode=mode, canary_percent=percent
        )
    pool = tuple(members[: draw(st.integers(2, MAX_MEMBERS))])
    if kind == "ensemble":
        return RoutePlan(pool, "ensemble", draw(st.sampled_from(["vote", "mean"])))
    if kind == "switch":
        return RoutePlan(pool, "switch", "random")
    weights = draw(st.lists(st.floats(1e-6, 1e6), min_size=len(pool), max_size=len(pool)))
    return RoutePlan(pool, "switch", "weighted", tuple(weights))


@settings(max_examples=150, deadline=None)
@given(original=route_plans())
def test_every_valid_plan_round_trips_through_json(original: RoutePlan) -> None:
    assert RoutePlan.from_dict(json.loads(json.dumps(original.to_dict()))) == original


def test_a_canary_is_added_ramped_and_replaced_by_nothing_else() -> None:
    canary = plan().with_canary(NEW, 10)
    assert (canary.candidate, canary.candidate_mode, canary.canary_percent) == (NEW, "canary", 10)
    assert canary.stable == (OLD,)
    assert canary.with_canary(NEW, 50).canary_percent == 50
    with pytest.raises(ConflictError, match=r"already has canary 'med/xray@1.3.0'.*promote"):
        canary.with_canary(OTHER, 10)
    with pytest.raises(ConflictError, match="already has canary"):
        canary.with_shadow(OTHER)
    with pytest.raises(InputError, match="below 100"):
        plan().with_canary(NEW, 100)


def test_a_shadow_can_become_a_canary_and_back() -> None:
    shadow = plan().with_shadow(NEW)
    assert (shadow.candidate, shadow.candidate_mode, shadow.canary_percent) == (NEW, "shadow", 0)
    canary = shadow.with_canary(NEW, 5)
    assert canary.candidate_mode == "canary"
    assert canary.canary_percent == 5
    assert canary.with_shadow(NEW) == shadow


def test_a_candidate_must_differ_from_the_stable_version() -> None:
    with pytest.raises(ConflictError, match="already the stable version"):
        plan().with_canary(OLD, 10)
    with pytest.raises(ConflictError, match="already the stable version"):
        plan().with_shadow(OLD)
    with pytest.raises(InputError, match="version"):
        plan().with_shadow("")


@pytest.mark.parametrize(
    "pool", [RoutePlan(POOL, "ensemble", "vote"), RoutePlan(POOL, "switch", "random")]
)
def test_canary_and_shadow_apply_to_single_plans_only(pool: RoutePlan) -> None:
    with pytest.raises(ConflictError, match="single-version deployments only"):
        pool.with_canary(NEW, 10)
    with pytest.raises(ConflictError, match="single-version deployments only"):
        pool.with_shadow(NEW)


def test_promotion_makes_the_candidate_the_only_version() -> None:
    assert plan().with_canary(NEW, 10).promoted() == RoutePlan((NEW,))
    assert plan().with_shadow(NEW).promoted() == RoutePlan((NEW,))


def test_rollback_drops_the_candidate_and_keeps_the_stable_version() -> None:
    assert plan().with_canary(NEW, 10).rolled_back() == plan()
    assert plan().with_shadow(NEW).rolled_back() == plan()


@pytest.mark.parametrize("plan_without", [plan(), RoutePlan(POOL, "ensemble", "mean")])
def test_promote_and_rollback_need_a_candidate(plan_without: RoutePlan) -> None:
    with pytest.raises(ConflictError, match="no canary or shadow to promote"):
        plan_without.promoted()
    with pytest.raises(ConflictError, match="no canary or shadow to roll back"):
        plan_without.rolled_back()


def test_a_single_plan_always_serves_its_version() -> None:
    router = DeploymentRouter("xray", plan())
    assert router.choose("alice", random.Random(0)) == Choice((OLD,), None, None, "stable")


def test_an_ensemble_serves_every_member_and_says_how_to_combine() -> None:
    router = DeploymentRouter("xray", RoutePlan(POOL, "ensemble", "vote"))
    assert router.choose("alice", random.Random(0)) == Choice(POOL, "vote", None, "stable")


def test_a_shadow_mirrors_every_request_and_serves_the_stable_version() -> None:
    router = DeploymentRouter("xray", plan().with_shadow(NEW))
    for principal in ("alice", "bob", ""):
        assert router.choose(principal, random.Random(0)) == Choice((OLD,), None, NEW, "stable")


def test_the_router_needs_a_deployment_name() -> None:
    with pytest.raises(InputError, match="deployment name"):
        DeploymentRouter("", plan())


PRINCIPALS = [f"user-{index}" for index in range(20_000)]


def arms(router: DeploymentRouter, rng: random.Random) -> list[str]:
    return [router.choose(principal, rng).arm for principal in PRINCIPALS]


def test_a_canary_is_sticky_per_principal_across_routers() -> None:
    canary = plan().with_canary(NEW, 10)
    first = DeploymentRouter("xray", canary)
    again = DeploymentRouter("xray", RoutePlan.from_dict(canary.to_dict()))
    picked = arms(first, random.Random(1))
    assert arms(first, random.Random(2)) == picked
    assert arms(again, random.Random(3)) == picked
    chosen = {first.choose(p, random.Random(0)) for p in PRINCIPALS[:200]}
    assert chosen == {Choice((NEW,), None, None, "candidate"), Choice((OLD,), None, None, "stable")}


@pytest.mark.parametrize("percent", [0.5, 10, 50, 90])
def test_a_canary_share_approaches_its_percent(percent: float) -> None:
    router = DeploymentRouter("xray", plan().with_canary(NEW, percent))
    share = arms(router, random.Random(0)).count("candidate") / len(PRINCIPALS)
    assert share == pytest.approx(percent / 100, abs=0.01)


def test_callers_are_drawn_afresh_for_another_candidate_or_deployment() -> None:
    base = arms(DeploymentRouter("xray", plan().with_canary(NEW, 50)), random.Random(0))
    other_candidate = arms(
        DeploymentRouter("xray", plan().with_canary(OTHER, 50)), random.Random(0)
    )
    other_name = arms(DeploymentRouter("chest", plan().with_canary(NEW, 50)), random.Random(0))
    for other in (other_candidate, other_name):
        same = sum(a == b for a, b in zip(base, other, strict=True)) / len(base)
        assert same == pytest.approx(0.5, abs=0.03)


def test_a_raised_canary_percent_keeps_its_earlier_callers() -> None:
    low = arms(DeploymentRouter("xray", plan().with_canary(NEW, 10)), random.Random(0))
    high = arms(DeploymentRouter("xray", plan().with_canary(NEW, 30)), random.Random(0))
    assert all(h == "candidate" for lo, h in zip(low, high, strict=True) if lo == "candidate")


def served(router: DeploymentRouter, rng: random.Random, count: int) -> Counter[str]:
    return Counter(router.choose("alice", rng).serve[0] for _ in range(count))


def test_a_random_switch_spreads_requests_evenly_with_the_given_rng() -> None:
    router = DeploymentRouter("xray", RoutePlan(POOL, "switch", "random"))
    counts = served(router, random.Random(7), 30_000)
    assert set(counts) == set(POOL)
    assert all(count / 30_000 == pytest.approx(1 / 3, abs=0.015) for count in counts.values())
    assert served(router, random.Random(7), 500) == served(router, random.Random(7), 500)


def test_a_weighted_switch_follows_its_weights() -> None:
    router = DeploymentRouter("xray", RoutePlan(POOL, "switch", "weighted", (3.0, 1.0, 0.5)))
    counts = served(router, random.Random(11), 30_000)
    for member, weight in zip(POOL, (3.0, 1.0, 0.5), strict=True):
        assert counts[member] / 30_000 == pytest.approx(weight / 4.5, abs=0.015)
    choice = router.choose("alice", random.Random(0))
    assert (choice.combine, choice.shadow, choice.arm) == (None, None, "stable")
