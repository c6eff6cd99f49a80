"""JSON tensor data: the whole-list checks agree with the element-by-element ones they skip."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import InputError
from bastion.serving._tensor_data import tensor_from_json
from bastion.serving._tensors import Datatype


def reference(datatype: Datatype, flat: list[Any]) -> np.ndarray[Any, Any]:
    """The element-by-element conversion (booleans, integers and floats), as first written."""
    what = "input 'x'"
    if datatype is Datatype.BOOL:
        for index, value in enumerate(flat):
            if type(value) is not bool:
                raise InputError(f"{what}: element {index} is not a boolean (true or false)")
        return np.array(flat, dtype=np.bool_)
    if datatype.is_integer:
        limits = np.iinfo(datatype.numpy_dtype)
        low, high = int(limits.min), int(limits.max)
        for index, value in enumerate(flat):
            if type(value) is not int or not low <= value <= high:
                raise InputError(f"{what}: element {index} is not an integer in [{low}, {high}]")
        return np.array(flat, dtype=datatype.numpy_dtype)
    for index, value in enumerate(flat):
        if type(value) is not int and type(value) is not float:
            raise InputError(f"{what}: element {index} is not a number")
    try:
        wide = np.array(flat, dtype=np.float64)
    except OverflowError as exc:
        raise InputError(f"{what}: a number is too large for {datatype.value}") from exc
    with np.errstate(over="ignore", invalid="ignore"):
        array = wide.astype(datatype.numpy_dtype)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise InputError(
            f"{what}: element {int(bad[0])} is NaN, infinite or out of range for "
            f"{datatype.value}; send finite numbers"
        )
    return array


def outcome(convert: Callable[[], np.ndarray[Any, Any]]) -> tuple[object, ...]:
    """The dtype and bytes of the array made, or the message of the refusal."""
    try:
        array = convert()
    except InputError as exc:
        return ("refused", exc.message)
    return (array.dtype, array.tobytes())


def same_outcome(datatype: Datatype, flat: list[Any]) -> None:
    got = outcome(
        lambda: tensor_from_json(
            datatype, [len(flat)], flat, max_bytes_element=64, what="input 'x'"
        )
    )
    assert got == outcome(lambda: reference(datatype, flat))


EDGES = [0, -0.0, 1.5, -2, 65504.0, 65520.0, -70000.0, 3.4028234663852886e38, 3.5e38,
         1.7976931348623157e308, -1e308, 2**63, 2**1023, 2**1024, 10**400, float("inf"),
         float("nan"), True, "1", None]  # fmt: skip
FLOATS = [Datatype.FP16, Datatype.FP32, Datatype.FP64]
NUMBERS = st.one_of(
    st.floats(width=64),
    st.integers(-(2**70), 2**70),
    st.sampled_from(EDGES),
    st.floats(-7e4, 7e4),
)


@pytest.mark.parametrize("datatype", FLOATS)
@pytest.mark.parametrize(
    "flat",
    [[0.5, -1, 2.0], [], [1.0, 1e39], [65519.0, 1.0], [1.0, float("nan")], [1e308, 1e308, -1e308],
     [1, 2**1024], [0.5, True], [2.0**100, -(2.0**100)]],
)  # fmt: skip
def test_float_lists_convert_as_element_by_element(datatype: Datatype, flat: list[Any]) -> None:
    same_outcome(datatype, flat)


@settings(max_examples=300, deadline=None)
@given(datatype=st.sampled_from(FLOATS), flat=st.lists(NUMBERS, max_size=12))
def test_any_float_list_converts_as_element_by_element(datatype: Datatype, flat: list[Any]) -> None:
    same_outcome(datatype, flat)


@settings(max_examples=300, deadline=None)
@given(
    datatype=st.sampled_from([d for d in Datatype if d.is_integer] + [Datatype.BOOL]),
    flat=st.lists(
        st.one_of(st.integers(-(2**64), 2**65), st.booleans(), st.sampled_from([1.0, "1", None])),
        max_size=8,
    ),
)
def test_any_integer_or_bool_list_converts_as_element_by_element(
    datatype: Datatype, flat: list[Any]
) -> None:
    same_outcome(datatype, flat)


@pytest.mark.parametrize(
    ("datatype", "flat", "message"),
    [
        (Datatype.INT8, [1, 2, 3], None),
        (Datatype.INT8, [1, 2, 128], "element 2 is not an integer in [-128, 127]"),
        (Datatype.UINT64, [0, 2**64 - 1], None),
        (Datatype.UINT64, [0, True], "element 1 is not an integer"),
        (Datatype.BOOL, [True, False], None),
        (Datatype.BOOL, [True, 0], "element 1 is not a boolean"),
        (Datatype.FP32, [1.0, 2], None),
        (Datatype.FP32, [1.0, 1e39], "element 1 is NaN, infinite or out of range for FP32"),
        (Datatype.FP16, [1.0, 65520.0], "element 1 is NaN, infinite or out of range for FP16"),
    ],
)
def test_quick_and_slow_checks_name_the_same_element(
    datatype: Datatype, flat: list[Any], message: str | None
) -> None:
    same_outcome(datatype, flat)
    if message is not None:
        with pytest.raises(InputError, match=re.escape(message)):
            tensor_from_json(datatype, [len(flat)], flat, max_bytes_element=64, what="x")
