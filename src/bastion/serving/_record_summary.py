"""A bounded summary of a call's outputs for its inference record: never the tensors."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["summarise_outputs"]

SUMMARY_VALUES = 8
SUMMARY_TEXT_LENGTH = 64
#: Float outputs up to this many elements are summarised in Python, quicker than numpy there.
SMALL_FLOAT_OUTPUT = 32
#: Outputs summarised per record; those of a model with more are left out.
SUMMARY_OUTPUTS = 16
#: Longest line :func:`read_records` accepts, in bytes.


def summarise_outputs(outputs: Mapping[str, np.ndarray[Any, Any]]) -> dict[str, object]:
    """A small, bounded description of each output: datatype, shape and a few values.

    Integer, bool and BYTES outputs show their first values (BYTES decoded as UTF-8 with
    replacement and cut short); float outputs show min and max and the argmax of each of the
    first rows (the first values when they have no second dimension). Never the full tensor.
    """
    summary: dict[str, object] = {}
    for name, value in list(outputs.items())[:SUMMARY_OUTPUTS]:
        summary[name] = _summarise(np.asarray(value))
    return summary


def _datatype(dtype: np.dtype[Any]) -> str:
    kind, bits = dtype.kind, dtype.itemsize * 8
    if kind in "iu":
        return f"{'U' if kind == 'u' else ''}INT{bits}"
    if kind == "f":
        return f"FP{bits}"
    return {"b": "BOOL", "O": "BYTES", "S": "BYTES", "U": "BYTES"}.get(kind, str(dtype))


def _summarise(array: np.ndarray[Any, Any]) -> dict[str, object]:
    kind = array.dtype.kind
    entry: dict[str, object] = {"datatype": _datatype(array.dtype), "shape": list(array.shape)}
    if kind == "f":
        if array.size:
            _summarise_floats(array, entry)
    elif kind in "biu":
        entry["values"] = array.flat[:SUMMARY_VALUES].tolist()
    elif kind in "OSU":
        entry["values"] = [_text(value) for value in array.flat[:SUMMARY_VALUES].tolist()]
    return entry


def _summarise_floats(array: np.ndarray[Any, Any], entry: dict[str, object]) -> None:
    """Min, max and per-row argmax (or first values); in Python when that is quicker."""
    rows = array.shape[0] if array.ndim >= 2 else 0
    argmax: list[int] = []
    if array.size <= SMALL_FLOAT_OUTPUT:  # numpy's per-call overhead dominates here
        flat: list[float] = array.ravel().tolist()
        total = sum(flat)
        nan = total != total and any(value != value for value in flat)
        low, high = (math.nan, math.nan) if nan else (min(flat), max(flat))
        width = len(flat) // rows if rows else 0
        for row in range(min(rows, SUMMARY_VALUES)):
            argmax.append(_first_max(flat[row * width : (row + 1) * width], nan))
    else:
        low, high = array.min(), array.max()
        if rows:
            first = array[:SUMMARY_VALUES]
            argmax = first.reshape(len(first), -1).argmax(axis=1).tolist()
    entry["min"], entry["max"] = _number(low), _number(high)
    if rows:
        entry["argmax"] = argmax
    else:
        entry["values"] = [_number(value) for value in array.flat[:SUMMARY_VALUES].tolist()]


def _first_max(row: list[float], nan: bool) -> int:
    """The index numpy's argmax gives: the first NaN, else the first largest value."""
    if nan:
        for index, value in enumerate(row):
            if value != value:
                return index
    return row.index(max(row))


def _text(value: object) -> str:
    if isinstance(value, bytes):
        value = value[: SUMMARY_TEXT_LENGTH * 4].decode("utf-8", errors="replace")
    return str(value)[:SUMMARY_TEXT_LENGTH]


def _number(value: object) -> float | str:
    number = float(value)  # type: ignore[arg-type]
    return number if math.isfinite(number) else str(number)  # "nan", "inf": strict JSON


# -- writing -------------------------------------------------------------------------------------
