"""Output hardening: full scores, top-k, label only, rounding and calibrated noise (issue 6)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bastion.errors import InputError, UsageError
from bastion.serving._hardening import (
    MAX_TOP_K,
    HardenedOutput,
    NoiseSpec,
    OutputPolicy,
    OutputTiers,
    harden,
)

SCORES = np.array([[0.1, 0.2, 0.7], [0.3, 0.3, 0.4], [0.5, 0.5, 0.0]])
LABELS = ("cat", "dog", "émeu")


def served(text: str, scores: object = SCORES, seed: int = 0, **kwargs: object) -> HardenedOutput:
    return harden(
        scores,  # type: ignore[arg-type]
        OutputPolicy.parse(text),
        rng=np.random.default_rng(seed),
        **kwargs,  # type: ignore[arg-type]
    )


# -- modes on a known matrix -------------------------------------------------------------------


def test_full_returns_the_scores_unchanged() -> None:
    out = served("full")
    assert out.mode == "full"
    np.testing.assert_array_equal(out.scores, SCORES)
    assert out.classes is None
    assert out.labels is None
    assert set(out.to_tensors()) == {"scores"}
    assert out.to_tensors()["scores"].dtype == np.float64


def test_full_rounds_to_the_given_digits() -> None:
    out = served("full,round=2", np.array([[0.123456, 0.876544], [0.5, 0.5]]))
    np.testing.assert_array_equal(out.scores, [[0.12, 0.88], [0.5, 0.5]])
    out = served("round=0", np.array([[0.3, 0.7]]))  # the mode defaults to full
    np.testing.assert_array_equal(out.scores, [[0.0, 1.0]])


def test_top_k_returns_the_best_classes_best_first_with_ties_to_the_lowest_index() -> None:
    out = served("top-k=2")
    assert out.mode == "top-k"
    np.testing.assert_array_equal(out.classes, [[2, 1], [2, 0], [0, 1]])
    np.testing.assert_array_equal(out.scores, [[0.7, 0.2], [0.4, 0.3], [0.5, 0.5]])
    assert out.classes is not None
    assert out.classes.dtype == np.int64
    flat = served("top-k=3", np.full((1, 4), 0.25))
    np.testing.assert_array_equal(flat.classes, [[0, 1, 2]])


def test_top_k_ranks_first_then_rounds_the_scores() -> None:
    out = served("top-k=2,round=1", np.array([[0.123, 0.456, 0.421]]))
    np.testing.assert_array_equal(out.classes, [[1, 2]])
    np.testing.assert_array_equal(out.scores, [[0.5, 0.4]])


def test_top_k_larger_than_the_classes_returns_every_class() -> None:
    out = served("top-k=5")
    assert out.scores is not None
    assert out.scores.shape == (3, 3)
    np.testing.assert_array_equal(out.classes, [[2, 1, 0], [2, 0, 1], [0, 1, 2]])


def test_top_k_with_labels_names_each_returned_class() -> None:
    tensors = served("top-k=1", labels=LABELS).to_tensors()
    assert set(tensors) == {"scores", "classes", "labels"}
    assert tensors["labels"].shape == (3, 1)
    assert tensors["labels"].tolist() == [[b"\xc3\xa9meu"], [b"\xc3\xa9meu"], [b"cat"]]


def test_label_returns_only_the_argmax_and_its_name() -> None:
    out = served("label", labels=LABELS)
    assert out.scores is None
    np.testing.assert_array_equal(out.classes, [2, 2, 0])
    assert out.labels is not None
    assert out.labels.tolist() == ["émeu", "émeu", "cat"]
    tensors = out.to_tensors()
    assert set(tensors) == {"classes", "labels"}
    assert tensors["classes"].shape == (3,)
    assert tensors["labels"].tolist() == ["émeu".encode(), "émeu".encode(), b"cat"]
    assert set(served("label").to_tensors()) == {"classes"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("full", [2, 2, 0]), ("top-k=2", [2, 2, 0]), ("label", [2, 2, 0]), ("round=0", [2, 0, 0])],
)
def test_predicted_classes_is_what_the_caller_would_pick(text: str, expected: list[int]) -> None:
    np.testing.assert_array_equal(served(text).predicted_classes(), expected)


def test_returned_arrays_are_read_only() -> None:
    out = served("top-k=2", labels=LABELS)
    for array in (out.scores, out.classes, out.labels):
        assert array is not None
        with pytest.raises(ValueError, match="read-only"):
            array[0, 0] = 1


# -- noise ----------------------------------------------------------------------------------------


def test_noise_with_a_seeded_rng_is_deterministic() -> None:
    scores = np.random.default_rng(7).dirichlet(np.ones(5), size=20)
    first = served("full,noise=laplace:0.05", scores, seed=3)
    again = served("full,noise=laplace:0.05", scores, seed=3)
    other = served("full,noise=laplace:0.05", scores, seed=4)
    assert first.scores is not None
    assert other.scores is not None
    np.testing.assert_array_equal(first.scores, again.scores)
    assert not np.array_equal(first.scores, other.scores)
    assert not np.array_equal(first.scores, scores)


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_noised_full_scores_stay_in_range_and_sum_to_one_within_rounding(kind: str) -> None:
    scores = np.random.default_rng(1).dirichlet(np.ones(4), size=200)
    out = served(f"full,round=3,noise={kind}:0.2", scores)
    assert out.scores is not None
    assert out.scores.min() >= 0.0
    assert out.scores.max() <= 1.0
    np.testing.assert_allclose(out.scores.sum(axis=1), 1.0, atol=4 * 0.0005 + 1e-12)


def test_a_row_noised_to_all_zeros_becomes_uniform() -> None:
    out = served("full,noise=gaussian:1", np.zeros((200, 2)))
    assert out.scores is not None
    np.testing.assert_allclose(out.scores.sum(axis=1), 1.0)
    assert any(row.tolist() == [0.5, 0.5] for row in out.scores)


def test_top_k_scores_with_noise_are_clipped_to_the_unit_interval() -> None:
    out = served("top-k=2,noise=laplace:1", np.full((100, 3), 0.5))
    assert out.scores is not None
    assert out.scores.min() >= 0.0
    assert out.scores.max() <= 1.0
    assert np.all(out.scores[:, 0] >= out.scores[:, 1])


def test_label_noise_flips_near_ties_but_not_clear_winners() -> None:
    near_tie = np.tile([0.5, 0.5 - 1e-9], (200, 1))
    flipped = served("label,noise=laplace:0.1", near_tie).classes
    assert flipped is not None
    assert 0 < int(flipped.sum()) < 200
    clear = np.tile([0.99, 0.01], (200, 1))
    kept = served("label,noise=laplace:0.01", clear).classes
    assert kept is not None
    assert int(kept.sum()) == 0


# -- invalid scores -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "scores",
    [
        np.array([0.1, 0.9]),
        np.zeros((1, 2, 2)),
        np.zeros((0, 3)),
        np.zeros((2, 0)),
        np.array([[0.1, np.nan]]),
        np.array([[0.1, np.inf]]),
        np.array([[-0.1, 0.5]]),
        np.array([[3.0, 0.5]]),
        np.array([["a", "b"]]),
        np.array([[1 + 1j, 0]]),
        [[0.1, 0.2], [0.3]],
        "scores",
        None,
    ],
)
def test_scores_that_are_not_a_probability_matrix_are_refused(scores: object) -> None:
    with pytest.raises(InputError, match="scores"):
        served("full", scores)


def test_float32_softmax_slightly_over_one_is_accepted_and_clipped() -> None:
    out = served("full", np.array([[1.0000001, 0.0]], dtype=np.float32))
    np.testing.assert_array_equal(out.scores, [[1.0, 0.0]])


@pytest.mark.parametrize("labels", [("cat", "dog"), "abc", ("cat", "dog", 3)])
def test_labels_that_do_not_name_each_class_are_refused(labels: object) -> None:
    with pytest.raises(InputError, match="labels"):
        served("label", labels=labels)


def test_harden_needs_a_generator_and_a_policy() -> None:
    with pytest.raises(UsageError, match="rng"):
        harden(SCORES, OutputPolicy(), rng=np.random.RandomState(0))  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="OutputPolicy"):
        harden(SCORES, "full", rng=np.random.default_rng())  # type: ignore[arg-type]


# -- policy text ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("top-k=3,round=2", OutputPolicy(mode="top-k", k=3, round_digits=2)),
        ("label", OutputPolicy(mode="label")),
        (
            "full,round=3,noise=laplace:0.02",
            OutputPolicy(round_digits=3, noise=NoiseSpec("laplace", 0.02)),
        ),
        (
            " noise=gaussian:1e-3 , top-k=1 ",
            OutputPolicy("top-k", 1, None, NoiseSpec("gaussian", 1e-3)),
        ),
        ("round=0", OutputPolicy(round_digits=0)),
        ("label,noise=laplace:.1", OutputPolicy("label", noise=NoiseSpec("laplace", 0.1))),
    ],
)
def test_policy_text_parses(text: str, expected: OutputPolicy) -> None:
    assert OutputPolicy.parse(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "full",
        "label",
        "top-k=3,round=2",
        "full,round=3,noise=laplace:0.02",
        "label,noise=gaussian:0.1",
    ],
)
def test_canonical_policy_text_round_trips(text: str) -> None:
    assert OutputPolicy.parse(text).to_text() == text


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("", "empty"),
        ("  ", "empty"),
        ("top-k", "'top-k'"),
        ("top-k=", "'top-k='"),
        ("top-k=0", "top-k"),
        (f"top-k={MAX_TOP_K + 1}", "top-k"),
        ("top-k=-1", "'top-k=-1'"),
        ("top-k=3.5", "'top-k=3.5'"),
        ("top-k=\uff13", "top-k="),
        ("round=7", "round=7"),
        ("round=-1", "'round=-1'"),
        ("round=", "'round='"),
        ("label,round=2", "round"),
        ("full=1", "'full=1'"),
        ("noise=laplace:-0.1", "'-0.1'"),
        ("noise=laplace:0", "scale 0.0"),
        ("noise=laplace:2", "scale 2.0"),
        ("noise=laplace:nan", "'nan'"),
        ("noise=gaussian:inf", "'inf'"),
        ("noise=uniform:0.1", "'uniform:0.1'"),
        ("noise=laplace", "'laplace'"),
        ("full,label", "mode twice"),
        ("top-k=2,top-k=3", "mode twice"),
        ("round=1,round=2", "round twice"),
        ("bogus=1", "'bogus=1'"),
        ("top-k=3,,round=2", "''"),
        ("FULL", "'FULL'"),
        ("x" * 300, "over 200"),
    ],
)
def test_invalid_policy_text_is_refused_naming_the_bad_part(text: str, named: str) -> None:
    with pytest.raises(InputError) as caught:
        OutputPolicy.parse(text)
    assert named in caught.value.message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "top-k"},
        {"mode": "top-k", "k": True},
        {"mode": "full", "k": 3},
        {"mode": "everything"},
        {"round_digits": 2.0},
        {"noise": "laplace:0.1"},
    ],
)
def test_invalid_policies_are_refused_when_built(kwargs: dict[str, object]) -> None:
    with pytest.raises(InputError):
        OutputPolicy(**kwargs)  # type: ignore[arg-type]


def test_invalid_noise_is_refused_when_built() -> None:
    with pytest.raises(InputError, match="kind"):
        NoiseSpec("uniform", 0.1)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="number"):
        NoiseSpec("laplace", True)


policies = (
    st.builds(
        OutputPolicy,
        mode=st.just("full"),
        round_digits=st.none() | st.integers(0, 6),
        noise=st.none()
        | st.builds(
            NoiseSpec,
            kind=st.sampled_from(["laplace", "gaussian"]),
            scale=st.floats(min_value=0, max_value=1, exclude_min=True),
        ),
    )
    | st.builds(OutputPolicy, mode=st.just("top-k"), k=st.integers(1, MAX_TOP_K))
    | st.just(OutputPolicy(mode="label"))
)


@given(policies)
def test_to_text_round_trips_every_policy(policy: OutputPolicy) -> None:
    assert OutputPolicy.parse(policy.to_text()) == policy


TOKENS = ["full", "label", "top-k=3", "top-k=0", "round=2", "round=9", "noise=laplace:0.1", "=", ""]


@given(st.text(max_size=60) | st.lists(st.sampled_from(TOKENS), max_size=4).map(",".join))
def test_arbitrary_policy_text_parses_or_raises_input_error(text: str) -> None:
    try:
        policy = OutputPolicy.parse(text)
    except InputError:
        return
    assert OutputPolicy.parse(policy.to_text()) == policy


# -- arbitrary matrices ---------------------------------------------------------------------------

shapes = st.tuples(st.integers(1, 6), st.integers(1, 8))


@settings(max_examples=60)
@given(
    hnp.arrays(np.float64, shapes, elements=st.floats(0, 1)),
    policies
    | st.builds(
        OutputPolicy, mode=st.just("top-k"), k=st.integers(1, 3), round_digits=st.integers(0, 6)
    ),
    st.integers(0, 2**32),
)
def test_probability_matrices_never_crash_and_keep_their_shape(
    scores: np.ndarray, policy: OutputPolicy, seed: int
) -> None:
    out = harden(scores, policy, rng=np.random.default_rng(seed))
    batch, classes = scores.shape
    if policy.mode == "full":
        assert out.scores is not None
        assert out.scores.shape == (batch, classes)
    elif policy.mode == "top-k":
        assert out.scores is not None
        assert out.classes is not None
        assert out.scores.shape == out.classes.shape == (batch, min(classes, policy.k or 0))
        assert np.all(np.diff(out.scores, axis=1) <= 0)
    else:
        assert out.classes is not None
        assert out.classes.shape == (batch,)
    assert out.predicted_classes().shape == (batch,)
    for tensor in out.to_tensors().values():
        assert tensor.shape[0] == batch


@settings(max_examples=60)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)))
def test_arbitrary_float_arrays_are_served_or_refused_with_input_error(scores: np.ndarray) -> None:
    try:
        out = harden(scores, OutputPolicy(mode="top-k", k=2), rng=np.random.default_rng(0))
    except InputError:
        return
    assert out.classes is not None
    assert out.classes.shape[0] == scores.shape[0]


#: Values where a check in Python could part from numpy's: zeros of either sign, the slack
#: above 1 (compared in float32 by numpy), subnormals, NaN and infinities.
EDGE_SCORES = [0.0, -0.0, 1.0, 1.0000005, 1.000001, 1.0000011, 1e-45, 5e-324, 2.0, -1e-9,
               float("nan"), float("inf"), -float("inf")]  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(1, 2).flatmap(
        lambda n: st.lists(
            st.lists(st.floats(0, 1) | st.sampled_from(EDGE_SCORES), min_size=3, max_size=3),
            min_size=n,
            max_size=n,
        )
    ),
    dtype=st.sampled_from(["float16", "float32", "float64", "int64", "longdouble"]),
    text=st.sampled_from(["full", "full,round=3", "top-k=2,round=1", "label"]),
)
def test_small_matrices_are_served_exactly_as_large_ones(
    rows: list[list[float]], dtype: str, text: str
) -> None:
    """Up to 64 scores are checked in Python, more by numpy: both must agree to the bit."""
    with np.errstate(all="ignore"):
        small = np.array(rows).astype(dtype)
    rows_served = len(small)

    def outcome(scores: np.ndarray) -> object:
        try:
            tensors = served(text, scores).to_tensors()
        except InputError as exc:
            return exc.message
        return {name: (t.dtype, t[:rows_served].tobytes()) for name, t in tensors.items()}

    assert outcome(small) == outcome(np.tile(small, (30, 1)))


def test_hardening_leaves_the_models_array_writable_and_unchanged() -> None:
    scores = np.array([[0.25, 0.75]])
    out = served("full", scores)
    assert scores.flags.writeable
    assert out.scores is not None
    assert not np.shares_memory(out.scores, scores)


# -- tiers ----------------------------------------------------------------------------------------


def test_tiers_fall_back_to_the_default_policy() -> None:
    tiers = OutputTiers.from_dict({"default": "top-k=3,round=2", "trusted": OutputPolicy()})
    assert tiers.for_tier("trusted") == OutputPolicy()
    assert tiers.for_tier("default") == OutputPolicy("top-k", 3, 2)
    assert tiers.for_tier("unknown") == OutputPolicy("top-k", 3, 2)
    assert tiers.for_tier(None) == OutputPolicy("top-k", 3, 2)
    assert dict(tiers) == {"default": OutputPolicy("top-k", 3, 2), "trusted": OutputPolicy()}
    assert tiers.to_dict() == {"default": "top-k=3,round=2", "trusted": "full"}
    assert OutputTiers.from_dict(tiers.to_dict()) == tiers


@pytest.mark.parametrize(
    ("policies", "named"),
    [
        ({"trusted": "full"}, "'default'"),
        ({}, "'default'"),
        ({"default": "full", "Trusted": "full"}, "'Trusted'"),
        ({"default": "full", "": "full"}, "''"),
        ({"default": "top-k=0"}, "top-k"),
        ({"default": 3}, "'default'"),
        ("default=full", "mapping"),
    ],
)
def test_invalid_tiers_are_refused(policies: object, named: str) -> None:
    with pytest.raises(InputError) as caught:
        OutputTiers.from_dict(policies)  # type: ignore[arg-type]
    assert named in caught.value.message
