"""A restricted pickle machine that rebuilds a tensor checkpoint's structure, and nothing else.

It is not the auditor (``_pickle.py``), which models every pickle to report on
it: this one evaluates a pickle for real, but only over plain data (dict,
list, tuple, str, bytes, numbers, bool, None), ``collections.OrderedDict``,
persistent storage ids and the tensor-rebuild functions of
:mod:`bastion.scanning._tensor_refs`. Every other global, and every other way
of calling or building objects (``INST``, ``OBJ``, ``NEWOBJ``, ``BUILD`` on
anything but an ordered dict, extension codes, out-of-band buffers), is a
refusal. Nothing is imported or executed; the stream is read exactly up to
its ``STOP``, so that pickles followed by raw data can be read in sequence.
"""

from __future__ import annotations

import _compat_pickle
import struct
from typing import BinaryIO

from bastion.errors import InputError
from bastion.scanning._lenient import as_loaders_read
from bastion.scanning._limits import Limits
from bastion.scanning._tensor_refs import (
    OrderedDictValue,
    StorageRef,
    call_global,
    check_key,
    resolve_global,
    storage_ref,
)

__all__ = ["rebuild"]

_MAX_LINE = 1 << 16


class _Malformed(Exception):
    pass


class _Mark:
    pass


def rebuild(data: BinaryIO, limits: Limits, storages: dict[str, StorageRef]) -> object:
    """Evaluate one pickle at the position of ``data``; storages it names go in ``storages``.

    Raises :class:`InputError` for anything refused, malformed or over a limit.
    """
    start = data.tell()
    try:
        return _Machine(data, limits, storages).run()
    except InputError:
        raise
    except EOFError:
        raise InputError(
            "the checkpoint's pickle ends before its STOP opcode (truncated or not a pickle)"
        ) from None
    except _Malformed as exc:
        raise InputError(
            f"the checkpoint's pickle is malformed at byte {data.tell() - start}: {exc}"
        ) from None
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, RecursionError) as exc:
        raise InputError(
            f"the checkpoint's pickle is malformed ({type(exc).__name__}) "
            f"at byte {data.tell() - start}"
        ) from None


class _Machine:
    def __init__(self, data: BinaryIO, limits: Limits, storages: dict[str, StorageRef]) -> None:
        self.f = data
        self.limits = limits
        self.storages = storages
        self.stack: list[object] = []
        self.marks: list[list[object]] = []
        self.memo: dict[int, object] = {}
        self.proto = 0

    # -- reading -------------------------------------------------------------
    def take(self, n: int) -> bytes:
        if n < 0:
            raise _Malformed("negative length")
        if n > self.limits.max_inline_bytes:
            raise InputError(
                f"refusing to convert: the checkpoint's pickle holds a {n}-byte value "
                f"(the limit is {self.limits.max_inline_bytes})"
            )
        raw = self.f.read(n)
        if len(raw) != n:
            raise EOFError
        return raw

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "little")

    def line(self) -> bytes:
        raw = self.f.readline(_MAX_LINE)
        if not raw.endswith(b"\n"):
            raise EOFError if len(raw) < _MAX_LINE else _Malformed("line argument too long")
        return raw[:-1]

    def text(self, n: int) -> str:
        return self.take(n).decode("utf-8", "surrogatepass")

    # -- the stack -----------------------------------------------------------
    def push(self, value: object) -> None:
        self.stack.append(value)

    def pop(self) -> object:
        if not self.stack:
            raise _Malformed("stack underflow")
        return self.stack.pop()

    def top(self) -> object:
        if not self.stack:
            raise _Malformed("stack underflow")
        return self.stack[-1]

    def pop_mark(self) -> list[object]:
        if not self.marks:
            raise _Malformed("MARK expected")
        items = self.stack
        self.stack = self.marks.pop()
        return items

    def put(self, index: int) -> None:
        if len(self.memo) >= self.limits.max_memo and index not in self.memo:
            raise InputError("refusing to convert: the checkpoint's pickle memo is too large")
        self.memo[index] = self.top()

    def get(self, index: int) -> None:
        if index not in self.memo:
            raise _Malformed(f"memo key {index} used before it was stored")
        self.stack.append(self.memo[index])

    def global_(self, module: str, name: str) -> None:
        if self.proto < 3:  # Python 2 names, mapped as the real loader maps them
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        self.stack.append(resolve_global(module, name))

    def add_items(self, items: list[object]) -> None:
        target = self.top()
        if isinstance(target, list):
            target.extend(items)
        elif isinstance(target, dict):
            if len(items) % 2:
                raise _Malformed("SETITEMS with an odd number of items")
            for key, value in zip(items[::2], items[1::2], strict=True):
                target[check_key(key)] = value
        else:
            raise _Malformed("items added to a value that is not a list or dict")

    # -- the loop ------------------------------------------------------------
    def run(self) -> object:
        ops = 0
        while True:
            ops += 1
            if ops > self.limits.max_opcodes:
                raise InputError("refusing to convert: the checkpoint's pickle is too long")
            op = self.take(1)[0]
            if op == 0x2E:  # STOP
                value = self.pop()
                if self.stack or self.marks:
                    raise _Malformed("values left on the stack at STOP")
                return value
            self.step(op)

    def step(self, op: int) -> None:  # one branch per opcode, as in the standard pickle.py
        push = self.push  # not self.stack.append: MARK and TUPLE swap the stack
        if op == 0x80:  # PROTO
            self.proto = self.take(1)[0]
            if self.proto > 5:
                raise _Malformed("unsupported protocol")
        elif op == 0x95:  # FRAME
            self.take(8)
        elif op == 0x28:  # MARK
            self.marks.append(self.stack)
            self.stack = []
        elif op == 0x30:  # POP
            self.pop()
        elif op == 0x31:  # POP_MARK
            self.pop_mark()
        elif op == 0x32:  # DUP
            push(self.top())
        elif op == 0x4E:  # NONE
            push(None)
        elif op in (0x88, 0x89):  # NEWTRUE, NEWFALSE
            push(op == 0x88)
        elif op == 0x4B:  # BININT1
            push(self.uint(1))
        elif op == 0x4D:  # BININT2
            push(self.uint(2))
        elif op == 0x4A:  # BININT
            push(int.from_bytes(self.take(4), "little", signed=True))
        elif op == 0x8A:  # LONG1
            push(int.from_bytes(self.take(self.uint(1)), "little", signed=True))
        elif op == 0x8B:  # LONG4
            push(int.from_bytes(self.take(self.uint(4)), "little", signed=True))
        elif op in (0x49, 0x4C):  # INT, LONG (text)
            raw = self.line().strip().rstrip(b"L")
            push(raw == b"01" if raw in (b"00", b"01") else int(raw))
        elif op == 0x46:  # FLOAT (text)
            push(float(self.line()))
        elif op == 0x47:  # BINFLOAT
            push(struct.unpack(">d", self.take(8))[0])
        elif op == 0x53:  # STRING (quoted text)
            raw = self.line()
            if len(raw) < 2 or raw[:1] not in (b"'", b'"') or raw[-1:] != raw[:1]:
                raise _Malformed("STRING argument is not quoted")
            with as_loaders_read():
                push(raw[1:-1].decode("unicode_escape"))
        elif op == 0x56:  # UNICODE
            push(self.line().decode("raw_unicode_escape"))
        elif op == 0x54:  # BINSTRING (a Python 2 str; torch.load decodes it as UTF-8)
            push(self.text(int.from_bytes(self.take(4), "little", signed=True)))
        elif op == 0x55:  # SHORT_BINSTRING
            push(self.text(self.uint(1)))
        elif op == 0x43:  # SHORT_BINBYTES
            push(self.take(self.uint(1)))
        elif op == 0x42:  # BINBYTES
            push(self.take(self.uint(4)))
        elif op == 0x8E:  # BINBYTES8
            push(self.take(self.uint(8)))
        elif op == 0x58:  # BINUNICODE
            push(self.text(self.uint(4)))
        elif op == 0x8C:  # SHORT_BINUNICODE
            push(self.text(self.uint(1)))
        elif op == 0x8D:  # BINUNICODE8
            push(self.text(self.uint(8)))
        elif op == 0x29:  # EMPTY_TUPLE
            push(())
        elif op == 0x74:  # TUPLE
            push(tuple(self.pop_mark()))
        elif op == 0x85:  # TUPLE1
            push((self.pop(),))
        elif op == 0x86:  # TUPLE2
            b = self.pop()
            push((self.pop(), b))
        elif op == 0x87:  # TUPLE3
            c = self.pop()
            b = self.pop()
            push((self.pop(), b, c))
        elif op == 0x5D:  # EMPTY_LIST
            push([])
        elif op == 0x7D:  # EMPTY_DICT
            push({})
        elif op == 0x6C:  # LIST
            push(self.pop_mark())
        elif op == 0x64:  # DICT
            items = self.pop_mark()
            push({})
            self.add_items(items)
        elif op == 0x61:  # APPEND
            self.add_items([self.pop()])
        elif op == 0x73:  # SETITEM
            value = self.pop()
            key = self.pop()
            self.add_items([key, value])
        elif op in (0x65, 0x75):  # APPENDS, SETITEMS
            self.add_items(self.pop_mark())
        elif op == 0x94:  # MEMOIZE
            self.put(len(self.memo))
        elif op == 0x71:  # BINPUT
            self.put(self.uint(1))
        elif op == 0x72:  # LONG_BINPUT
            self.put(self.uint(4))
        elif op == 0x70:  # PUT
            self.put(int(self.line()))
        elif op == 0x68:  # BINGET
            self.get(self.uint(1))
        elif op == 0x6A:  # LONG_BINGET
            self.get(self.uint(4))
        elif op == 0x67:  # GET
            self.get(int(self.line()))
        elif op == 0x63:  # GLOBAL
            module = self.line().decode("utf-8")
            self.global_(module, self.line().decode("utf-8"))
        elif op == 0x93:  # STACK_GLOBAL
            name_value = self.pop()
            module_value = self.pop()
            if not (isinstance(module_value, str) and isinstance(name_value, str)):
                raise _Malformed("STACK_GLOBAL on values that are not strings")
            self.global_(module_value, name_value)
        elif op == 0x52:  # REDUCE
            args = self.pop()
            push(call_global(self.pop(), args))
        elif op == 0x69:  # INST: refused by its global's name, or as an instance
            module = self.line().decode("utf-8")
            self.global_(module, self.line().decode("utf-8"))
            raise _refused_opcode(op)
        elif op == 0x62:  # BUILD
            state = self.pop()
            if not (isinstance(self.top(), OrderedDictValue) and isinstance(state, dict | None)):
                raise InputError(
                    "refusing to convert: the checkpoint sets the state of an object "
                    "(BUILD), which only class instances need"
                )
        elif op == 0x51:  # BINPERSID
            ref = storage_ref(self.pop())
            known = self.storages.setdefault(ref.key, ref)
            if known != ref:
                raise InputError(
                    f"refusing to convert: storage {ref.key!r} is named with two types or sizes"
                )
            push(ref)
        else:
            raise _refused_opcode(op)


_REFUSED = {
    0x50: "a text persistent id (PERSID)",
    0x69: "a class instance (INST)",
    0x6F: "a class instance (OBJ)",
    0x81: "a class instance (NEWOBJ)",
    0x92: "a class instance (NEWOBJ_EX)",
    0x82: "a global through the extension registry (EXT1)",
    0x83: "a global through the extension registry (EXT2)",
    0x84: "a global through the extension registry (EXT4)",
    0x8F: "a set (EMPTY_SET)",
    0x90: "a set (ADDITEMS)",
    0x91: "a frozenset (FROZENSET)",
    0x96: "a bytearray (BYTEARRAY8)",
    0x97: "an out-of-band buffer (NEXT_BUFFER)",
    0x98: "an out-of-band buffer (READONLY_BUFFER)",
}


def _refused_opcode(op: int) -> Exception:
    if op in _REFUSED:
        return InputError(f"refusing to convert: the checkpoint's pickle builds {_REFUSED[op]}")
    return _Malformed(f"unknown opcode 0x{op:02x}")
