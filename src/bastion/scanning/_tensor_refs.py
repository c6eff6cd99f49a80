"""What a checkpoint's pickle may name when it is converted, and the inert values it builds.

Only tensor-rebuild functions (``torch._utils._rebuild_tensor*``,
``_rebuild_parameter*``), ``collections.OrderedDict``, storage classes and
dtypes are honoured. None of them is imported: each becomes a plain reference
(:class:`StorageRef`, :class:`TensorRef`) that says which bytes to copy where.
Any other global is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeGuard

from bastion.errors import InputError

__all__ = [
    "ITEMSIZES",
    "SAFETENSORS_DTYPES",
    "DType",
    "OrderedDictValue",
    "StorageRef",
    "TensorRef",
    "call_global",
    "resolve_global",
    "storage_ref",
]

#: torch dtype name -> (safetensors dtype, bytes per element).
SAFETENSORS_DTYPES: dict[str, tuple[str, int]] = {
    "bool": ("BOOL", 1),
    "uint8": ("U8", 1),
    "int8": ("I8", 1),
    "float8_e5m2": ("F8_E5M2", 1),
    "float8_e4m3fn": ("F8_E4M3", 1),
    "int16": ("I16", 2),
    "uint16": ("U16", 2),
    "float16": ("F16", 2),
    "bfloat16": ("BF16", 2),
    "int32": ("I32", 4),
    "uint32": ("U32", 4),
    "float32": ("F32", 4),
    "float64": ("F64", 8),
    "int64": ("I64", 8),
    "uint64": ("U64", 8),
}
#: dtypes torch can pickle that safetensors cannot hold; named so the refusal is precise.
_OTHER_DTYPES = frozenset(
    {
        "complex32",
        "complex64",
        "complex128",
        "qint8",
        "quint8",
        "qint32",
        "quint4x2",
        "quint2x4",
        "float8_e5m2fnuz",
        "float8_e4m3fnuz",
        "float8_e8m0fnu",
        "float4_e2m1fn_x2",
        "bits8",
        "bits16",
        "bits1x8",
        "bits2x4",
        "bits4x2",
    }
)
#: Bytes per element of every dtype a storage class can have.
ITEMSIZES: dict[str, int] = {
    **{name: size for name, (_, size) in SAFETENSORS_DTYPES.items()},
    "complex64": 8,
    "complex128": 16,
    "qint8": 1,
    "quint8": 1,
    "qint32": 4,
    "quint4x2": 1,
    "quint2x4": 1,
}
_ALIASES = {
    "float": "float32",
    "double": "float64",
    "half": "float16",
    "short": "int16",
    "int": "int32",
    "long": "int64",
    "cfloat": "complex64",
    "cdouble": "complex128",
    "chalf": "complex32",
}
_STORAGE_DTYPES = {
    "UntypedStorage": "uint8",
    "ByteStorage": "uint8",
    "CharStorage": "int8",
    "ShortStorage": "int16",
    "IntStorage": "int32",
    "LongStorage": "int64",
    "HalfStorage": "float16",
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "BFloat16Storage": "bfloat16",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128",
    "QInt8Storage": "qint8",
    "QUInt8Storage": "quint8",
    "QInt32Storage": "qint32",
    "QUInt4x2Storage": "quint4x2",
    "QUInt2x4Storage": "quint2x4",
}
_REBUILD = "torch._utils."
_CALLABLE = frozenset(
    {
        "collections.OrderedDict",
        _REBUILD + "_rebuild_tensor",
        _REBUILD + "_rebuild_tensor_v2",
        _REBUILD + "_rebuild_tensor_v3",
        _REBUILD + "_rebuild_parameter",
        _REBUILD + "_rebuild_parameter_with_state",
    }
)


@dataclass(frozen=True, slots=True)
class DType:
    """A torch dtype named by the pickle (``torch.float32``), or a storage class's dtype."""

    name: str


@dataclass(frozen=True, slots=True)
class _StorageClass:
    dtype: str


@dataclass(frozen=True, slots=True)
class _Callable:
    qualified: str


@dataclass(frozen=True, slots=True)
class StorageRef:
    """One storage of the checkpoint: ``numel`` elements of ``dtype`` under ``key``."""

    key: str
    dtype: str
    numel: int


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor: a strided view of ``dtype`` elements of a storage, from element ``offset``."""

    storage: StorageRef
    dtype: str
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


class OrderedDictValue(dict[object, object]):
    """A dict built by ``collections.OrderedDict`` (which may carry ignored attributes)."""


def refuse(qualified: str, why: str = "which is not a tensor-rebuild function") -> InputError:
    return InputError(
        f"refusing to convert: the checkpoint uses {qualified}, {why}; only plain tensor "
        "checkpoints can be converted (scan it with `bastion scan`)"
    )


def resolve_global(module: str, name: str) -> object:
    """The inert stand-in for ``module.name``, or a refusal naming it."""
    qualified = f"{module}.{name}"
    if qualified in _CALLABLE:
        return _Callable(qualified)
    if qualified == "torch.storage.UntypedStorage":  # how torch pickles the class itself
        return _StorageClass("uint8")
    if module == "torch":
        if name in _STORAGE_DTYPES:
            return _StorageClass(_STORAGE_DTYPES[name])
        canonical = _ALIASES.get(name, name)
        if canonical in SAFETENSORS_DTYPES or canonical in _OTHER_DTYPES:
            return DType(canonical)
    raise refuse(qualified)


def storage_ref(pid: object) -> StorageRef:
    """The storage a persistent id names: ``('storage', class, key, location, numel[, None])``."""
    if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage":
        raise InputError(
            "refusing to convert: the checkpoint has a persistent id that is not a storage"
        )
    _, cls, key, location, numel, *view = pid
    if not isinstance(cls, _StorageClass):
        raise InputError("refusing to convert: a storage's type is not a torch storage class")
    if not isinstance(key, str) or not isinstance(location, str):
        raise InputError("refusing to convert: a storage's key or location is not a string")
    if not _is_count(numel):
        raise InputError("refusing to convert: a storage's size is not a count")
    if view and view[0] is not None:
        raise InputError("refusing to convert: storage views of the pre-1.6 format are not read")
    return StorageRef(key, cls.dtype, numel)


def call_global(func: object, args: object) -> object:
    """The value of ``func(*args)`` for the honoured callables; a refusal for anything else."""
    if not isinstance(func, _Callable):
        raise InputError(f"refusing to convert: the checkpoint calls {_describe(func)}")
    if not isinstance(args, tuple):
        raise InputError(f"refusing to convert: {func.qualified} is called without a tuple")
    name = func.qualified.rpartition(".")[2]
    if name == "OrderedDict":
        return _ordered_dict(args)
    if name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
        if len(args) != (3 if name == "_rebuild_parameter" else 4) or not isinstance(
            args[0], TensorRef
        ):
            raise _bad_args(func.qualified)
        return args[0]
    return _tensor(func.qualified, name, args)


def _ordered_dict(args: tuple[object, ...]) -> OrderedDictValue:
    result = OrderedDictValue()
    if not args:
        return result
    if len(args) != 1 or not isinstance(args[0], list | tuple):
        raise _bad_args("collections.OrderedDict")
    for pair in args[0]:
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise _bad_args("collections.OrderedDict")
        result[check_key(pair[0])] = pair[1]
    return result


def _tensor(qualified: str, name: str, args: tuple[object, ...]) -> TensorRef:
    arity = {"_rebuild_tensor": (4, 4), "_rebuild_tensor_v2": (6, 7), "_rebuild_tensor_v3": (7, 8)}
    low, high = arity[name]
    if not low <= len(args) <= high:
        raise _bad_args(qualified)
    storage, offset, shape, stride = args[:4]
    if not isinstance(storage, StorageRef) or not _is_count(offset):
        raise _bad_args(qualified)
    if not (isinstance(shape, tuple) and all(_is_count(d) for d in shape)):
        raise _bad_args(qualified)
    if not (isinstance(stride, tuple) and all(_is_count(d) for d in stride)):
        raise _bad_args(qualified)
    if len(shape) != len(stride):
        raise _bad_args(qualified)
    dtype = storage.dtype
    if name == "_rebuild_tensor_v3":
        given = args[6]
        if not isinstance(given, DType) or storage.dtype != "uint8":
            raise _bad_args(qualified)
        dtype = given.name
    return TensorRef(storage, dtype, offset, shape, stride)


def check_key(key: object) -> object:
    """Dict keys a checkpoint may use: scalars only (names are built from them)."""
    if key is None or isinstance(key, str | int | float):
        return key
    raise InputError(
        f"refusing to convert: the checkpoint has a dict key of type {type(key).__name__}"
    )


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _bad_args(qualified: str) -> InputError:
    return InputError(f"refusing to convert: {qualified} is called with unexpected arguments")


def _describe(func: object) -> str:
    if isinstance(func, DType | _StorageClass):
        return "a dtype or storage class, which is not a tensor-rebuild function"
    return f"a value of type {type(func).__name__}, which is not a function"
