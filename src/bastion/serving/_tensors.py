"""Tensor datatypes and a model's declared inputs and outputs (Open Inference Protocol).

:class:`Datatype` names the OIP tensor datatypes and maps each to its numpy dtype and its
size in the binary tensor data extension. :class:`TensorSpec` is one declared tensor
(name, datatype, shape with ``-1`` for a variable dimension) and :class:`ModelSignature` a
model's inputs and outputs, checked when built and rendered as the OIP model metadata JSON.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bastion.errors import InputError

__all__ = ["Datatype", "ModelSignature", "TensorSpec"]

#: Longest tensor name accepted, in characters.
MAX_TENSOR_NAME_LENGTH = 256
#: Most dimensions a declared tensor may have.
MAX_RANK = 16


class Datatype(enum.StrEnum):
    """An OIP tensor datatype, spelled as on the wire (``"FP32"``, ``"BYTES"``, ...)."""

    BOOL = "BOOL"
    UINT8 = "UINT8"
    UINT16 = "UINT16"
    UINT32 = "UINT32"
    UINT64 = "UINT64"
    INT8 = "INT8"
    INT16 = "INT16"
    INT32 = "INT32"
    INT64 = "INT64"
    FP16 = "FP16"
    FP32 = "FP32"
    FP64 = "FP64"
    BYTES = "BYTES"

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        """The little-endian numpy dtype holding this datatype (object for BYTES)."""
        return _DTYPES[self]

    @property
    def itemsize(self) -> int | None:
        """Bytes per element in the binary extension; None for BYTES (length-prefixed)."""
        return None if self is Datatype.BYTES else self.numpy_dtype.itemsize

    @property
    def is_integer(self) -> bool:
        """Whether this is a signed or unsigned integer datatype."""
        return self in _INTEGERS

    @property
    def is_float(self) -> bool:
        """Whether this is a floating-point datatype (FP16, FP32, FP64)."""
        return self in _FLOATS

    @classmethod
    def parse(cls, value: object, *, what: str) -> Datatype:
        """The datatype named ``value``; InputError naming ``what`` if it is not one."""
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        shown = value[:32] if isinstance(value, str) else type(value).__name__
        raise InputError(
            f"{what}: unknown datatype {shown!r}; use one of {', '.join(d.value for d in cls)}"
        )


#: Looked up on every request, so built once.
_DTYPES: dict[Datatype, np.dtype[Any]] = {
    Datatype.BOOL: np.dtype("?"),
    Datatype.UINT8: np.dtype("u1"),
    Datatype.UINT16: np.dtype("<u2"),
    Datatype.UINT32: np.dtype("<u4"),
    Datatype.UINT64: np.dtype("<u8"),
    Datatype.INT8: np.dtype("i1"),
    Datatype.INT16: np.dtype("<i2"),
    Datatype.INT32: np.dtype("<i4"),
    Datatype.INT64: np.dtype("<i8"),
    Datatype.FP16: np.dtype("<f2"),
    Datatype.FP32: np.dtype("<f4"),
    Datatype.FP64: np.dtype("<f8"),
    Datatype.BYTES: np.dtype("O"),
}
_INTEGERS = frozenset(d for d in Datatype if d.value.startswith(("INT", "UINT")))
_FLOATS = frozenset(d for d in Datatype if d.value.startswith("FP"))


def _check_name(name: object, *, what: str) -> str:
    if not isinstance(name, str) or not name:
        raise InputError(f"{what}: a tensor name must be a non-empty string")
    if len(name) > MAX_TENSOR_NAME_LENGTH or not name.isprintable():
        raise InputError(
            f"{what}: tensor name must be printable and at most {MAX_TENSOR_NAME_LENGTH} characters"
        )
    return name


def _check_shape(shape: object, *, what: str) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_RANK:
        raise InputError(f"{what}: shape must be a list of at most {MAX_RANK} integers")
    dims: list[int] = []
    for dim in shape:
        if type(dim) is not int or dim < -1:
            raise InputError(
                f"{what}: shape dimensions must be integers >= 0, or -1 for a variable one"
            )
        dims.append(dim)
    return tuple(dims)


@dataclass(frozen=True)
class TensorSpec:
    """One declared tensor: its name, datatype and shape (``-1`` marks a variable dimension)."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        name = _check_name(self.name, what="tensor")
        what = f"tensor {name!r}"
        object.__setattr__(self, "datatype", Datatype.parse(self.datatype, what=what))
        object.__setattr__(self, "shape", _check_shape(self.shape, what=what))

    def matches_shape(self, shape: Sequence[int]) -> bool:
        """Whether a concrete ``shape`` fits this declaration (same rank, -1 dims free)."""
        if len(shape) != len(self.shape):
            return False
        # A loop, not all(): twice as quick at these sizes, and this runs on every call.
        for want, got in zip(self.shape, shape, strict=True):
            if want != got and want != -1:
                return False
        return True

    def to_metadata(self) -> dict[str, object]:
        """The OIP ``$metadata_tensor`` object: name, datatype and shape."""
        return {"name": self.name, "datatype": self.datatype.value, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: object, *, what: str) -> TensorSpec:
        """A spec from an OIP ``$metadata_tensor`` object; InputError if it is malformed."""
        if not isinstance(data, Mapping) or not {"name", "datatype", "shape"} <= data.keys():
            raise InputError(f"{what}: expected an object with name, datatype and shape")
        name = _check_name(data["name"], what=what)
        what = f"{what} {name!r}"
        return cls(
            name,
            Datatype.parse(data["datatype"], what=what),
            _check_shape(data["shape"], what=what),
        )


def _check_unique(specs: object, *, what: str) -> tuple[TensorSpec, ...]:
    if not isinstance(specs, (list, tuple)) or not specs:
        raise InputError(f"{what}: declare at least one tensor")
    if not all(isinstance(spec, TensorSpec) for spec in specs):
        raise InputError(f"{what}: every entry must be a TensorSpec")
    names = [spec.name for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InputError(f"{what}: tensor names must be unique; repeated: {duplicates}")
    return tuple(specs)


@dataclass(frozen=True)
class ModelSignature:
    """A model's declared inputs and outputs, each name unique within its side."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", _check_unique(self.inputs, what="model inputs"))
        object.__setattr__(self, "outputs", _check_unique(self.outputs, what="model outputs"))

    def input(self, name: str) -> TensorSpec | None:
        """The declared input called ``name``, or None."""
        for spec in self.inputs:
            if spec.name == name:
                return spec
        return None

    def output(self, name: str) -> TensorSpec | None:
        """The declared output called ``name``, or None."""
        for spec in self.outputs:
            if spec.name == name:
                return spec
        return None

    def to_metadata(
        self, name: str, versions: Sequence[str] = (), platform: str = ""
    ) -> dict[str, object]:
        """The OIP model metadata response: name, versions, platform, inputs and outputs."""
        return {
            "name": name,
            "versions": list(versions),
            "platform": platform,
            "inputs": [spec.to_metadata() for spec in self.inputs],
            "outputs": [spec.to_metadata() for spec in self.outputs],
        }

    @classmethod
    def from_dict(cls, metadata: object) -> ModelSignature:
        """The signature in an OIP model metadata response (as from Triton or KServe).

        Raises InputError when the document is not model metadata or declares bad tensors.
        """
        if not isinstance(metadata, Mapping):
            raise InputError("model metadata must be a JSON object with inputs and outputs")
        sides: dict[str, tuple[TensorSpec, ...]] = {}
        for side in ("inputs", "outputs"):
            entries = metadata.get(side)
            if not isinstance(entries, list) or not entries:
                raise InputError(f"model metadata: {side!r} must be a non-empty list")
            sides[side] = tuple(
                TensorSpec.from_dict(entry, what=f"model metadata {side}[{index}]")
                for index, entry in enumerate(entries)
            )
        return cls(sides["inputs"], sides["outputs"])
