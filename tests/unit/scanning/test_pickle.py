"""The static pickle machine: every way of spelling a global or a call is seen,
nothing is executed, and malformed streams are findings, not crashes."""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.scanning import scan
from bastion.scanning._limits import Limits
from bastion.scanning._pickle import scan_pickle

DEFAULTS = Limits()


def audit(data: bytes, limits: Limits = DEFAULTS, **kwargs: object) -> list[tuple[str, str]]:
    findings = scan_pickle(
        io.BytesIO(data),
        path="m.pkl",
        member=None,
        format="pickle",
        limits=limits,
        **kwargs,  # type: ignore[arg-type]
    )
    return [(f.rule_id, f.message) for f in findings]


def rules(data: bytes, **kwargs: object) -> set[str]:
    return {rule for rule, _ in audit(data, **kwargs)}


def su(text: str) -> bytes:
    """SHORT_BINUNICODE."""
    raw = text.encode()
    return b"\x8c" + bytes([len(raw)]) + raw


class Reduces:
    """Pickles as a call to ``func(*args)``; never unpickled in these tests."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


ORDINARY = {
    "ints": [0, 1, -1, 255, 65535, 2**31, -(2**63), 10**40],
    "floats": [0.5, float("inf")],
    "text": ["", "ünïcode", "x" * 300],
    "bytes": [b"", b"\x00" * 300, bytearray(b"ab")],
    "nested": ((1, 2), {3, 4}, frozenset({5}), {"k": [None, True, False]}),
    "collections": [
        collections.OrderedDict(a=1),
        collections.defaultdict(list),
        collections.deque([1]),
    ],
}


@pytest.mark.parametrize("protocol", range(6))
def test_ordinary_data_is_clean_in_every_protocol(protocol: int) -> None:
    assert audit(pickle.dumps(ORDINARY, protocol=protocol)) == []


@pytest.mark.parametrize("protocol", range(6))
def test_a_dangerous_call_is_critical_in_every_protocol(protocol: int) -> None:
    found = audit(pickle.dumps(Reduces(os.system, "true"), protocol=protocol))
    assert [r for r, _ in found] == ["pickle.global.dangerous"]
    assert "system" in found[0][1]


def test_python2_names_are_mapped_like_the_real_loader() -> None:
    # Protocol 0-2 write __builtin__; Python 3 reads it as builtins (allowed) ...
    assert audit(pickle.dumps({1, 2}, protocol=2)) == []
    # ... and maps old module names onto dangerous ones too.
    assert rules(b"ccommands\ngetoutput\n(S'id'\ntR.") == {"pickle.global.dangerous"}


def test_unknown_global_is_a_finding_even_if_never_called() -> None:
    data = b"\x80\x04" + su("mypackage.evil") + su("Thing") + b"\x93."
    assert audit(data) == [
        (
            "pickle.global.not-allowed",
            "imports mypackage.evil.Thing: it is not in any allowlist profile",
        )
    ]


def test_stack_global_assembled_through_the_memo() -> None:
    # "os" and "system" are stored in the memo and fetched back for STACK_GLOBAL.
    data = (
        b"\x80\x04"
        + su("os")
        + b"\x94"
        + su("system")
        + b"\x94"
        + b"0"
        + b"0"  # pop both: only the memo holds them now
        + b"h\x00h\x01\x93"
        + su("true")
        + b"\x85R."
    )
    assert rules(data) == {"pickle.global.dangerous"}


def test_dotted_name_is_resolved() -> None:
    data = b"\x80\x04" + su("builtins") + su("getattr.__call__") + b"\x93."
    assert rules(data) == {"pickle.global.dangerous"}


def test_unresolvable_stack_global() -> None:
    data = b"\x80\x04" + su("os") + b"K\x01\x93."
    assert rules(data) == {"pickle.global.unresolved"}


def test_inst_and_obj_calls() -> None:
    assert rules(b"(S'true'\nios\nsystem\n.") == {"pickle.global.dangerous"}
    assert rules(b"(cos\nsystem\nS'true'\no.") == {"pickle.global.dangerous"}


def test_call_hidden_by_obj_then_pop() -> None:
    """GHSA-mxhj-88fx-4pcv: the call's result is popped at once, so nothing shows it."""
    data = b"(cos\nsystem\nS'true'\no0N."
    assert rules(data) == {"pickle.global.dangerous"}


def test_newobj_ex_with_unknown_class() -> None:
    data = b"\x80\x04" + su("evil") + su("Cls") + b"\x93)}\x92."
    assert rules(data) == {"pickle.global.not-allowed"}


def test_build_on_a_class_or_module() -> None:
    data = b"\x80\x04" + su("collections") + su("OrderedDict") + b"\x93}b."
    assert rules(data) == {"pickle.build.global"}


def test_extension_registry_codes_are_findings() -> None:
    assert rules(b"\x80\x02\x82\x01)R.") == {"pickle.global.extension"}


def test_call_of_a_call_result_is_a_gadget_chain() -> None:
    data = b"\x80\x04" + su("collections") + su("OrderedDict") + b"\x93)R)R."
    assert rules(data) == {"pickle.call.indirect"}


def test_nested_pickle_handed_to_a_loader_is_audited() -> None:
    inner = pickle.dumps(Reduces(os.system, "true"))
    outer = pickle.dumps(Reduces(pickle.loads, inner))
    found = audit(outer)
    assert [m for _, m in found if "pickle.loads" in m or "_pickle.loads" in m]
    assert any("system" in m for _, m in found)


def test_concatenated_streams_are_all_audited() -> None:
    data = pickle.dumps([1, 2]) + pickle.dumps(Reduces(os.system, "true"))
    assert rules(data) == {"pickle.global.dangerous"}


def test_counted_streams_leave_the_data_after_them() -> None:
    data = pickle.dumps(1) + pickle.dumps(2) + b"RAW STORAGE BYTES"
    buf = io.BytesIO(data)
    scan_pickle(buf, path="m", member=None, format="pickle", limits=Limits(), streams=2)
    assert buf.read() == b"RAW STORAGE BYTES"


def test_truncated_stream_after_a_call_still_reports_the_call() -> None:
    data = pickle.dumps([Reduces(os.system, "true"), list(range(100))], protocol=4)[:-20]
    assert rules(data) == {"pickle.global.dangerous", "scan.incomplete"}


def test_large_bytes_are_skipped_not_held() -> None:
    size = 5 << 20
    data = b"\x80\x05\x8e" + struct.pack("<Q", size) + b"\x00" * size + b"\x94."
    assert audit(data, Limits(max_inline_bytes=1 << 20)) == []
    cut = data[: 1 << 20]
    assert rules(cut, limits=Limits(max_inline_bytes=1 << 20)) == {"scan.incomplete"}


def test_a_huge_declared_length_in_a_real_file_is_a_truncation(tmp_path: Path) -> None:
    """Seeking a file 2**63 bytes ahead fails with EINVAL; the length is judged first."""
    path = tmp_path / "m.pkl"
    path.write_bytes(b"\x80\x05\x8e" + struct.pack("<Q", 2**63 - 1) + b"abc")
    [finding] = scan(path).findings
    assert finding.rule_id == "scan.incomplete"
    assert "ends before its STOP" in finding.message


def test_opcode_limit_is_a_finding() -> None:
    data = pickle.dumps(list(range(1000)), protocol=0)
    assert rules(data, limits=Limits(max_opcodes=100)) == {"scan.limit"}


@pytest.mark.parametrize(
    "data",
    [b"", b"\x80\x09.", b"\xff", b"(t", b"h\x05.", b"0.", b"cos\n", b"I12x\n.", b"S'abc\n."],
)
def test_malformed_streams_are_findings(data: bytes) -> None:
    assert rules(data) == {"scan.incomplete"}


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_never_crash(data: bytes) -> None:
    for rule, message in audit(data):
        assert rule.startswith(("scan.", "pickle."))
        assert message


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_pickles_never_crash(data: st.DataObject) -> None:
    base = bytearray(pickle.dumps(ORDINARY, protocol=data.draw(st.integers(0, 5))))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(base) - 1))
        base[i] = data.draw(st.integers(0, 255))
    audit(bytes(base))


def _joblib_bytes(obj: object, tmp_path: object) -> bytes:
    import joblib

    path = tmp_path / "x.joblib"  # type: ignore[operator]
    joblib.dump(obj, path)
    return path.read_bytes()  # type: ignore[no-any-return]


def test_joblib_arrays_are_skipped_by_size(tmp_path: object) -> None:
    import numpy as np

    obj = [np.arange(1000, dtype=np.float32), np.array(["ab", "cde"]), np.zeros((3, 4), dtype=bool)]
    assert audit(_joblib_bytes(obj, tmp_path)) == []


def test_joblib_payload_after_a_raw_array(tmp_path: object) -> None:
    # scanner-threats #22: linear parsers stop at the array bytes and miss what follows.
    import numpy as np

    data = _joblib_bytes([np.zeros(1000), Reduces(os.system, "true")], tmp_path)
    assert rules(data) == {"pickle.global.dangerous"}


def test_joblib_object_array_is_a_nested_pickle(tmp_path: object) -> None:
    import numpy as np

    evil = np.array([1, Reduces(os.system, "true")], dtype=object)
    assert rules(_joblib_bytes(evil, tmp_path)) == {"pickle.global.dangerous"}
    assert audit(_joblib_bytes(np.array([1, "x", None], dtype=object), tmp_path)) == []


def test_an_opcode_straddling_its_frame_is_a_finding() -> None:
    # scanner-threats §B.20: a BINUNICODE inside a FRAME claims bytes beyond the frame.
    frame = b"X" + struct.pack("<I", 16) + bytes(5)
    data = b"\x80\x05\x95" + struct.pack("<Q", len(frame)) + frame + bytes(11) + b"0."
    assert rules(data) == {"pickle.frame-straddle", "scan.incomplete"}


def test_well_formed_frames_are_clean() -> None:
    assert audit(pickle.dumps(list(range(20000)), protocol=5)) == []


def test_a_large_nested_pickle_is_read_back_and_audited() -> None:
    # Over 1 MiB the bytes are not held; the loader call reads them back by offset.
    inner = pickle.dumps([b"\x00" * (2 << 20), Reduces(os.system, "true")], protocol=4)
    outer = pickle.dumps(Reduces(pickle.loads, inner), protocol=4)
    messages = [m for _, m in audit(outer)]
    assert any("system" in m for m in messages)
    too_big = audit(outer, Limits(max_inline_bytes=1 << 20))
    assert ("scan.limit", "a nested pickle exceeds max_inline_bytes") in too_big
