"""A static model of the pickle machine: parse, then audit, never execute.

Every opcode of protocols 0-5 is interpreted over a symbolic stack and memo, so
that every global is resolved, however it is spelled: ``GLOBAL`` and ``INST``
lines, ``STACK_GLOBAL`` with names built through the memo, dotted names, and
the extension registry. Every call is recorded: ``REDUCE``, ``INST``, ``OBJ``,
``NEWOBJ``, ``NEWOBJ_EX``, and ``BUILD`` on a class or a module. Strings and
bytes larger than 1 MiB are skipped by seeking and remembered by offset, never
held in memory. joblib's arrays, written raw between opcodes, are skipped
by size; its object arrays are nested pickles and are audited as such, and so
is any bytes value handed to a pickle loader (directly, in a ``BytesIO`` or as
base64). Memo references are shared, as the real unpickler shares them, so a
memo-expansion bomb costs the audit no more than its opcodes; what it would cost
anything that walks the result is measured at STOP and reported.

The audit never imports or executes anything from the file.
"""

from __future__ import annotations

import _compat_pickle
import binascii
import io
from dataclasses import dataclass, field
from typing import BinaryIO

from bastion.scanning._lenient import as_loaders_read
from bastion.scanning._limits import Limits
from bastion.scanning._profiles import judge_global
from bastion.scanning._report import Finding, Severity

__all__ = ["scan_pickle"]

_CHUNK = 1 << 20
#: Values larger than this are not kept (the memo would hold them to the end of
#: the stream); they are skipped and remembered by offset and length.
_HOLD = 1 << 20
_MAX_LINE = 1 << 16
#: Callables that unpickle bytes handed to them, and which argument holds the bytes.
_NESTED_LOADERS: dict[str, int] = {
    "pickle.loads": 0,
    "_pickle.loads": 0,
    "pickle.load": 0,
    "_pickle.load": 0,
    "dill.loads": 0,
    "dill.load": 0,
    "joblib.load": 0,
    "torch.load": 0,
    "torch.serialization.load": 0,
    "torch.storage._load_from_bytes": 0,
    "lib2to3.pgen2.grammar.Grammar.loads": 1,
    "torch.utils._config_module.ConfigModule.load_config": 1,
    "torch.utils.data.datapipes.utils.decoder.basichandlers": 1,
}
#: Calls that only wrap bytes on their way to a loader.
_BYTES_IO = frozenset({"io.BytesIO", "_io.BytesIO"})
_BASE64 = frozenset({"base64.b64decode", "base64.standard_b64decode", "binascii.a2b_base64"})
#: Items kept per list; references to containers beyond it are still counted (see
#: ``_Overflow``), other items are dropped.
_MAX_ITEMS = 1_000_000
#: A result that expands, walked as a tree, to more than this many values, or this
#: many per opcode, is a memo-expansion bomb.
_EXPANSION_FLOOR = 10_000_000
_EXPANSION_RATIO = 64
_JOBLIB_WRAPPERS = frozenset(
    {
        "joblib.numpy_pickle.NumpyArrayWrapper",
        "sklearn.externals.joblib.numpy_pickle.NumpyArrayWrapper",
    }
)


class PickleError(Exception):
    """The stream is not a well-formed pickle at ``offset``."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True, slots=True)
class _Global:
    module: str
    name: str

    @property
    def qualified(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass(slots=True)
class _Call:
    func: object
    args: object
    state: object = None


@dataclass(frozen=True, slots=True)
class _Skipped:
    """A string or bytes value too large to hold: where it lies, not what it is."""

    length: int
    offset: int
    text: bool


class _Mark:
    pass


_MARK = _Mark()
_UNKNOWN = object()


@dataclass(slots=True)
class _Audit:
    path: str
    member: str | None
    format: str
    limits: Limits
    depth: int
    findings: list[Finding] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, rule: str, severity: Severity, message: str, offset: int | None) -> None:
        self.findings.append(
            Finding(rule, severity, message, self.path, self.format, self.member, offset)
        )

    def on_global(self, g: _Global, offset: int) -> None:
        if (g.module, g.name) in self.seen:
            return
        self.seen.add((g.module, g.name))
        verdict = judge_global(g.module, g.name)
        if verdict.allowed:
            return
        if verdict.dangerous:
            self.add(
                "pickle.global.dangerous",
                Severity.CRITICAL,
                f"imports {g.qualified}, which {verdict.reason}",
                offset,
            )
        else:
            self.add(
                "pickle.global.not-allowed",
                Severity.HIGH,
                f"imports {g.qualified}: {verdict.reason}",
                offset,
            )


class _Reader:
    """Buffered, seekable reading with absolute offsets."""

    def __init__(self, f: BinaryIO) -> None:
        self.f = f
        self.base = f.tell()
        self.buf = b""
        self.pos = 0

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def _fill(self) -> bool:
        self.base += self.pos
        rest = self.buf[self.pos :]
        more = self.f.read(_CHUNK)
        self.buf = rest + more
        self.pos = 0
        return bool(more)

    def byte(self) -> int:
        if self.pos >= len(self.buf) and not self._fill():
            raise EOFError
        b = self.buf[self.pos]
        self.pos += 1
        return b

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end <= len(self.buf):
            data = self.buf[self.pos : end]
            self.pos = end
            return data
        # One read for the rest: refilling chunk by chunk would copy it again each time.
        head = self.buf[self.pos :]
        more = self.f.read(n - len(head))
        if len(more) < n - len(head):
            raise EOFError
        self.base += len(self.buf) + len(more)
        self.buf, self.pos = b"", 0
        return head + more

    def skip(self, n: int) -> None:
        available = len(self.buf) - self.pos
        if n <= available:
            self.pos += n
            return
        target = self.offset + n
        if target > _size(self.f):  # also before seeking: a huge length is EINVAL on a file
            raise EOFError
        self.f.seek(target)
        if self.f.tell() != target:
            raise EOFError
        self.base, self.buf, self.pos = target, b"", 0

    def line(self) -> bytes:
        while True:
            end = self.buf.find(b"\n", self.pos)
            if end >= 0:
                data = self.buf[self.pos : end]
                self.pos = end + 1
                return data
            if len(self.buf) - self.pos > _MAX_LINE:
                raise PickleError("line argument too long", self.offset)
            if not self._fill():
                raise EOFError

    def sync(self) -> None:
        """Leave the underlying file positioned right after what was consumed."""
        self.f.seek(self.offset)
        self.base, self.buf, self.pos = self.offset, b"", 0


def _size(f: BinaryIO) -> int:
    here = f.tell()
    end = f.seek(0, io.SEEK_END)
    f.seek(here)
    return end


def scan_pickle(
    data: BinaryIO,
    *,
    path: str,
    member: str | None,
    format: str,
    limits: Limits,
    streams: int | None = None,
    depth: int = 0,
) -> list[Finding]:
    """Audit the pickle stream(s) at the current position of ``data``.

    With ``streams=None``, every concatenated stream up to the end of the data
    is audited; with a number, exactly that many, and ``data`` is left right
    after the last one.
    """
    audit = _Audit(path, member, format, limits, depth)
    reader = _Reader(data)
    count = 0
    while streams is None or count < streams:
        if streams is None and count and _at_end(reader):
            break
        start = reader.offset
        try:
            _run(reader, audit)
        except EOFError:
            audit.add(
                "scan.incomplete",
                Severity.MEDIUM,
                "the pickle stream ends before its STOP opcode (truncated or not a pickle); "
                "opcodes before the damage would still run",
                start,
            )
            break
        except PickleError as exc:
            audit.add(
                "scan.incomplete",
                Severity.MEDIUM,
                f"the pickle stream is malformed: {exc}",
                exc.offset,
            )
            break
        except _LimitReached as exc:
            audit.add("scan.limit", Severity.MEDIUM, str(exc), start)
            break
        except (ValueError, TypeError, IndexError, OverflowError, RecursionError) as exc:
            audit.add(
                "scan.incomplete",
                Severity.MEDIUM,
                f"the pickle stream is malformed ({type(exc).__name__})",
                reader.offset,
            )
            break
        count += 1
    reader.sync()
    return audit.findings


def _at_end(reader: _Reader) -> bool:
    if reader.pos < len(reader.buf):
        return False
    return not reader._fill()


class _LimitReached(Exception):
    pass


def _run(r: _Reader, a: _Audit) -> None:
    stack: list[object] = []
    marks: list[list[object]] = []
    memo: dict[int, object] = {}
    limit = a.limits.max_opcodes
    ops = 0
    roots: list[object] = []  # arguments of every call and BUILD: what loading walks
    overflow: _Overflow = {}
    shared = False  # whether a container was referenced twice (memo GET or DUP)
    proto = 0
    frame_end = -1  # offset where the current FRAME ends; -1 outside frames

    def global_(module: str, name: str, at: int) -> _Global:
        # Python 3 maps Python 2 names for protocols below 3, as the real loader does.
        if proto < 3:
            module, name = _compat_pickle.NAME_MAPPING.get((module, name), (module, name))
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        g = _Global(module, name)
        a.on_global(g, at)
        return g

    def pop_mark() -> list[object]:
        nonlocal stack
        if not marks:
            raise PickleError("MARK expected", r.offset)
        items = stack
        stack = marks.pop()
        return items

    def pop() -> object:
        if not stack:
            raise PickleError("stack underflow", r.offset)
        return stack.pop()

    def top() -> object:
        if not stack:
            raise PickleError("stack underflow", r.offset)
        return stack[-1]

    def blob(n: int, text: bool) -> object:
        if n < 0:
            raise PickleError("negative length", r.offset)
        if n > _HOLD:
            start = r.offset
            r.skip(n)
            return _Skipped(n, start, text)
        raw = r.take(n)
        if not text:
            return raw
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            raise PickleError("a text argument is not UTF-8", r.offset) from None

    def put(index: int, value: object) -> None:
        if len(memo) >= a.limits.max_memo and index not in memo:
            raise _LimitReached("the pickle memo exceeds its limit")
        memo[index] = value

    def get(index: int) -> object:
        if index not in memo:
            raise PickleError(f"memo key {index} used before it was stored", r.offset)
        return memo[index]

    def call(func: object, args: object, at: int, kind: str) -> _Call:
        roots.append(args)
        if isinstance(func, _Global):
            if func.qualified in _NESTED_LOADERS:
                _nested(args, _NESTED_LOADERS[func.qualified], a, at, r)
        elif func is _UNKNOWN:
            pass  # an unresolved or extension global: already a finding
        elif not isinstance(func, _Call):
            raise PickleError(f"{kind} on a value that cannot be called", at)
        else:
            a.add(
                "pickle.call.indirect",
                Severity.HIGH,
                f"{kind} calls the result of another call (a gadget chain)",
                at,
            )
        return _Call(func, args)

    while True:
        at = r.offset
        if at > frame_end >= 0:
            # Opcodes may not straddle frames; loaders disagree on such streams
            # (CPython's C unpickler drops the frame's rest), so what runs is not
            # what a linear reading shows.
            a.add(
                "pickle.frame-straddle",
                Severity.HIGH,
                "an opcode crosses the end of its FRAME: loaders read such a stream "
                "differently, a known way to hide code from scanners",
                at,
            )
            raise PickleError("an opcode crosses the end of its frame", at)
        if at == frame_end:
            frame_end = -1
        op = r.byte()
        ops += 1
        if ops > limit:
            raise _LimitReached(f"the pickle exceeds {limit} opcodes")
        if op == 0x80:  # PROTO
            proto = r.byte()
            if proto > 5:
                raise PickleError("unsupported protocol", at)
        elif op == 0x95:  # FRAME
            if frame_end >= 0:
                raise PickleError("a FRAME inside a frame", at)
            frame_end = r.offset + 8 + int.from_bytes(r.take(8), "little")
        elif op == 0x2E:  # STOP
            if shared:
                _check_expansion(a, [stack[-1] if stack else None, *roots], overflow, ops, at)
            return
        elif op == 0x28:  # MARK
            marks.append(stack)
            stack = []
        elif op == 0x30:  # POP
            if stack:
                stack.pop()
            else:
                pop_mark()
        elif op == 0x31:  # POP_MARK
            pop_mark()
        elif op == 0x32:  # DUP
            stack.append(stack[-1] if stack else pop())
            shared = shared or _is_container(stack[-1])
        # -- constants ---------------------------------------------------------
        elif op == 0x4E:  # NONE
            stack.append(None)
        elif op in (0x88, 0x89):  # NEWTRUE, NEWFALSE
            stack.append(op == 0x88)
        elif op == 0x4B:  # BININT1
            stack.append(r.byte())
        elif op == 0x4D:  # BININT2
            stack.append(int.from_bytes(r.take(2), "little"))
        elif op == 0x4A:  # BININT
            stack.append(int.from_bytes(r.take(4), "little", signed=True))
        elif op == 0x8A:  # LONG1
            stack.append(int.from_bytes(r.take(r.byte()), "little", signed=True))
        elif op == 0x8B:  # LONG4
            n = int.from_bytes(r.take(4), "little", signed=True)
            if n > _HOLD or n < 0:
                raise PickleError("LONG4 too large", at)
            stack.append(int.from_bytes(r.take(n), "little", signed=True))
        elif op in (0x49, 0x4C, 0x46):  # INT, LONG, FLOAT (text)
            text = r.line()
            stack.append(_number(text, op, at))
        elif op == 0x47:  # BINFLOAT
            r.take(8)
            stack.append(0.0)
        elif op == 0x53:  # STRING (text, quoted)
            stack.append(_quoted(r.line(), at))
        elif op == 0x56:  # UNICODE (raw-unicode-escape line)
            stack.append(r.line().decode("raw_unicode_escape", "replace"))
        elif op == 0x54:  # BINSTRING
            stack.append(blob(int.from_bytes(r.take(4), "little", signed=True), False))
        elif op in (0x55, 0x43):  # SHORT_BINSTRING, SHORT_BINBYTES
            stack.append(blob(r.byte(), False))
        elif op == 0x42:  # BINBYTES
            stack.append(blob(int.from_bytes(r.take(4), "little"), False))
        elif op in (0x8E, 0x96):  # BINBYTES8, BYTEARRAY8
            stack.append(blob(int.from_bytes(r.take(8), "little"), False))
        elif op == 0x58:  # BINUNICODE
            stack.append(blob(int.from_bytes(r.take(4), "little"), True))
        elif op == 0x8C:  # SHORT_BINUNICODE
            stack.append(blob(r.byte(), True))
        elif op == 0x8D:  # BINUNICODE8
            stack.append(blob(int.from_bytes(r.take(8), "little"), True))
        elif op in (0x97, 0x98):  # NEXT_BUFFER, READONLY_BUFFER
            if op == 0x97:
                stack.append(_UNKNOWN)
        # -- containers --------------------------------------------------------
        elif op == 0x29:  # EMPTY_TUPLE
            stack.append(())
        elif op == 0x74:  # TUPLE
            items = pop_mark()
            stack.append(tuple(items))
        elif op == 0x85:  # TUPLE1
            stack.append((pop(),))
        elif op == 0x86:  # TUPLE2
            b = pop()
            stack.append((pop(), b))
        elif op == 0x87:  # TUPLE3
            c = pop()
            b = pop()
            stack.append((pop(), b, c))
        elif op in (0x5D, 0x7D, 0x8F):  # EMPTY_LIST, EMPTY_DICT, EMPTY_SET
            stack.append([])
        elif op in (0x6C, 0x64):  # LIST, DICT
            items = pop_mark()
            stack.append(items)
        elif op == 0x91:  # FROZENSET
            items = pop_mark()
            stack.append(tuple(items))
        elif op == 0x61:  # APPEND
            value = pop()
            _extend(top(), [value], at, overflow)
        elif op == 0x73:  # SETITEM
            value = pop()
            key = pop()
            _extend(top(), [key, value], at, overflow)
        elif op in (0x65, 0x75, 0x90):  # APPENDS, SETITEMS, ADDITEMS
            items = pop_mark()
            _extend(top(), items, at, overflow)
        # -- memo --------------------------------------------------------------
        elif op == 0x94:  # MEMOIZE
            put(len(memo), stack[-1] if stack else pop())
        elif op == 0x71:  # BINPUT
            put(r.byte(), stack[-1] if stack else pop())
        elif op == 0x72:  # LONG_BINPUT
            put(int.from_bytes(r.take(4), "little"), stack[-1] if stack else pop())
        elif op == 0x70:  # PUT
            put(_index(r.line(), at), stack[-1] if stack else pop())
        elif op in (0x68, 0x6A, 0x67):  # BINGET, LONG_BINGET, GET
            if op == 0x68:
                index = r.byte()
            elif op == 0x6A:
                index = int.from_bytes(r.take(4), "little")
            else:
                index = _index(r.line(), at)
            stack.append(get(index))
            shared = shared or _is_container(stack[-1])
        # -- globals and calls -------------------------------------------------
        elif op == 0x63:  # GLOBAL
            stack.append(global_(_text(r.line(), at), _text(r.line(), at), at))
        elif op == 0x93:  # STACK_GLOBAL
            name = pop()
            module = pop()
            if not (isinstance(module, str) and isinstance(name, str)):
                a.add(
                    "pickle.global.unresolved",
                    Severity.HIGH,
                    "STACK_GLOBAL takes a module or name that is not a plain string",
                    at,
                )
                stack.append(_UNKNOWN)
            else:
                stack.append(global_(module, name, at))
        elif op in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
            code = int.from_bytes(r.take({0x82: 1, 0x83: 2, 0x84: 4}[op]), "little")
            a.add(
                "pickle.global.extension",
                Severity.HIGH,
                f"imports a global through extension code {code}, "
                "which no allowlist profile can vouch for",
                at,
            )
            stack.append(_UNKNOWN)
        elif op == 0x69:  # INST
            g = global_(_text(r.line(), at), _text(r.line(), at), at)
            items = pop_mark()
            stack.append(call(g, tuple(items), at, "INST"))
        elif op == 0x6F:  # OBJ
            items = pop_mark()
            if not items:
                raise PickleError("OBJ without a class", at)
            stack.append(call(items[0], tuple(items[1:]), at, "OBJ"))
        elif op == 0x52:  # REDUCE
            args = pop()
            stack.append(call(pop(), args, at, "REDUCE"))
        elif op == 0x81:  # NEWOBJ
            args = pop()
            stack.append(call(pop(), args, at, "NEWOBJ"))
        elif op == 0x92:  # NEWOBJ_EX
            kwargs = pop()
            args = pop()
            stack.append(call(pop(), (args, kwargs), at, "NEWOBJ_EX"))
        elif op == 0x62:  # BUILD
            state = pop()
            target = stack[-1] if stack else pop()
            if isinstance(target, _Global):
                a.add(
                    "pickle.build.global",
                    Severity.HIGH,
                    f"BUILD sets attributes on {target.qualified} itself (a class or module)",
                    at,
                )
            elif isinstance(target, _Call):
                target.state = state
                roots.append(state)
                if isinstance(target.func, _Global) and target.func.qualified in _JOBLIB_WRAPPERS:
                    # joblib ends the frame before writing the array's raw bytes.
                    if r.offset == frame_end:
                        frame_end = -1
                    _joblib_array(r, a, target, at)
        elif op in (0x50, 0x51):  # PERSID, BINPERSID
            if op == 0x50:
                r.line()
            else:
                pop()
            stack.append(_UNKNOWN)
        else:
            raise PickleError(f"unknown opcode 0x{op:02x}", at)


@dataclass(slots=True)
class _Repeated:
    item: object
    count: int = 0


#: Container references beyond a list's first ``_MAX_ITEMS`` items:
#: id(list) -> (the list, {id(item): the item and how many times it was added}).
_Overflow = dict[int, tuple[list[object], dict[int, _Repeated]]]


def _extend(target: object, items: list[object], at: int, overflow: _Overflow) -> None:
    """Items appended or set on a list, dict or set (all kept as lists of items)."""
    if isinstance(target, list):
        room = max(0, _MAX_ITEMS - len(target))
        target.extend(items[:room])
        for item in items[room:]:
            if _is_container(item):
                extra = overflow.setdefault(id(target), (target, {}))[1]
                extra.setdefault(id(item), _Repeated(item)).count += 1
    elif not isinstance(target, _Call | _Global) and target is not _UNKNOWN:
        raise PickleError("items added to a value that is not a container", at)


_CONTAINERS = (list, tuple, _Call)


def _is_container(value: object) -> bool:
    return isinstance(value, _CONTAINERS)


def _items(node: object) -> list[object] | tuple[object, ...]:
    if isinstance(node, _Call):
        return (node.func, node.args, node.state)
    return node if isinstance(node, list | tuple) else ()


def _check_expansion(
    a: _Audit, roots: list[object], overflow: _Overflow, ops: int, at: int
) -> None:
    """Report a result or call argument that expands enormously when walked as a tree.

    Sizes are computed once per container, bottom-up, without recursion, and saturate
    at the cap, so the check is linear in the containers and items the stream built.
    A reference back to a container still being measured (a cycle) counts as one value.
    """
    cap = max(_EXPANSION_FLOOR, _EXPANSION_RATIO * ops)
    sizes: dict[int, int] = {}  # id of a live container -> its size; leaves count 1
    for root in roots:
        if not _is_container(root) or id(root) in sizes:
            continue
        on_path: set[int] = set()
        pending: list[tuple[object, bool]] = [(root, False)]
        while pending:
            node, measured = pending.pop()
            key = id(node)
            if not measured:
                if key in sizes or key in on_path:
                    continue
                extra = overflow.get(key)
                children = [*_items(node), *(r.item for r in extra[1].values())] if extra else ()
                todo = [
                    child
                    for child in children or _items(node)
                    if isinstance(child, _CONTAINERS) and id(child) not in sizes
                ]
                if todo:
                    on_path.add(key)
                    pending.append((node, True))
                    pending.extend((child, False) for child in todo)
                    continue
            total = 1 + sum(sizes.get(id(item), 1) for item in _items(node))
            extra = overflow.get(key)
            if extra:
                total += sum(r.count * sizes.get(id(r.item), 1) for r in extra[1].values())
            sizes[key] = min(total, cap + 1)
            on_path.discard(key)
        if sizes[id(root)] > cap:
            a.add(
                "pickle.memo-expansion",
                Severity.HIGH,
                f"the pickle shares containers through its memo so that walking what it "
                f"builds visits more than {cap:,} values from {ops:,} opcodes (a "
                "'billion laughs' bomb): printing, copying or converting it exhausts "
                "memory and time",
                at,
            )
            return


def _text(raw: bytes, at: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PickleError("a global's name is not UTF-8", at) from None


def _index(raw: bytes, at: int) -> int:
    try:
        return int(raw)
    except ValueError:
        raise PickleError("a memo index is not a number", at) from None


def _number(raw: bytes, op: int, at: int) -> object:
    text = raw.strip().rstrip(b"L")
    try:
        if op == 0x46:
            return float(text)
        if text in (b"00", b"01"):
            return text == b"01"
        if len(text) > 4300:
            raise PickleError("integer literal too long", at)
        return int(text)
    except ValueError:
        raise PickleError("a number literal is malformed", at) from None


def _quoted(raw: bytes, at: int) -> object:
    if len(raw) < 2 or raw[:1] not in (b"'", b'"') or raw[-1:] != raw[:1]:
        raise PickleError("STRING argument is not quoted", at)
    try:
        with as_loaders_read():
            return raw[1:-1].decode("unicode_escape")
    except UnicodeDecodeError:
        raise PickleError("STRING argument is malformed", at) from None


def _nested(args: object, index: int, a: _Audit, at: int, r: _Reader) -> None:
    """A loader called on inline bytes: audit those bytes as a pickle too."""
    payload = args[index] if isinstance(args, tuple) and len(args) > index else None
    payload = _unwrap_bytes(payload)
    if isinstance(payload, _Skipped) and not payload.text:
        if payload.length > a.limits.max_inline_bytes:
            a.add("scan.limit", Severity.MEDIUM, "a nested pickle exceeds max_inline_bytes", at)
            return
        resume = r.f.tell()
        r.f.seek(payload.offset)
        payload = r.f.read(payload.length)
        r.f.seek(resume)
    if not isinstance(payload, bytes):
        return
    if a.depth >= a.limits.max_nesting:
        a.add("scan.limit", Severity.MEDIUM, "nested pickles exceed the nesting limit", at)
        return
    inner = scan_pickle(
        io.BytesIO(payload),
        path=a.path,
        member=(a.member + "/" if a.member else "") + f"@{at}",
        format="pickle",
        limits=a.limits,
        depth=a.depth + 1,
    )
    a.findings.extend(inner)


def _unwrap_bytes(value: object) -> object:
    """The bytes inside ``BytesIO(b)`` or ``b64decode(s)``, else ``value`` itself."""
    if not (isinstance(value, _Call) and isinstance(value.func, _Global)):
        return value
    args = value.args if isinstance(value.args, tuple) else ()
    inner = args[0] if args else None
    if value.func.qualified in _BYTES_IO:
        return inner
    if value.func.qualified in _BASE64 and isinstance(inner, str | bytes):
        try:
            return binascii.a2b_base64(inner)
        except (binascii.Error, ValueError):
            return value
    return value


def _joblib_array(r: _Reader, a: _Audit, wrapper: _Call, at: int) -> None:
    """joblib writes each array's bytes right after its wrapper's BUILD: skip them,
    or audit them as a nested pickle when the array holds Python objects."""
    state = _pairs(wrapper.state)
    dtype = state.get("dtype")
    shape = state.get("shape")
    if not isinstance(dtype, _Call) or not isinstance(shape, tuple):
        raise PickleError("a joblib array wrapper without dtype or shape", at)
    code = dtype.args[0] if isinstance(dtype.args, tuple) and dtype.args else None
    if not isinstance(code, str) or not code:
        raise PickleError("a joblib array with an unreadable dtype", at)
    if code[0] == "O":
        r.sync()
        a.findings.extend(
            scan_pickle(
                r.f,
                path=a.path,
                member=a.member,
                format=a.format,
                limits=a.limits,
                streams=1,
                depth=a.depth + 1,
            )
        )
        r.base = r.f.tell()
        return
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or dim < 0:
            raise PickleError("a joblib array with an unreadable shape", at)
        count *= dim
    itemsize = _itemsize(code, dtype.state)
    if "numpy_array_alignment_bytes" in state and state["numpy_array_alignment_bytes"] is not None:
        r.skip(r.byte())
    r.skip(count * itemsize)


def _itemsize(code: str, dtype_state: object) -> int:
    digits = "".join(c for c in code if c.isdigit())
    # Flexible types (str, bytes, void) carry their element size in the dtype's state.
    flexible = code[0] in "USV" or not digits
    if flexible and isinstance(dtype_state, tuple) and len(dtype_state) > 5:
        elsize = dtype_state[5]
        if isinstance(elsize, int) and elsize > 0:
            return elsize
    if not digits:
        return 1
    size = int(digits)
    return size * 4 if code[0] == "U" else size


def _pairs(state: object) -> dict[str, object]:
    items = state if isinstance(state, list) else []
    return {k: v for k, v in zip(items[::2], items[1::2], strict=False) if isinstance(k, str)}
