"""A tiny pickle assembler, so that malicious samples are written opcode by opcode.

Python's own pickler only writes what an object's ``__reduce__`` says, through the
opcodes it prefers. Scanner bypasses need more: a call whose callable is itself the
result of a call, a chosen protocol's spelling of a global, memo tricks, OBJ/INST,
a payload followed by garbage. An expression tree describes what the unpickler
should compute; :func:`assemble` turns it into opcodes. Nothing here runs anything:
it only writes bytes.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass
from typing import Any

__all__ = ["Build", "Call", "Global", "New", "Raw", "Seq", "assemble", "emit"]


@dataclass(frozen=True)
class Global:
    """``module.name`` as the unpickler resolves it (GLOBAL or STACK_GLOBAL)."""

    module: str
    name: str


@dataclass(frozen=True)
class Call:
    """``func(*args)`` through REDUCE; ``func`` may itself be any expression."""

    func: Any
    args: tuple[Any, ...] = ()

    def __init__(self, func: Any, *args: Any) -> None:
        object.__setattr__(self, "func", func)
        object.__setattr__(self, "args", args)


@dataclass(frozen=True)
class New:
    """``cls.__new__(cls, *args, **kwargs)`` through NEWOBJ, or NEWOBJ_EX with kwargs."""

    cls: Any
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] | None = None


@dataclass(frozen=True)
class Build:
    """``obj`` after BUILD with ``state``: ``obj.__setstate__(state)`` or a dict update."""

    obj: Any
    state: Any


@dataclass(frozen=True)
class Seq:
    """Compute each step, discard all but the last (POP): side effects, then a result."""

    steps: tuple[Any, ...]

    def __init__(self, *steps: Any) -> None:
        object.__setattr__(self, "steps", steps)


@dataclass(frozen=True)
class Raw:
    """Opcode bytes spliced in verbatim; they must leave exactly one value on the stack."""

    data: bytes


def _str(value: str, proto: int) -> bytes:
    data = value.encode("utf-8")
    if proto == 0:
        # Protocol 0 has only the line-based, raw-unicode-escaped UNICODE opcode.
        for char in "\\\0\n\r\x1a":  # as the pickle module escapes them
            value = value.replace(char, f"\\u{ord(char):04x}")
        return pickle.UNICODE + value.encode("raw-unicode-escape") + b"\n"
    if proto >= 4 and len(data) < 256:
        return pickle.SHORT_BINUNICODE + bytes([len(data)]) + data
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _int(value: int, proto: int) -> bytes:
    if proto == 0 or not -(2**31) <= value < 2**31:
        return pickle.INT + str(value).encode() + b"\n"
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    return pickle.BININT + struct.pack("<i", value)


def emit(node: Any, proto: int = 4) -> bytes:
    """Opcodes that push ``node``'s value (no PROTO, no STOP)."""
    if isinstance(node, Raw):
        return node.data
    if isinstance(node, Global):
        if proto >= 4:
            return _str(node.module, proto) + _str(node.name, proto) + pickle.STACK_GLOBAL
        return pickle.GLOBAL + f"{node.module}\n{node.name}\n".encode()
    if isinstance(node, Call):
        return emit(node.func, proto) + emit(tuple(node.args), proto) + pickle.REDUCE
    if isinstance(node, New):
        if node.kwargs is None:
            return emit(node.cls, proto) + emit(node.args, proto) + pickle.NEWOBJ
        parts = emit(node.cls, proto) + emit(node.args, proto) + emit(node.kwargs, proto)
        return parts + pickle.NEWOBJ_EX
    if isinstance(node, Build):
        return emit(node.obj, proto) + emit(node.state, proto) + pickle.BUILD
    if isinstance(node, Seq):
        *effects, result = node.steps
        return b"".join(emit(step, proto) + pickle.POP for step in effects) + emit(result, proto)
    if node is None:
        return pickle.NONE
    if isinstance(node, bool):
        if proto >= 2:
            return pickle.NEWTRUE if node else pickle.NEWFALSE
        return pickle.TRUE if node else pickle.FALSE
    if isinstance(node, int):
        return _int(node, proto)
    if isinstance(node, float):
        return pickle.BINFLOAT + struct.pack(">d", node)
    if isinstance(node, str):
        return _str(node, proto)
    if isinstance(node, bytes):
        if proto < 3:
            raise ValueError("bytes need protocol 3 or later")
        return pickle.BINBYTES + struct.pack("<I", len(node)) + node
    if isinstance(node, tuple):
        items = b"".join(emit(item, proto) for item in node)
        if proto >= 2 and len(node) <= 3:
            return (
                items + (pickle.EMPTY_TUPLE, pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[len(node)]
            )
        return pickle.MARK + items + pickle.TUPLE
    if isinstance(node, list):
        items = b"".join(emit(item, proto) for item in node)
        return pickle.MARK + items + pickle.LIST
    if isinstance(node, dict):
        items = b"".join(emit(k, proto) + emit(v, proto) for k, v in node.items())
        return pickle.MARK + items + pickle.DICT
    raise TypeError(f"cannot assemble {type(node).__name__}")


def assemble(node: Any, proto: int = 4, *, header: bool = True) -> bytes:
    """A complete pickle stream computing ``node``: PROTO (for protocol 2+), opcodes, STOP."""
    head = pickle.PROTO + bytes([proto]) if header and proto >= 2 else b""
    return head + emit(node, proto) + pickle.STOP
