"""Memo-expansion ("billion laughs") pickles and nested pickles behind wrappers.

The static machine shares memo references as the real unpickler does, so a bomb
costs it no more than its opcodes; what the bomb would cost anything that walks
the result (or an argument handed to a call) is measured and reported. Every
pickle here is assembled opcode by opcode and only ever audited, never loaded.
"""

from __future__ import annotations

import base64
import io
import pickle
import pickletools
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.scanning._limits import Limits
from bastion.scanning._pickle import scan_pickle

FLOOR, RATIO = 10_000_000, 64  # _pickle._EXPANSION_FLOOR and _EXPANSION_RATIO
PROTO = pickle.PROTO + b"\x04"


def audit(data: bytes) -> list[tuple[str, str]]:
    findings = scan_pickle(
        io.BytesIO(data), path="m.pkl", member=None, format="pickle", limits=Limits()
    )
    return [(f.rule_id, f.message) for f in findings]


def rules(data: bytes) -> set[str]:
    return {rule for rule, _ in audit(data)}


def su(text: str) -> bytes:
    raw = text.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def get(index: int) -> bytes:
    return pickle.LONG_BINGET + struct.pack("<I", index)


def put(index: int) -> bytes:
    return pickle.LONG_BINPUT + struct.pack("<I", index)


def bomb(levels: int, fanout: int) -> bytes:
    """Opcodes leaving a list of ``fanout`` references to ... (``levels`` deep) on the stack."""
    out = pickle.MARK + su("lol") * fanout + pickle.LIST + put(0)
    for level in range(1, levels + 1):
        out += pickle.POP + pickle.MARK + get(level - 1) * fanout + pickle.LIST + put(level)
    return out


def test_billion_laughs_is_reported() -> None:
    found = audit(PROTO + bomb(9, 10) + pickle.STOP)
    assert [rule for rule, _ in found] == ["pickle.memo-expansion"]
    assert "billion laughs" in found[0][1]


def test_a_bomb_handed_to_an_allowed_call_is_reported() -> None:
    # builtins.str is allowed, but str() of the bomb would print 10**9 strings while loading.
    call = su("builtins") + su("str") + pickle.STACK_GLOBAL + bomb(9, 10) + pickle.TUPLE1
    data = PROTO + call + pickle.REDUCE + pickle.POP + pickle.NONE + pickle.STOP
    assert rules(data) == {"pickle.memo-expansion"}


def test_a_bomb_that_is_dropped_is_not_reported() -> None:
    assert rules(PROTO + bomb(9, 10) + pickle.POP + pickle.NONE + pickle.STOP) == set()


def test_fan_out_hidden_beyond_a_million_items_still_counts() -> None:
    # The top list holds a million fillers first; the symbolic machine keeps only the
    # first million items of a list, but references to containers past that are counted.
    filler = pickle.MARK + pickle.BININT1 + b"\x07" + pickle.DUP * 999_999 + pickle.APPENDS
    top = pickle.EMPTY_LIST + filler + pickle.MARK + get(8) * 10 + pickle.APPENDS
    data = PROTO + bomb(8, 10) + pickle.POP + top + pickle.STOP
    assert rules(data) == {"pickle.memo-expansion"}


def test_ordinary_sharing_is_not_a_bomb() -> None:
    shared = list(range(1000))
    rows = [shared] * 1000  # a million values walked as a tree: below the floor
    data = pickle.dumps({"rows": rows, "again": rows, "self": [shared, shared]}, protocol=4)
    assert rules(data) == set()


def test_a_list_that_contains_itself_is_not_a_bomb() -> None:
    data = PROTO + pickle.EMPTY_LIST + put(0) + get(0) + pickle.APPEND + get(0) + pickle.STOP
    assert rules(data) == set()


def test_pickled_cycles_are_not_a_bomb() -> None:
    node: dict[str, object] = {"name": "a"}
    node["self"] = node
    assert rules(pickle.dumps([node, node, [node] * 100], protocol=2)) == set()


# --- nested pickles behind wrappers and at other argument positions ---------------------

EVIL = PROTO + su("posix") + su("system") + pickle.STACK_GLOBAL + su("true")
EVIL += pickle.TUPLE1 + pickle.REDUCE + pickle.STOP


def call(module: str, name: str, *args: bytes) -> bytes:
    func = su(module) + su(name) + pickle.STACK_GLOBAL
    return func + pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


def blob(data: bytes) -> bytes:
    return pickle.BINBYTES + struct.pack("<I", len(data)) + data


def test_nested_pickle_in_a_bytes_io_is_audited() -> None:
    data = PROTO + call("joblib", "load", call("_io", "BytesIO", blob(EVIL))) + pickle.STOP
    nested = [m for rule, m in audit(data) if rule == "pickle.global.dangerous"]
    assert any("posix.system" in m for m in nested)


def test_nested_pickle_in_base64_is_audited() -> None:
    inner = call("base64", "b64decode", su(base64.b64encode(EVIL).decode()))
    data = PROTO + call("_pickle", "loads", inner) + pickle.STOP
    assert any("posix.system" in m for _, m in audit(data))


def test_nested_pickle_at_the_second_argument_is_audited() -> None:
    decoder = "torch.utils.data.datapipes.utils.decoder"
    data = PROTO + call(decoder, "basichandlers", su("pickle"), blob(EVIL)) + pickle.STOP
    assert any("posix.system" in m for _, m in audit(data))


def test_undecodable_base64_is_left_alone() -> None:
    # Not ASCII: b64decode itself raises, so there is no inner pickle to audit.
    data = PROTO + call("_pickle", "loads", call("base64", "b64decode", su("é"))) + pickle.STOP
    assert rules(data) == {"pickle.global.dangerous", "pickle.global.not-allowed"}


# --- properties ------------------------------------------------------------------------

_GRAPHS = st.lists(st.lists(st.integers(0, 30), min_size=1, max_size=14), min_size=1, max_size=10)


@settings(max_examples=120, deadline=None)
@given(graph=_GRAPHS, leaves=st.integers(1, 20))
def test_reported_exactly_when_the_tree_is_too_big(graph: list[list[int]], leaves: int) -> None:
    # Node 0 holds ``leaves`` strings; node i holds references to earlier nodes.
    out = PROTO + pickle.MARK + su("x") * leaves + pickle.LIST + put(0) + pickle.POP
    sizes = [1 + leaves]
    for i, refs in enumerate(graph, start=1):
        picked = [r % i for r in refs]
        out += pickle.MARK + b"".join(get(r) for r in picked) + pickle.LIST + put(i) + pickle.POP
        sizes.append(1 + sum(sizes[r] for r in picked))
    data = out + get(len(graph)) + pickle.STOP
    ops = sum(1 for _ in pickletools.genops(io.BytesIO(data)))
    expected = sizes[-1] > max(FLOOR, RATIO * ops)
    assert ("pickle.memo-expansion" in rules(data)) == expected


@settings(max_examples=150, deadline=None)
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
    cut=st.integers(0, 10**6),
)
def test_mutated_bombs_give_findings_not_exceptions(edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(PROTO + bomb(9, 10) + pickle.STOP)
    for at, byte in edits:
        data[at % len(data)] = byte
    audit(bytes(data[: max(1, cut % (len(data) + 1))]))  # any exception fails the test
