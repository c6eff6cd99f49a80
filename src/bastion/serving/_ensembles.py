"""Combining the answers of an ensemble's members into one answer.

Every member answers with the same outputs (names, shapes, datatypes). Outputs are split
into *labels* (integer, bool, BYTES: anything not floating point) and *scores* (floating
point). Rows are indices along the first axis (a 0-d output is one row).

* Labels are voted per row: a member's answer for a row is its row of every label output
  together, the answer most members gave wins, and a tie goes to the answer of the lowest
  member index.
* With ``mean``, scores are averaged element-wise over all members. With ``vote``, each
  row's scores are averaged over the members that gave the winning answer of that row (an
  output whose rows do not line up with the labels' is averaged over all members).

:func:`check_ensemble` tells at deploy time whether a method suits the members' outputs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bastion.errors import InputError, InternalError, UsageError
from bastion.serving._tensors import Datatype

__all__ = ["ENSEMBLE_METHODS", "check_ensemble", "combine"]

ENSEMBLE_METHODS = ("vote", "mean")

Array = NDArray[Any]


def check_ensemble(method: str, output_datatypes: Mapping[str, str]) -> None:
    """Refuse (InputError) an ensemble ``method`` that cannot combine these outputs.

    ``output_datatypes`` maps each output the members declare to its OIP datatype. ``vote``
    needs at least one label output (integer, bool or BYTES) to vote on; ``mean`` needs at
    least one floating-point output to average.
    """
    if method not in ENSEMBLE_METHODS:
        raise InputError(f"ensemble method {str(method)[:40]!r} is unknown: use vote or mean")
    if not output_datatypes:
        raise InputError("the ensemble's members declare no outputs to combine")
    floats = {
        name: Datatype.parse(datatype, what=f"output {name!r}").is_float
        for name, datatype in output_datatypes.items()
    }
    listed = ", ".join(f"{name} ({output_datatypes[name]})" for name in sorted(floats))
    if method == "vote" and all(floats.values()):
        raise InputError(
            f"an ensemble vote needs a label output (integer, bool or BYTES) to vote on, and "
            f"the members' outputs are all scores: {listed}; use --ensemble mean instead"
        )
    if method == "mean" and not any(floats.values()):
        raise InputError(
            f"an ensemble mean needs a floating-point output to average, and the members' "
            f"outputs are all labels: {listed}; use --ensemble vote instead"
        )


def combine(method: str, answers: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
    """One answer from the members' ``answers`` (in member order), by ``vote`` or ``mean``.

    Raises InternalError when members disagree on output names, shapes or datatypes.
    """
    if method not in ENSEMBLE_METHODS:
        raise UsageError(f"ensemble method {str(method)[:40]!r} is unknown: use vote or mean")
    if not answers:
        raise InternalError("an ensemble produced no answers to combine")
    stacks = _stack(answers)
    labels = {name: s for name, s in stacks.items() if not np.issubdtype(s.dtype, np.floating)}
    rows, voters, winner = _vote(labels, len(answers))
    combined: dict[str, Array] = {}
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf is nan, as in the members
        for name, stack in stacks.items():
            if name in labels:
                picked = _as_rows(stack)[winner, np.arange(rows)]
                combined[name] = picked.reshape(stack.shape[1:])
            elif method == "vote" and _as_rows(stack).shape[1] == rows:
                voted = _masked_mean(_as_rows(stack), voters)
                combined[name] = voted.reshape(stack.shape[1:])
            else:
                combined[name] = stack.mean(axis=0, dtype=np.float64).astype(stack.dtype)
    return combined


def _stack(answers: Sequence[Mapping[str, Array]]) -> dict[str, Array]:
    """Each output's answers stacked along a new first (member) axis, after checking agreement."""
    first = answers[0]
    names = sorted(first)
    for index, answer in enumerate(answers):
        if sorted(answer) != names:
            raise InternalError(
                f"ensemble member {index} answered outputs {sorted(answer)[:16]}, member 0 "
                f"answered {names[:16]}: deploy members with the same outputs"
            )
        for name in names:
            value, reference = answer[name], first[name]
            if not isinstance(value, np.ndarray) or not isinstance(reference, np.ndarray):
                raise InternalError(f"ensemble member {index} output {name!r} is not an array")
            if value.dtype != reference.dtype or value.shape != reference.shape:
                raise InternalError(
                    f"ensemble member {index} output {name!r} is {value.dtype} {value.shape}, "
                    f"member 0's is {reference.dtype} {reference.shape}: deploy members with "
                    "the same outputs"
                )
    return {name: np.stack([answer[name] for answer in answers]) for name in names}


def _as_rows(stack: Array) -> Array:
    """A (members, ...) stack as (members, rows, ...): a 0-d output is one row."""
    return stack.reshape(stack.shape[0], 1) if stack.ndim == 1 else stack


def _vote(labels: Mapping[str, Array], members: int) -> tuple[int, Array, Array]:
    """The number of rows, which members voted for each row's winner, and the winner.

    Returns ``rows``, ``voters`` (bool, members x rows) and ``winner`` (a member index per
    row). Without label outputs there is nothing to disagree on: every member votes.
    """
    shaped = {name: _as_rows(stack) for name, stack in labels.items()}
    row_counts = {stack.shape[1] for stack in shaped.values()}
    if len(row_counts) > 1:
        raise InternalError(
            f"cannot vote: the label outputs {sorted(labels)} have different numbers of rows"
        )
    rows = row_counts.pop() if row_counts else 1
    same = np.ones((members, members, rows), dtype=bool)
    for stack in shaped.values():
        flat = stack.reshape(members, rows, math.prod(stack.shape[2:]))
        for one in range(members):
            for other in range(one + 1, members):
                try:
                    equal = np.asarray(flat[one] == flat[other], dtype=bool).all(axis=1)
                except (TypeError, ValueError) as exc:
                    raise InternalError("ensemble labels could not be compared") from exc
                same[one, other] &= equal
                same[other, one] &= equal
    winner = same.sum(axis=1).argmax(axis=0)  # first maximum: the lowest member index
    voters = same[winner, :, np.arange(rows)].T
    return rows, voters, winner


def _masked_mean(stack: Array, voters: Array) -> Array:
    """Each row of ``stack`` averaged over the members marked in ``voters`` (members x rows)."""
    mask = voters.reshape(voters.shape + (1,) * (stack.ndim - 2))
    total = np.where(mask, stack, 0).sum(axis=0, dtype=np.float64)
    count: Array = mask.sum(axis=0)
    mean: Array = total / count
    return mean.astype(stack.dtype)
