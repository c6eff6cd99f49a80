"""A deployment's stored form: its config, the output each tier sees, and its revisions."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.db import Database, sqlite_url
from bastion.errors import ConflictError, InputError, InternalError, NotFoundError
from bastion.serving._deployment_config import (
    DeploymentConfig,
    UpstreamTarget,
    parse_value_ranges,
)
from bastion.serving._deployment_store import DeploymentStore
from bastion.serving._hardening import OutputPolicy
from bastion.serving._oip import InferLimits
from bastion.serving._output_shaping import OutputShaper
from bastion.serving._routing import RoutePlan
from bastion.serving._tensors import Datatype, ModelSignature, TensorSpec
from bastion.serving._upstream import check_base_url

CLASSIFIER = ModelSignature(
    (TensorSpec("X", Datatype.FP32, (-1, 30)),),
    (
        TensorSpec("label", Datatype.INT64, (-1,)),
        TensorSpec("probabilities", Datatype.FP32, (-1, 3)),
    ),
)
REGRESSOR = ModelSignature(
    (TensorSpec("X", Datatype.FP32, (-1, 30)),), (TensorSpec("y", Datatype.FP32, (-1,)),)
)

# -- config ------------------------------------------------------------------------------


def test_a_config_round_trips_through_its_stored_form() -> None:
    config = DeploymentConfig.from_dict(
        {
            "output": {"default": "top-k=3,round=2", "partners": "label"},
            "value_ranges": {"X": [0, 1]},
            "max_batch": 32,
            "upstream": {"url": "https://triton.internal:8000/prefix", "model": "Big-LLM"},
        }
    )
    again = DeploymentConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert config.limits(InferLimits()).max_batch == 32
    assert config.upstream == UpstreamTarget("https://triton.internal:8000/prefix", "Big-LLM")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"surprise": 1}, "unknown fields"),
        ({"format": 2}, "format 1"),
        ({"output": {"default": "top-k=0"}}, "top-k"),
        ({"output": {"gold": "full"}}, "default"),
        ({"value_ranges": {"X": [2, 1]}}, "above high"),
        ({"value_ranges": {"X": [0, float("inf")]}}, "finite"),
        ({"max_batch": 0}, "positive"),
        ({"upstream": {"url": "ftp://x", "model": "m"}}, "http"),
        ({"upstream": {"url": "http://u:p@host", "model": "m"}}, "password"),
        ({"upstream": {"url": "http://host", "model": "../m"}}, "upstream model"),
    ],
)
def test_bad_configs_are_refused_with_what_was_wrong(data: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        DeploymentConfig.from_dict(data)


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda kids: st.lists(kids) | st.dictionaries(st.text(), kids),
                    max_leaves=20))  # fmt: skip
@settings(max_examples=200, deadline=None)
def test_any_json_gives_a_config_or_an_input_error(data: object) -> None:
    with contextlib.suppress(InputError):
        DeploymentConfig.from_dict(data)


def test_value_ranges_from_the_command_line() -> None:
    assert parse_value_ranges("X=0:1, age=-5:120") == {"X": (0.0, 1.0), "age": (-5.0, 120.0)}
    for bad in ("X", "X=0", "X=a:b", "X=3:1"):
        with pytest.raises(InputError):
            parse_value_ranges(bad)


@pytest.mark.parametrize(
    "url", ["http://host:99999", "http://", "https://h/x?q=1", "https://h/#f", "x" * 600]
)
def test_upstream_urls_are_plain_http_with_a_host(url: str) -> None:
    with pytest.raises(InputError):
        check_base_url(url)


# -- output shaping --------------------------------------------------------------------


def test_full_without_rounding_or_noise_passes_outputs_through() -> None:
    shaper = OutputShaper.build(CLASSIFIER, OutputPolicy.parse("full"))
    assert shaper.exposed == CLASSIFIER
    assert shaper.model_outputs(["label"]) == ("label",)
    given_outputs = {"label": np.array([2]), "probabilities": np.array([[0.1, 0.2, 0.7]])}
    assert shaper.apply(given_outputs, ["label"], np.random.default_rng(0)) == {
        "label": given_outputs["label"]
    }


def test_top_k_exposes_scores_and_classes_of_the_probability_output() -> None:
    shaper = OutputShaper.build(CLASSIFIER, OutputPolicy.parse("top-k=2,round=1"))
    assert [s.to_metadata() for s in shaper.exposed.outputs] == [
        {"name": "scores", "datatype": "FP64", "shape": [-1, 2]},
        {"name": "classes", "datatype": "INT64", "shape": [-1, 2]},
    ]
    assert shaper.model_outputs(["scores", "classes"]) == ("probabilities",)
    probabilities = np.array([[0.14, 0.26, 0.6], [0.5, 0.3, 0.2]], dtype=np.float32)
    shaped = shaper.apply(
        {"probabilities": probabilities}, ["classes", "scores"], np.random.default_rng(0)
    )
    np.testing.assert_array_equal(shaped["classes"], [[2, 1], [0, 1]])
    np.testing.assert_allclose(shaped["scores"], [[0.6, 0.3], [0.5, 0.3]])


def test_label_exposes_only_the_best_class() -> None:
    shaper = OutputShaper.build(CLASSIFIER, OutputPolicy.parse("label"))
    assert [s.name for s in shaper.exposed.outputs] == ["classes"]
    shaped = shaper.apply(
        {"probabilities": np.array([[0.2, 0.7, 0.1]])}, ["classes"], np.random.default_rng(0)
    )
    np.testing.assert_array_equal(shaped["classes"], [1])


def test_hardening_needs_one_probability_output() -> None:
    with pytest.raises(InputError, match="exactly one probability output"):
        OutputShaper.build(REGRESSOR, OutputPolicy.parse("top-k=1"))
    shaper = OutputShaper.build(CLASSIFIER, OutputPolicy.parse("label"))
    with pytest.raises(InternalError, match="cannot be hardened"):  # scores out of [0, 1]
        shaper.apply({"probabilities": np.array([[3.0, -1.0, 0.0]])}, ["classes"],
                     np.random.default_rng(0))  # fmt: skip


# -- the store ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> DeploymentStore:
    db = Database(sqlite_url(tmp_path / "hub.sqlite"))
    db.migrate()
    clock = iter(datetime(2026, 11, 22, tzinfo=UTC) + timedelta(seconds=i) for i in range(100))
    return DeploymentStore(db, now=lambda: next(clock))


def test_every_change_is_a_revision_and_a_stale_change_is_refused(store: DeploymentStore) -> None:
    plan = RoutePlan(("med/xray@1.0.0",))
    config = DeploymentConfig()
    made = store.save("xray", "med", plan, config, actor="key:a", change="deploy",
                      expect_revision=None)  # fmt: skip
    assert made.revision == 1
    with pytest.raises(ConflictError, match="exists already"):
        store.save("xray", "med", plan, config, actor="key:a", change="deploy",
                   expect_revision=None)  # fmt: skip
    canary = plan.with_canary("med/xray@2.0.0", 10)
    changed = store.save("xray", "med", canary, config, actor="key:b", change="canary",
                         reason="try it", expect_revision=1)  # fmt: skip
    assert changed.revision == 2
    assert changed.plan == canary
    with pytest.raises(ConflictError, match="changed meanwhile"):
        store.save("xray", "med", plan, config, actor="key:c", change="deploy",
                   expect_revision=1)  # fmt: skip
    revisions = store.revisions("xray")
    assert [(r["revision"], r["change"], r["changed_by"]) for r in revisions] == [
        (2, "canary", "key:b"),
        (1, "deploy", "key:a"),
    ]
    assert RoutePlan.from_dict(revisions[1]["plan"]) == plan
    assert [r.name for r in store.all()] == ["xray"]
    store.delete("xray")
    with pytest.raises(NotFoundError):
        store.get("xray")
    with pytest.raises(NotFoundError):
        store.delete("xray")


def test_an_upstream_deployment_has_no_plan(store: DeploymentStore) -> None:
    config = DeploymentConfig(upstream=UpstreamTarget("http://mlserver:8080", "cancer"))
    made = store.save("front", "med", None, config, actor="key:a", change="deploy",
                      expect_revision=None)  # fmt: skip
    assert made.plan is None
    assert store.get("front").to_dict()["kind"] == "upstream"
    with pytest.raises(InputError, match="deployment name"):
        store.save("Bad Name", "med", None, config, actor="key:a", change="deploy",
                   expect_revision=None)  # fmt: skip


def test_a_callers_tier_is_the_first_of_its_groups_that_names_one() -> None:
    from bastion.serving._deployment_store import DeploymentRecord
    from bastion.serving._live import LiveDeployment

    now = datetime(2026, 11, 22, tzinfo=UTC)
    config = DeploymentConfig.from_dict(
        {"output": {"default": "label", "partners": "top-k=2", "research": "full"}}
    )
    record = DeploymentRecord(
        "xray", "med", RoutePlan(("med/xray@1.0.0",)), config, 1, now, "a", now, "a"
    )
    live = LiveDeployment(record, signature=CLASSIFIER, limits=InferLimits())
    assert live.tier_of(()) == "default"
    assert live.tier_of(("staff", "partners", "research")) == "partners"
    assert live.tier_of(("default", "research")) == "research"
    assert [o["name"] for o in live.metadata("default")["outputs"]] == ["classes"]
    assert [o["name"] for o in live.metadata("research")["outputs"]] == ["label", "probabilities"]
