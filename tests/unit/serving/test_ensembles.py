"""Combining an ensemble's answers by vote or mean, and checking a method fits the outputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from bastion.errors import InputError, InternalError, UsageError
from bastion.serving._ensembles import check_ensemble, combine

Answer = dict[str, NDArray[Any]]


def answer(labels: list[int], probabilities: list[list[float]]) -> Answer:
    return {
        "label": np.array(labels, dtype=np.int64),
        "probabilities": np.array(probabilities, dtype=np.float32),
    }


# Three members, three rows: row 0 unanimous, row 1 two against one, row 2 a three-way tie.
MEMBERS = [
    answer([1, 0, 2], [[0.1, 0.9, 0.0], [0.8, 0.2, 0.0], [0.2, 0.2, 0.6]]),
    answer([1, 0, 0], [[0.3, 0.7, 0.0], [0.6, 0.4, 0.0], [0.5, 0.3, 0.2]]),
    answer([1, 1, 1], [[0.2, 0.8, 0.0], [0.1, 0.9, 0.0], [0.1, 0.8, 0.1]]),
]


def test_vote_takes_the_majority_label_and_averages_its_voters_scores() -> None:
    combined = combine("vote", MEMBERS)
    assert combined["label"].tolist() == [1, 0, 2]
    assert combined["label"].dtype == np.int64
    assert combined["probabilities"].dtype == np.float32
    expected = [[0.2, 0.8, 0.0], [0.7, 0.3, 0.0], [0.2, 0.2, 0.6]]
    np.testing.assert_allclose(combined["probabilities"], expected, rtol=1e-6, atol=1e-7)


def test_a_tie_goes_to_the_answer_of_the_lowest_member_index() -> None:
    reordered = [MEMBERS[2], MEMBERS[0], MEMBERS[1]]
    combined = combine("vote", reordered)
    assert combined["label"].tolist() == [1, 0, 1]
    np.testing.assert_allclose(combined["probabilities"][2], [0.1, 0.8, 0.1], rtol=1e-6)
    two = [answer([3], [[0.4]]), answer([5], [[0.6]])]
    assert combine("vote", two)["label"].tolist() == [3]
    assert combine("vote", two[::-1])["label"].tolist() == [5]


def test_mean_averages_scores_over_every_member_and_votes_labels() -> None:
    combined = combine("mean", MEMBERS)
    expected = np.mean([m["probabilities"] for m in MEMBERS], axis=0)
    np.testing.assert_allclose(combined["probabilities"], expected, rtol=1e-6)
    assert combined["probabilities"].dtype == np.float32
    assert combined["label"].tolist() == [1, 0, 2]


def test_bytes_and_bool_outputs_are_labels_too() -> None:
    names = [np.array([b"cat", b"dog"], dtype=object) for _ in range(3)]
    names[1][0] = b"cow"
    names[2][0] = b"cow"
    flags = [np.array([True, False]), np.array([False, False]), np.array([False, True])]
    members = [{"name": n, "flag": f} for n, f in zip(names, flags, strict=True)]
    combined = combine("vote", members)
    assert combined["name"].tolist() == [b"cow", b"dog"]
    assert combined["flag"].tolist() == [False, False]


def test_several_label_outputs_are_voted_together_per_row() -> None:
    members = [
        {"top": np.array([[1, 2]]), "flag": np.array([True]), "score": np.array([[0.1]])},
        {"top": np.array([[1, 3]]), "flag": np.array([True]), "score": np.array([[0.2]])},
        {"top": np.array([[1, 3]]), "flag": np.array([False]), "score": np.array([[0.3]])},
    ]
    combined = combine("vote", members)
    assert combined["top"].tolist() == [[1, 2]]
    assert combined["flag"].tolist() == [True]
    np.testing.assert_allclose(combined["score"], [[0.1]])


def test_scalar_outputs_are_one_row() -> None:
    members = [{"label": np.array(4), "score": np.array(0.5)} for _ in range(2)]
    members.append({"label": np.array(7), "score": np.array(0.8)})
    combined = combine("vote", members)
    assert combined["label"].shape == ()
    assert int(combined["label"]) == 4
    assert float(combined["score"]) == pytest.approx(0.5)
    assert float(combine("mean", members)["score"]) == pytest.approx(0.6)


def test_scores_without_labels_are_averaged_even_by_vote() -> None:
    members = [{"p": np.array([[0.0, 1.0]])}, {"p": np.array([[1.0, 0.0]])}]
    for method in ("vote", "mean"):
        np.testing.assert_allclose(combine(method, members)["p"], [[0.5, 0.5]])


def test_scores_whose_rows_do_not_match_the_labels_are_averaged_over_all() -> None:
    members = [
        {"label": np.array([1, 1]), "embedding": np.array([[0.0, 2.0, 4.0]])},
        {"label": np.array([1, 1]), "embedding": np.array([[2.0, 2.0, 2.0]])},
        {"label": np.array([0, 0]), "embedding": np.array([[4.0, 2.0, 0.0]])},
    ]
    np.testing.assert_allclose(combine("vote", members)["embedding"], [[2.0, 2.0, 2.0]])


def test_an_empty_batch_and_a_single_member_combine_to_themselves() -> None:
    empty = {"label": np.zeros((0,), np.int32), "p": np.zeros((0, 3), np.float32)}
    combined = combine("vote", [empty, empty])
    assert combined["label"].shape == (0,)
    assert combined["p"].shape == (0, 3)
    only = combine("vote", [MEMBERS[0]])
    np.testing.assert_array_equal(only["label"], MEMBERS[0]["label"])
    np.testing.assert_array_equal(only["probabilities"], MEMBERS[0]["probabilities"])


def test_non_finite_scores_pass_through_without_warnings() -> None:
    members = [{"p": np.array([np.inf, 1.0])}, {"p": np.array([-np.inf, np.nan])}]
    combined = combine("mean", members)
    assert np.isnan(combined["p"]).all()


@pytest.mark.parametrize(
    ("other", "message"),
    [
        ({"label": np.array([1, 0, 2])}, "answered outputs"),
        ({**MEMBERS[0], "extra": np.array([1])}, "answered outputs"),
        ({**MEMBERS[0], "label": np.array([1, 0, 2], dtype=np.int32)}, "int32"),
        ({**MEMBERS[0], "label": np.array([1, 0])}, r"\(2,\)"),
        ({**MEMBERS[0], "label": [1, 0, 2]}, "not an array"),
    ],
)
def test_members_must_agree_on_their_outputs(other: Answer, message: str) -> None:
    with pytest.raises(InternalError, match=message):
        combine("vote", [MEMBERS[0], other])


def test_label_outputs_must_share_their_rows() -> None:
    members = [{"a": np.array([1, 2]), "b": np.array([3])} for _ in range(2)]
    with pytest.raises(InternalError, match="different numbers of rows"):
        combine("vote", members)


def test_combine_needs_a_known_method_and_answers() -> None:
    with pytest.raises(UsageError, match="vote or mean"):
        combine("median", MEMBERS)
    with pytest.raises(InternalError, match="no answers"):
        combine("vote", [])


def test_check_ensemble_accepts_a_method_that_fits_the_outputs() -> None:
    check_ensemble("vote", {"label": "INT64", "probabilities": "FP32"})
    check_ensemble("vote", {"name": "BYTES"})
    check_ensemble("mean", {"probabilities": "FP16"})
    check_ensemble("mean", {"label": "BOOL", "probabilities": "FP64"})


@pytest.mark.parametrize(
    ("method", "datatypes", "message"),
    [
        ("vote", {"probabilities": "FP32"}, "needs a label output.*--ensemble mean"),
        ("mean", {"label": "INT64", "name": "BYTES"}, "floating-point output.*--ensemble vote"),
        ("median", {"probabilities": "FP32"}, "vote or mean"),
        ("vote", {}, "no outputs"),
        ("vote", {"label": "FLOAT"}, "unknown datatype"),
    ],
)
def test_check_ensemble_refuses_a_method_that_cannot_combine_the_outputs(
    method: str, datatypes: dict[str, str], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        check_ensemble(method, datatypes)


def reference_vote(
    labels: list[list[int]], scores: list[list[float]]
) -> tuple[list[int], list[float]]:
    """A plain per-row vote: most frequent label, ties to the lowest member, voters' mean."""
    winners, means = [], []
    for row in range(len(labels[0])):
        column = [member[row] for member in labels]
        best = max(column, key=lambda label: (column.count(label), -column.index(label)))
        voters = [m for m, label in enumerate(column) if label == best]
        winners.append(best)
        means.append(sum(scores[m][row] for m in voters) / len(voters))
    return winners, means


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda rows: st.lists(
            st.tuples(
                st.lists(st.integers(0, 2), min_size=rows, max_size=rows),
                st.lists(st.floats(0, 1), min_size=rows, max_size=rows),
            ),
            min_size=1,
            max_size=5,
        )
    )
)
def test_vote_matches_a_plain_per_row_vote(members: list[tuple[list[int], list[float]]]) -> None:
    answers = [{"l": np.array(labels), "s": np.array(scores)} for labels, scores in members]
    combined = combine("vote", answers)
    winners, means = reference_vote([m[0] for m in members], [m[1] for m in members])
    assert combined["l"].tolist() == winners
    np.testing.assert_allclose(combined["s"], means, rtol=1e-12, atol=1e-12)
