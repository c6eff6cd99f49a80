"""7z archives, lz4 frames and LZMA zip members are scanned member by member, within the
limits, and everything that cannot be scanned is a finding.

Archives are built in memory with py7zr, lz4 and zipfile; hostile ones are then patched
byte by byte (names, CRCs, methods). Nothing is ever loaded.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import lz4.frame
import py7zr
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.scanning import Limits, ScanReport, Severity, _sevenzip, scan
from bastion.scanning._compressed import scan_compressed
from bastion.scanning._context import ScanContext
from bastion.scanning._dispatch import dispatch
from bastion.scanning._sevenzip import ChildLimits, scan_sevenzip
from tests.unit.scanning.crafted import BENIGN_PICKLE, EVIL_PICKLE, make_zip, torch_zip

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
#: Each 7z scan starts its py7zr child process (about 0.3 s here): fewer examples, the same
#: kinds of mutation.
SEVENZIP_SETTINGS = settings(SETTINGS, max_examples=40)


def scan_bytes(tmp_path: Path, data: bytes, name: str = "model.bin", **limits: int) -> ScanReport:
    path = tmp_path / name
    path.write_bytes(data)
    return scan(path, limits=Limits(**limits))


def rules(report: ScanReport) -> set[str]:
    return {f.rule_id for f in report.findings}


def dangerous(report: ScanReport) -> list[str | None]:
    return sorted(
        (f.member for f in report.findings if f.rule_id == "pickle.global.dangerous"),
        key=str,
    )


def messages(report: ScanReport, rule: str) -> list[str]:
    return [f.message for f in report.findings if f.rule_id == rule]


def escaped(report: ScanReport) -> list[str]:
    """Findings made from an exception that escaped a parser (see ``describe_error``)."""
    return [f.message for f in report.findings if f.message.startswith("could not be parsed (")]


def escaped_from_container(report: ScanReport) -> list[str]:
    """Exceptions that escaped the container reader itself (those from the scanner of a
    member's content are reported on that member, and are that scanner's concern)."""
    return [
        f.message
        for f in report.findings
        if f.member is None and f.message.startswith("could not be parsed (")
    ]


def sevenzip(members: dict[str, bytes], *, plain_header: bool = False, **options: Any) -> bytes:
    """A 7z of ``members`` in one solid block; ``plain_header`` leaves the header
    uncompressed, so that names can be patched in place."""
    out = io.BytesIO()
    with py7zr.SevenZipFile(out, "w", **options) as archive:
        if plain_header:
            archive.set_encoded_header_mode(False)
        for name, data in members.items():
            archive.writestr(data, name)
    return out.getvalue()


def sevenzip_blocks(*blocks: dict[str, bytes]) -> bytes:
    """A 7z with one solid block per dict (py7zr's append mode starts a new block)."""
    out = io.BytesIO()
    for number, members in enumerate(blocks):
        out.seek(0)
        with py7zr.SevenZipFile(out, "a" if number else "w") as archive:
            for name, data in members.items():
                archive.writestr(data, name)
    return out.getvalue()


def fix_header_crcs(blob: bytearray) -> bytes:
    """Recompute the next-header CRC and the start-header CRC after a header patch."""
    offset, size = struct.unpack_from("<QQ", blob, 12)
    header = bytes(blob[32 + offset : 32 + offset + size])
    struct.pack_into("<I", blob, 28, zlib.crc32(header))
    struct.pack_into("<I", blob, 8, zlib.crc32(bytes(blob[12:32])))
    return bytes(blob)


def rename(blob: bytes, old: str, new: str) -> bytes:
    """Rename a member in a plain (unencoded) header; the names must be the same length."""
    assert len(old) == len(new)
    encoded = old.encode("utf-16-le")
    assert blob.count(encoded) == 1
    return fix_header_crcs(bytearray(blob.replace(encoded, new.encode("utf-16-le"))))


def context(name: str = "m.bin", **limits: int) -> ScanContext:
    return ScanContext(path=name, limits=Limits(**limits), dispatch=dispatch)


def missing(name: str) -> ModuleType:
    raise ImportError(f"No module named {name!r}")


# --- 7z -----------------------------------------------------------------------------------


def test_7z_members_are_scanned_by_content(tmp_path: Path) -> None:
    blob = sevenzip({"vocab.txt": EVIL_PICKLE, "config.json": b"{}", "empty": b""})
    report = scan_bytes(tmp_path, blob, "model.7z")
    assert dangerous(report) == ["vocab.txt"]
    assert {(s.member, s.format) for s in report.scanned} == {
        (None, "7z"),
        ("vocab.txt", "pickle"),
        ("config.json", "text"),
        ("empty", "empty"),
    }
    assert report.max_severity == Severity.CRITICAL


def test_7z_benign_archive_is_clean(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, sevenzip({"a.pkl": BENIGN_PICKLE, "b.json": b"[]"}))
    assert report.findings == []


@pytest.mark.parametrize(
    "filters",
    [
        [{"id": py7zr.FILTER_COPY}],
        [{"id": py7zr.FILTER_LZMA2}],
        [{"id": py7zr.FILTER_LZMA}],
        [{"id": py7zr.FILTER_BZIP2}],
        [{"id": py7zr.FILTER_DEFLATE}],
        [{"id": py7zr.FILTER_ZSTD}],
        [{"id": py7zr.FILTER_PPMD}],
    ],
    ids=lambda f: str(f[0]["id"]),
)
def test_7z_every_codec_is_read(tmp_path: Path, filters: list[dict[str, int]]) -> None:
    report = scan_bytes(tmp_path, sevenzip({"m.pkl": EVIL_PICKLE}, filters=filters))
    assert dangerous(report) == ["m.pkl"]


def test_7z_torch_zip_inside_is_read_as_torch(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, sevenzip({"pytorch_model.bin": torch_zip(EVIL_PICKLE)}))
    assert dangerous(report) == ["pytorch_model.bin/archive/data.pkl"]
    assert ("pytorch_model.bin", "pytorch-zip") in {(s.member, s.format) for s in report.scanned}


def test_7z_each_solid_block_is_extracted_on_its_own(tmp_path: Path) -> None:
    blob = bytearray(sevenzip_blocks({"first.pkl": EVIL_PICKLE * 20}, {"second.pkl": EVIL_PICKLE}))
    blob[40:48] = b"\xff" * 8  # inside the first block's packed data
    report = scan_bytes(tmp_path, bytes(blob))
    assert "second.pkl" in dangerous(report)
    first = {f.rule_id for f in report.findings if f.member == "first.pkl"}
    assert first & {"scan.incomplete", "7z.crc-mismatch"}
    assert escaped(report) == []


def test_7z_encrypted_members_are_reported(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, sevenzip({"m.pkl": EVIL_PICKLE}, password="secret"))
    assert [(f.rule_id, f.member) for f in report.findings] == [("7z.encrypted", "m.pkl")]


def test_7z_encrypted_header_is_reported(tmp_path: Path) -> None:
    blob = sevenzip({"m.pkl": EVIL_PICKLE}, password="secret", header_encryption=True)
    report = scan_bytes(tmp_path, blob)
    assert [(f.rule_id, f.severity) for f in report.findings] == [("7z.encrypted", Severity.MEDIUM)]
    assert "header is encrypted" in report.findings[0].message


@pytest.mark.parametrize("keep", [6, 20, 32, 60, -20, -1])
def test_truncated_7z_is_incomplete(tmp_path: Path, keep: int) -> None:
    blob = sevenzip({"m.pkl": EVIL_PICKLE, "n.pkl": BENIGN_PICKLE})
    report = scan_bytes(tmp_path, blob[:keep])
    assert "scan.incomplete" in rules(report)
    assert escaped(report) == []


def test_7z_corrupt_member_is_scanned_and_reported(tmp_path: Path) -> None:
    payload = EVIL_PICKLE + b"\0" * 100
    blob = bytearray(sevenzip({"m.pkl": payload}, filters=[{"id": py7zr.FILTER_COPY}]))
    at = blob.index(payload) + len(EVIL_PICKLE) + 10
    blob[at] ^= 0xFF  # after the payload: the CRC no longer matches
    report = scan_bytes(tmp_path, bytes(blob))
    assert ("7z.crc-mismatch", "m.pkl") in {(f.rule_id, f.member) for f in report.findings}
    assert dangerous(report) == ["m.pkl"]


def test_7z_bomb_is_a_limit_finding(tmp_path: Path) -> None:
    blob = sevenzip({"zeros.bin": b"\0" * (8 << 20), "m.pkl": EVIL_PICKLE})
    report = scan_bytes(tmp_path, blob)
    limits = {f.member: f.message for f in report.findings if f.rule_id == "scan.limit"}
    assert set(limits) == {"zeros.bin", "m.pkl"}
    assert "a bomb?" in limits["zeros.bin"]
    assert [s.member for s in report.scanned] == [None]  # the archive itself, no member


def test_7z_unpack_budget_is_enforced(tmp_path: Path) -> None:
    blob = sevenzip_blocks({"a.pkl": BENIGN_PICKLE}, {"big": os.urandom(300_000)})
    report = scan_bytes(tmp_path, blob, max_unpacked_bytes=100_000)
    assert [(f.rule_id, f.member) for f in report.findings] == [("scan.limit", "big")]
    assert ("a.pkl", "pickle") in {(s.member, s.format) for s in report.scanned}


def test_7z_unsafe_and_duplicate_names(tmp_path: Path) -> None:
    members = {"xx/up.pkl": EVIL_PICKLE, "zz/ab.pkl": b"{}", "aa": b"1", "bb": b"2"}
    blob = sevenzip(members, plain_header=True)
    blob = rename(
        rename(rename(blob, "xx/up.pkl", "../up.pkl"), "zz/ab.pkl", "/etc/a.pk"), "bb", "aa"
    )
    report = scan_bytes(tmp_path, blob)
    found = {(f.rule_id, f.member) for f in report.findings}
    assert {
        ("7z.path-traversal", "../up.pkl"),
        ("7z.absolute-path", "/etc/a.pk"),
        ("7z.duplicate-name", "aa"),
    } <= found
    # An unsafe name does not stop the scan: every member is still read.
    assert dangerous(report) == ["../up.pkl"]
    assert [s.member for s in report.scanned].count("aa") == 2


def test_7z_symlink_is_reported_not_followed(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    os.symlink("/etc/passwd", source / "link")
    (source / "m.pkl").write_bytes(BENIGN_PICKLE)
    out = io.BytesIO()
    with py7zr.SevenZipFile(out, "w") as archive:
        archive.write(source / "link", "link")
        archive.write(source / "m.pkl", "m.pkl")
    report = scan_bytes(tmp_path, out.getvalue())
    assert [(f.rule_id, f.severity, f.member) for f in report.findings] == [
        ("7z.symlink", Severity.HIGH, "link")
    ]


def test_7z_nesting_is_bounded(tmp_path: Path) -> None:
    blob = EVIL_PICKLE
    for _ in range(3):
        blob = sevenzip({"inner.7z": blob})
    deep = scan_bytes(tmp_path, blob, max_nesting=2)
    assert dangerous(deep) == []
    assert any("nested more than 2" in m for m in messages(deep, "scan.limit"))
    assert dangerous(scan_bytes(tmp_path, blob)) == ["inner.7z/inner.7z/inner.7z"]


def test_7z_without_py7zr_fails_closed() -> None:
    ctx = context()
    scan_sevenzip(ctx, io.BytesIO(sevenzip({"m.pkl": BENIGN_PICKLE})), None, 0, importer=missing)
    assert [(f.rule_id, f.format) for f in ctx.findings] == [("scan.incomplete", "7z")]
    assert "bastion[archives]" in ctx.findings[0].message


@SEVENZIP_SETTINGS
@given(
    seed=st.sampled_from(["lzma2", "copy", "plain", "blocks", "ppmd"]),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
)
def test_mutated_7z_gives_findings_not_exceptions(
    tmp_path: Path, seed: str, edits: list[tuple[int, int]], cut: int
) -> None:
    blob = bytearray(SEVENZIP_SEEDS[seed])
    for at, byte in edits:
        blob[at % len(blob)] = byte
    if cut % 3 == 0:  # keep the header CRCs right, so that the mutation reaches the parser
        blob = bytearray(fix_header_crcs(blob)) if len(blob) >= 32 else blob
    data = bytes(blob[: max(1, cut % (len(blob) + 1))]) if cut % 2 else bytes(blob)
    report = scan_bytes(tmp_path, data, "m.7z", max_unpacked_bytes=1 << 20)
    assert escaped_from_container(report) == []
    report.to_dict()


@SEVENZIP_SETTINGS
@given(rest=st.binary(max_size=4096))
def test_random_bytes_after_the_7z_magic_never_raise(tmp_path: Path, rest: bytes) -> None:
    report = scan_bytes(tmp_path, b"7z\xbc\xaf\x27\x1c" + rest, max_unpacked_bytes=1 << 20)
    assert escaped(report) == []
    assert report.findings


SEVENZIP_SEEDS = {
    "lzma2": sevenzip({"a.pkl": EVIL_PICKLE, "b.json": b"{}" * 50}),
    "copy": sevenzip({"a.pkl": EVIL_PICKLE}, filters=[{"id": py7zr.FILTER_COPY}]),
    "plain": sevenzip({"a.pkl": EVIL_PICKLE, "d/b": b"x" * 300}, plain_header=True),
    "blocks": sevenzip_blocks({"a.pkl": EVIL_PICKLE}, {"b.pkl": BENIGN_PICKLE}),
    "ppmd": sevenzip({"a.pkl": EVIL_PICKLE}, filters=[{"id": py7zr.FILTER_PPMD}]),
}


def seven_number(value: int) -> bytes:
    """A 7z header NUMBER (a first byte whose leading ones count the extra bytes)."""
    for extra in range(8):
        if value < 1 << (7 * (extra + 1)):
            first = ((0xFF << (8 - extra)) & 0xFF) | (value >> (8 * extra))
            low = value & ((1 << (8 * extra)) - 1)
            return bytes([first]) + low.to_bytes(extra, "little")
    return b"\xff" + value.to_bytes(8, "little")


def empty_members_7z(count: int) -> bytes:
    """A hand-made 7z of ``count`` empty, unnamed members (2 bytes a member, plain header)."""
    names = b"\0\0" * count
    empty = b"\xff" * ((count + 7) // 8)
    header = (
        b"\x01\x05"
        + seven_number(count)
        + b"\x0e"
        + seven_number(len(empty))
        + empty
        + b"\x11"
        + seven_number(len(names) + 1)
        + b"\x00"
        + names
        + b"\x00\x00"
    )
    start = struct.pack("<QQI", 0, len(header), zlib.crc32(header))
    return b"7z\xbc\xaf\x27\x1c\x00\x04" + struct.pack("<I", zlib.crc32(start)) + start + header


def test_7z_member_list_is_cut_at_max_members(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, empty_members_7z(1000), max_members=10)
    assert messages(report, "scan.limit") == ["7z has 1000 members; only the first 10 are scanned"]
    assert len([s for s in report.scanned if s.member is not None]) == 10


# Peak RSS of the scanning process itself: its VmHWM (ru_maxrss would carry pytest's own
# peak across the exec, and counts no child).
MEASURE_PARENT = """
import sys
from pathlib import Path
from bastion.scanning import scan
report = scan(Path(sys.argv[1]))
status = Path("/proc/self/status").read_text()
print(int(status.split("VmHWM:")[1].split()[0]) // 1024)
for finding in report.findings:
    print(finding.rule_id, finding.member, finding.message)
"""


@pytest.mark.slow
def test_7z_million_members_cost_the_parent_little_memory(tmp_path: Path) -> None:
    # py7zr needs about 400 MB to list these members; in-process, the scanner did too.
    path = tmp_path / "many.7z"
    path.write_bytes(empty_members_7z(1_000_000))
    assert path.stat().st_size < 3 << 20
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_PARENT, str(path)],
        capture_output=True,
        check=True,
        text=True,
        timeout=300,
    )
    peak_mib, *findings = done.stdout.splitlines()
    assert int(peak_mib) < 150
    assert findings == [
        "scan.limit None 7z reader process ran out of its 512 MiB memory limit; "
        "the rest of the archive is not scanned"
    ]


def scan_with_child(blob: bytes, child: ChildLimits) -> ScanContext:
    ctx = context()
    scan_sevenzip(ctx, io.BytesIO(blob), None, 0, child=child)
    return ctx


def test_7z_child_out_of_memory_is_a_limit() -> None:
    ctx = scan_with_child(sevenzip({"m.pkl": EVIL_PICKLE}), ChildLimits(memory=32 << 20))
    assert [(f.rule_id, f.member) for f in ctx.findings] == [("scan.limit", None)]
    assert "ran out of its 32 MiB memory limit" in ctx.findings[0].message


def test_7z_child_out_of_cpu_is_a_limit() -> None:
    ctx = scan_with_child(empty_members_7z(1_000_000), ChildLimits(memory=4 << 30, cpu_seconds=1))
    assert [(f.rule_id, f.member) for f in ctx.findings] == [("scan.limit", None)]
    assert "ran out of its 1 seconds CPU limit" in ctx.findings[0].message


def test_7z_child_that_does_not_answer_is_stopped() -> None:
    ctx = scan_with_child(sevenzip({"m.pkl": EVIL_PICKLE}), ChildLimits(idle_seconds=0))
    assert [(f.rule_id, f.member) for f in ctx.findings] == [("scan.limit", None)]
    assert "gave no answer for 0 seconds" in ctx.findings[0].message


@pytest.mark.parametrize(
    "script",
    [
        "import sys; sys.exit(7)",
        "import os; os.write(1, b'H\\0\\0\\0\\x02{}')",
        "import os; os.write(1, b'H\\xff\\xff\\xff\\xff')",
        "import os; os.write(1, b'H\\0\\0\\0\\x0c{\"total\": 1}M\\0\\0\\0\\x02[]')",
    ],
)
def test_7z_child_that_crashes_or_talks_nonsense_is_incomplete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str
) -> None:
    fake = tmp_path / "child.py"
    fake.write_text(script)
    monkeypatch.setattr(_sevenzip, "_CHILD", fake)
    ctx = scan_with_child(sevenzip({"m.pkl": EVIL_PICKLE}), ChildLimits())
    assert [(f.rule_id, f.member) for f in ctx.findings] == [("scan.incomplete", None)]
    assert ctx.findings[0].message.startswith("7z reader process failed (")


def test_7z_header_needing_a_huge_dictionary_is_a_limit(tmp_path: Path) -> None:
    blob = bytearray(sevenzip({"m.pkl": EVIL_PICKLE * 50}, plain_header=True))
    coder = blob.index(b"\x21\x01")  # LZMA2, one property byte: the dictionary size
    blob[coder + 2] = 40  # 4 GiB
    report = scan_bytes(tmp_path, fix_header_crcs(blob))
    assert [(f.rule_id, f.member) for f in report.findings if f.member == "m.pkl"] == [
        ("scan.limit", "m.pkl")
    ]


# --- lz4 ----------------------------------------------------------------------------------


def test_lz4_pickle_is_scanned(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, lz4.frame.compress(EVIL_PICKLE))
    assert dangerous(report) == ["<lz4>"]


def test_concatenated_lz4_frames_are_all_scanned(tmp_path: Path) -> None:
    blob = lz4.frame.compress(b"\0" * 10) + lz4.frame.compress(EVIL_PICKLE)
    report = scan_bytes(tmp_path, lz4.frame.compress(BENIGN_PICKLE) + blob)
    assert report.findings  # the pickle is followed by bytes that are not a pickle


def test_truncated_lz4_is_incomplete_but_scanned(tmp_path: Path) -> None:
    blob = lz4.frame.compress(EVIL_PICKLE + os.urandom(200_000))[:-1000]
    report = scan_bytes(tmp_path, blob)
    assert any("truncated" in m for m in messages(report, "scan.incomplete"))
    assert dangerous(report) == ["<lz4>"]


def test_corrupt_lz4_is_incomplete(tmp_path: Path) -> None:
    blob = bytearray(lz4.frame.compress(EVIL_PICKLE * 50, content_checksum=True))
    blob[-6] ^= 0xFF
    report = scan_bytes(tmp_path, bytes(blob))
    assert "scan.incomplete" in rules(report)
    assert escaped(report) == []


def test_lz4_over_the_budget_is_a_limit(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, lz4.frame.compress(b"\0" * (4 << 20)), max_unpacked_bytes=1 << 20)
    assert rules(report) == {"scan.limit"}


def test_lz4_without_the_module_fails_closed() -> None:
    ctx = context()
    stream = io.BytesIO(lz4.frame.compress(BENIGN_PICKLE))
    scan_compressed(ctx, stream, None, 0, "lz4", importer=missing)
    assert [(f.rule_id, f.format) for f in ctx.findings] == [("scan.incomplete", "lz4")]
    assert "bastion[archives]" in ctx.findings[0].message


@SETTINGS
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
)
def test_mutated_lz4_gives_findings_not_exceptions(
    tmp_path: Path, edits: list[tuple[int, int]], cut: int
) -> None:
    blob = bytearray(LZ4_SEED)
    for at, byte in edits:
        blob[at % len(blob)] = byte
    report = scan_bytes(tmp_path, bytes(blob[: max(4, cut % (len(blob) + 1))]))
    assert escaped_from_container(report) == []
    report.to_dict()


LZ4_SEED = lz4.frame.compress(EVIL_PICKLE + b"\x00" * 5000, content_checksum=True)


# --- zip members compressed with LZMA and other methods -----------------------------------


def lzma_zip(members: dict[str, bytes]) -> bytes:
    return make_zip(members, compression=zipfile.ZIP_LZMA)


def data_offset(blob: bytes, name: str) -> int:
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        info = archive.getinfo(name)
    name_len, extra_len = struct.unpack_from("<HH", blob, info.header_offset + 26)
    return info.header_offset + 30 + name_len + extra_len


def set_method(blob: bytes, method: int) -> bytes:
    """Set every member's method in both the local headers and the central directory."""
    out = bytearray(blob)
    for sig, at in ((b"PK\x03\x04", 8), (b"PK\x01\x02", 10)):
        pos = 0
        while (pos := out.find(sig, pos)) != -1:
            struct.pack_into("<H", out, pos + at, method)
            pos += 4
    return bytes(out)


def test_lzma_zip_members_are_decompressed_and_scanned(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, lzma_zip({"a.pkl": EVIL_PICKLE, "b.txt": b"hello"}))
    assert dangerous(report) == ["a.pkl"]
    assert "zip.crc-mismatch" not in rules(report)


def test_lzma_torch_zip_is_read(tmp_path: Path) -> None:
    blob = lzma_zip({"archive/data.pkl": EVIL_PICKLE, "archive/version": b"3\n"})
    assert dangerous(scan_bytes(tmp_path, blob)) == ["archive/data.pkl"]


def test_lzma_zip_bomb_is_a_limit(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, lzma_zip({"zeros": b"\0" * (8 << 20)}))
    assert any("a bomb?" in m for m in messages(report, "scan.limit"))


def test_lzma_zip_member_under_a_budget(tmp_path: Path) -> None:
    report = scan_bytes(tmp_path, lzma_zip({"r": os.urandom(300_000)}), max_unpacked_bytes=100_000)
    assert rules(report) == {"scan.limit"}


def test_lzma_zip_truncated_member_is_incomplete(tmp_path: Path) -> None:
    blob = lzma_zip({"a.pkl": EVIL_PICKLE + os.urandom(5000)})
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        info = archive.getinfo("a.pkl")
    # Claim a shorter compressed size in both headers: the stream stops before its end.
    short = bytearray(blob)
    for pos, at in ((info.header_offset, 18), (blob.index(b"PK\x01\x02"), 20)):
        struct.pack_into("<I", short, pos + at, info.compress_size - 1000)
    report = scan_bytes(tmp_path, bytes(short))
    assert any("truncated" in m for m in messages(report, "scan.incomplete"))
    assert dangerous(report) == ["a.pkl"]


def test_lzma_zip_bad_properties_are_incomplete(tmp_path: Path) -> None:
    blob = bytearray(lzma_zip({"a.pkl": EVIL_PICKLE}))
    at = data_offset(bytes(blob), "a.pkl")
    blob[at + 4] = 0xFF  # lc/lp/pb byte out of range
    report = scan_bytes(tmp_path, bytes(blob))
    assert any("corrupt zip-lzma" in m for m in messages(report, "scan.incomplete"))
    assert dangerous(report) == []


def test_lzma_zip_huge_dictionary_is_not_reserved(tmp_path: Path) -> None:
    blob = bytearray(lzma_zip({"a.pkl": EVIL_PICKLE}))
    at = data_offset(bytes(blob), "a.pkl")
    struct.pack_into("<I", blob, at + 5, 0xFFFFFFFF)  # a 4 GiB dictionary
    report = scan_bytes(tmp_path, bytes(blob))
    assert dangerous(report) == ["a.pkl"]


@pytest.mark.parametrize(("method", "label"), [(98, "PPMd"), (9, "Deflate64"), (77, "unknown")])
def test_unsupported_zip_methods_are_findings(tmp_path: Path, method: int, label: str) -> None:
    report = scan_bytes(tmp_path, set_method(make_zip({"a.pkl": EVIL_PICKLE}), method))
    (message,) = messages(report, "scan.incomplete")
    assert f"method {method} ({label})" in message
    assert dangerous(report) == []


@SETTINGS
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
)
def test_mutated_lzma_zip_gives_findings_not_exceptions(
    tmp_path: Path, edits: list[tuple[int, int]], cut: int
) -> None:
    blob = bytearray(LZMA_ZIP_SEED)
    for at, byte in edits:
        blob[at % len(blob)] = byte
    report = scan_bytes(tmp_path, bytes(blob[: max(4, cut % (len(blob) + 1))]))
    assert escaped_from_container(report) == []


LZMA_ZIP_SEED = lzma_zip({"a.pkl": EVIL_PICKLE, "b.txt": b"text " * 100})


def test_the_archive_reader_limits_come_from_the_scan_limits(tmp_path: Path) -> None:
    data = sevenzip({"m.pkl": BENIGN_PICKLE})
    assert scan_bytes(tmp_path, data, "ok.7z").findings == []
    starved = scan_bytes(tmp_path, data, "starved.7z", archive_reader_idle_seconds=0.001)
    assert {f.rule_id for f in starved.findings} == {"scan.limit"}
