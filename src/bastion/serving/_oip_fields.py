"""Checks for the small fields of an OIP request: object keys, parameters and shapes.

Each check raises InputError naming the field and what was wrong, and never echoes more
than a short prefix of what the caller sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set

from bastion.errors import InputError
from bastion.serving._tensor_data import element_count
from bastion.serving._tensors import MAX_RANK, TensorSpec

__all__ = ["Scalar", "check_keys", "check_parameters", "check_shape", "show_names"]

#: A parameter value: the simple JSON scalars.
Scalar = str | int | float | bool

#: Most parameters one object may carry, and the longest key and string value.
MAX_PARAMETERS = 64
MAX_PARAMETER_KEY = 128
MAX_PARAMETER_TEXT = 1024
#: Parameters that would make the server read memory or run an extension Bastion refuses.
REFUSED_PARAMETERS = {
    "shared_memory_region": "shared memory is not supported; send the data in the request",
    "shared_memory_byte_size": "shared memory is not supported; send the data in the request",
    "shared_memory_offset": "shared memory is not supported; send the data in the request",
    "classification": "the classification extension is not supported; ask for raw outputs",
}


def show_names(specs: Iterable[TensorSpec]) -> str:
    """Up to 16 tensor names, quoted and comma-separated, for an error message."""
    names = [repr(spec.name) for spec in specs]
    return ", ".join(names[:16]) + (", ..." if len(names) > 16 else "")


def check_keys(
    value: object, what: str, allowed: Set[str], required: Set[str]
) -> Mapping[str, object]:
    """``value`` as a JSON object with only ``allowed`` keys and every ``required`` one."""
    if not isinstance(value, dict):
        raise InputError(f"{what}: expected a JSON object")
    keys = value.keys()
    if keys <= allowed and keys >= required:  # the usual case, without sorting anything
        return value
    unknown = sorted(key for key in value if key not in allowed)
    if unknown:
        raise InputError(
            f"{what}: unknown field {unknown[0][:64]!r}; allowed: {', '.join(sorted(allowed))}"
        )
    missing = sorted(required - value.keys())
    if missing:
        raise InputError(f"{what}: missing field(s) {', '.join(missing)}")
    return value


def check_parameters(value: object, what: str) -> dict[str, Scalar]:
    """An OIP ``$parameters`` object: at most 64 entries, each value a simple JSON scalar."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InputError(f"{what}: expected a JSON object")
    if len(value) > MAX_PARAMETERS:
        raise InputError(f"{what}: {len(value)} parameters; the limit is {MAX_PARAMETERS}")
    parameters: dict[str, Scalar] = {}
    for key, item in value.items():
        if len(key) > MAX_PARAMETER_KEY:
            raise InputError(f"{what}: a parameter name is over {MAX_PARAMETER_KEY} characters")
        if key in REFUSED_PARAMETERS:
            raise InputError(f"{what}: {key!r} is refused: {REFUSED_PARAMETERS[key]}")
        if isinstance(item, str) and len(item) > MAX_PARAMETER_TEXT:
            raise InputError(f"{what}: {key[:64]!r} is over {MAX_PARAMETER_TEXT} characters long")
        if not isinstance(item, (str, int, float, bool)):
            raise InputError(
                f"{what}: {key[:64]!r} must be a string, number or boolean, not "
                f"{'null' if item is None else 'a list or object'}"
            )
        parameters[key] = item
    return parameters


def _show(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(dim) for dim in shape) + "]"


def check_shape(
    value: object,
    spec: TensorSpec,
    *,
    max_batch: int,
    max_elements: int,
    what: str,
    empty: bool = False,
) -> tuple[int, ...]:
    """The ``shape`` given for ``spec``, if it fits the declaration and the limits.

    The first dimension, when declared variable (-1), is the batch and bounded by
    ``max_batch``; the element count is bounded by ``max_elements``, and so is the
    product of the non-zero dimensions, which numpy must lay out even for a tensor of
    no elements. Such an empty tensor is refused unless ``empty`` (a model's answer may
    hold one; a request to it may not).
    """
    if not isinstance(value, list) or len(value) > MAX_RANK:
        raise InputError(f"{what}: 'shape' must be a list of at most {MAX_RANK} integers")
    for dim in value:
        if type(dim) is not int or dim < 0:
            raise InputError(f"{what}: 'shape' dimensions must be non-negative integers")
    shape: tuple[int, ...] = tuple(value)
    if not spec.matches_shape(shape):
        raise InputError(f"{what}: expected shape {_show(spec.shape)}, got {_show(shape)}")
    if spec.shape and spec.shape[0] == -1 and shape[0] > max_batch:
        raise InputError(
            f"{what}: batch size {shape[0]} is over the limit of {max_batch}; split the request"
        )
    count = element_count(shape)
    if count > max_elements:
        raise InputError(
            f"{what}: {count} elements is over the limit of {max_elements} per tensor; "
            "send a smaller tensor"
        )
    if not count:
        if not empty:
            raise InputError(f"{what}: shape {_show(shape)} holds no elements; send at least one")
        if element_count(tuple(dim for dim in shape if dim)) > max_elements:
            raise InputError(
                f"{what}: shape {_show(shape)} is over the limit of {max_elements} elements "
                "per tensor in its non-zero dimensions"
            )
    return shape
