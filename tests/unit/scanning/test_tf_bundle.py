"""TensorFlow tensor bundles: ``variables.index`` read as an SSTable, data shards claimed.

Index files are written by a small SSTable writer below that lays tables out as
TensorFlow's ``table::TableBuilder`` does (restart every 16 entries, 4 KiB blocks, an
index block of last keys, an empty metaindex block, masked CRC-32C trailers). Files
written by it were read back by TensorFlow 2.21's ``tf.train.load_checkpoint``, and real
SavedModels written by ``tf.saved_model.save``, Keras ``model.export`` and tf_keras
``model.save`` scanned with no finding; TensorFlow itself is not needed here.
"""

from __future__ import annotations

import io
import os
import struct
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.scanning import Limits, ScanReport, Severity, scan
from bastion.scanning._context import ScanContext
from bastion.scanning._dispatch import dispatch
from tests.scanning_corpus._savedmodel_samples import Model, integer, length, varint

MAGIC = (0xDB4775248B80FB57).to_bytes(8, "little")
DT_FLOAT = 1

# --- a test-side SSTable and tensor-bundle writer ------------------------------------------


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        crc = n
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


CRC_TABLE = _crc_table()


def masked_crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def block(entries: list[tuple[bytes, bytes]], restart_interval: int = 16) -> bytes:
    out, restarts, previous = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(previous)) and key[shared] == previous[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        previous = key
    for offset in restarts or [0]:
        out += struct.pack("<I", offset)
    return bytes(out + struct.pack("<I", len(restarts or [0])))


def handle(offset: int, size: int) -> bytes:
    return varint(offset) + varint(size)


def sstable(
    entries: list[tuple[bytes, bytes]], *, block_size: int = 4096, compression: int = 0
) -> bytes:
    out, index = bytearray(), []

    def put(contents: bytes, kind: int = compression) -> bytes:
        at = len(out)
        trailer = bytes([kind])
        out.extend(contents + trailer + struct.pack("<I", masked_crc32c(contents + trailer)))
        return handle(at, len(contents))

    chunk: list[tuple[bytes, bytes]] = []
    for key, value in entries:
        chunk.append((key, value))
        if sum(len(k) + len(v) for k, v in chunk) >= block_size:
            index.append((chunk[-1][0], put(block(chunk))))
            chunk = []
    if chunk:
        index.append((chunk[-1][0], put(block(chunk))))
    footer = put(block([]), 0) + put(block(index, 1), 0)
    return bytes(out + footer.ljust(40, b"\0") + MAGIC)


def header(num_shards: int = 1) -> bytes:
    return integer(1, num_shards) + length(3, integer(1, 1))  # version { producer: 1 }


def bundle_entry(
    *, shard: int, offset: int, size: int, crc: int = 0, dtype: int = DT_FLOAT
) -> bytes:
    shape = length(2, length(2, integer(1, size // 4)))  # dim { size }
    fields = integer(1, dtype) + shape + integer(3, shard) + integer(4, offset)
    return fields + integer(5, size) + b"\x35" + struct.pack("<I", crc)


def index_bytes(tensors: dict[str, bytes], num_shards: int = 1) -> tuple[bytes, list[bytes]]:
    """The index and data shards of a bundle; tensor i goes to shard i % num_shards."""
    shards = [bytearray() for _ in range(num_shards)]
    entries = [(b"", header(num_shards))]
    for i, name in enumerate(sorted(tensors)):
        data, shard = tensors[name], shards[i % num_shards]
        value = bundle_entry(
            shard=i % num_shards, offset=len(shard), size=len(data), crc=masked_crc32c(data)
        )
        entries.append((name.encode(), value))
        shard += data
    return sstable(entries), [bytes(s) for s in shards]


def write_bundle(
    folder: Path, tensors: dict[str, bytes], *, num_shards: int = 1, prefix: str = "variables"
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    index, shards = index_bytes(tensors, num_shards)
    for shard, data in enumerate(shards):
        (folder / f"{prefix}.data-{shard:05d}-of-{num_shards:05d}").write_bytes(data)
    path = folder / f"{prefix}.index"
    path.write_bytes(index)
    return path


def floats(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


TENSORS = {
    "w/.ATTRIBUTES/VARIABLE_VALUE": floats(*(0.25 * i for i in range(12))),
    "b/.ATTRIBUTES/VARIABLE_VALUE": floats(0.0, 0.0, 0.0),
}

# A FingerprintDef: five uint64 hashes and a version { producer: 1 }.
FINGERPRINT = b"".join(integer(n, 1234567 * n) for n in range(1, 6)) + length(6, integer(1, 1))


def saved_model_folder(root: Path) -> Path:
    """A SavedModel folder as ``tf.saved_model.save`` writes it, with an asset."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "saved_model.pb").write_bytes(Model().build())
    (root / "fingerprint.pb").write_bytes(FINGERPRINT)
    (root / "assets").mkdir()
    (root / "assets" / "vocab.txt").write_text("alpha\nbeta\n")
    write_bundle(root / "variables", TENSORS)
    return root


def found(report: ScanReport) -> set[tuple[str, str, str]]:
    return {(f.rule_id, f.severity.label, f.path) for f in report.findings}


def formats(report: ScanReport) -> dict[str, str]:
    return {s.path: s.format for s in report.scanned if s.member is None}


INDEX = "variables/variables.index"
DATA = "variables/variables.data-00000-of-00001"

# --- real layouts --------------------------------------------------------------------------


def test_saved_model_folder_scans_clean(tmp_path: Path) -> None:
    report = scan(saved_model_folder(tmp_path / "model"))
    assert report.at_or_above(Severity.LOW) == []
    assert report.findings == []
    assert formats(report) == {
        "saved_model.pb": "savedmodel",
        "fingerprint.pb": "tf-fingerprint",
        "assets/vocab.txt": "text",
        INDEX: "tf-tensor-bundle",
        DATA: "tf-tensor-bundle-data",
    }


def test_index_larger_than_the_head_is_found_by_its_footer(tmp_path: Path) -> None:
    tensors = {f"layer_{i:04d}/kernel/.ATTRIBUTES/VARIABLE_VALUE": floats(i) for i in range(2000)}
    path = write_bundle(tmp_path, tensors)
    assert path.stat().st_size > 64 << 10
    report = scan(tmp_path)
    assert report.findings == []
    assert formats(report) == {
        "variables.index": "tf-tensor-bundle",
        "variables.data-00000-of-00001": "tf-tensor-bundle-data",
    }


def test_every_declared_shard_is_claimed(tmp_path: Path) -> None:
    write_bundle(tmp_path, {f"t{i}": floats(i, i) for i in range(7)}, num_shards=3, prefix="ckpt")
    report = scan(tmp_path)
    assert report.findings == []
    assert formats(report) == {
        "ckpt.index": "tf-tensor-bundle",
        **{f"ckpt.data-{i:05d}-of-00003": "tf-tensor-bundle-data" for i in range(3)},
    }


def test_sstable_writer_matches_tensorflow_layout() -> None:
    # The header entry TensorFlow 2.21 writes first: key "", num_shards 1, producer 1.
    index, _ = index_bytes(TENSORS)
    assert index.startswith(b"\x00\x00\x06\x08\x01\x1a\x02\x08\x01")
    assert index.endswith(MAGIC)


# --- data shards that are not what the index says ------------------------------------------


def test_data_shard_without_index_stays_unknown(tmp_path: Path) -> None:
    write_bundle(tmp_path / "variables", TENSORS)
    (tmp_path / INDEX).unlink()
    report = scan(tmp_path)
    assert found(report) == {("scan.unknown-format", "medium", DATA)}


def test_undeclared_shard_stays_unknown(tmp_path: Path) -> None:
    write_bundle(tmp_path / "variables", TENSORS)
    extra = "variables/variables.data-00001-of-00002"
    (tmp_path / extra).write_bytes(floats(1.5, 2.5, 3.5) * 10)
    report = scan(tmp_path)
    assert found(report) == {("scan.unknown-format", "medium", extra)}
    assert formats(report)[DATA] == "tf-tensor-bundle-data"


def test_index_under_another_name_claims_nothing(tmp_path: Path) -> None:
    write_bundle(tmp_path / "variables", TENSORS)
    (tmp_path / INDEX).rename(tmp_path / "variables" / "variables.idx")
    report = scan(tmp_path)
    assert found(report) == {("scan.unknown-format", "medium", DATA)}
    assert formats(report)["variables/variables.idx"] == "tf-tensor-bundle"


def test_short_shard_is_a_finding_and_stays_unknown(tmp_path: Path) -> None:
    write_bundle(tmp_path / "variables", TENSORS)
    data = tmp_path / DATA
    data.write_bytes(data.read_bytes()[:-4])
    report = scan(tmp_path)
    assert found(report) == {
        ("tf-bundle.data-range", "medium", INDEX),
        ("scan.unknown-format", "medium", DATA),
    }
    (message,) = [f.message for f in report.findings if f.rule_id == "tf-bundle.data-range"]
    assert "reads up to byte" in message


def test_missing_shard_is_a_finding(tmp_path: Path) -> None:
    write_bundle(tmp_path / "variables", TENSORS)
    (tmp_path / DATA).unlink()
    report = scan(tmp_path)
    assert found(report) == {("tf-bundle.data-file", "medium", INDEX)}
    assert "missing" in report.findings[0].message


def test_hard_linked_shard_is_not_claimed(tmp_path: Path) -> None:
    write_bundle(tmp_path / "variables", TENSORS)
    os.link(tmp_path / DATA, tmp_path / "elsewhere.bin")
    report = scan(tmp_path / "variables")
    assert found(report) == {
        ("tf-bundle.data-file", "medium", "variables.index"),
        ("scan.unknown-format", "medium", "variables.data-00000-of-00001"),
    }


def test_entry_outside_the_declared_shards_is_a_finding(tmp_path: Path) -> None:
    entries = [
        (b"", header(1)),
        (b"a", bundle_entry(shard=0, offset=0, size=8)),
        (b"b", bundle_entry(shard=3, offset=0, size=8)),
    ]
    (tmp_path / "variables.index").write_bytes(sstable(entries))
    (tmp_path / "variables.data-00000-of-00001").write_bytes(floats(1.0, 2.0))
    report = scan(tmp_path)
    assert found(report) == {("tf-bundle.data-range", "medium", "variables.index")}
    assert "shard 3 of 1" in report.findings[0].message
    assert formats(report)["variables.data-00000-of-00001"] == "tf-tensor-bundle-data"


def test_index_inside_an_archive_is_read_without_disk_checks(tmp_path: Path) -> None:
    index, _ = index_bytes(TENSORS)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("variables/variables.index", index)
    (tmp_path / "model.zip").write_bytes(buffer.getvalue())
    report = scan(tmp_path / "model.zip")
    assert report.findings == []
    assert ("variables/variables.index", "tf-tensor-bundle") in {
        (s.member, s.format) for s in report.scanned
    }


# --- malformed and refused indexes ---------------------------------------------------------


def scan_index(tmp_path: Path, data: bytes) -> ScanReport:
    path = tmp_path / "variables.index"
    path.write_bytes(data)
    return scan(path)


def incomplete(report: ScanReport) -> list[str]:
    assert {(f.rule_id, f.format) for f in report.findings} == {
        ("scan.incomplete", "tf-tensor-bundle")
    }
    assert report.scanned == []
    return [f.message for f in report.findings]


def test_compressed_blocks_are_refused(tmp_path: Path) -> None:
    entries = [(b"", header()), (b"w", bundle_entry(shard=0, offset=0, size=4))]
    data = sstable(entries, compression=1)
    (message,) = incomplete(scan_index(tmp_path, data))
    assert "compressed (type 1)" in message


def test_missing_header_is_malformed(tmp_path: Path) -> None:
    data = sstable([(b"w", bundle_entry(shard=0, offset=0, size=4))])
    (message,) = incomplete(scan_index(tmp_path, data))
    assert "bundle header" in message


def test_keys_out_of_order_are_malformed(tmp_path: Path) -> None:
    value = bundle_entry(shard=0, offset=0, size=4)
    for block_size in (4096, 1):  # within one block; one block per entry
        data = sstable([(b"", header()), (b"b", value), (b"a", value)], block_size=block_size)
        (message,) = incomplete(scan_index(tmp_path, data))
        assert "malformed tensor-bundle index" in message
        assert "after" in message or "order" in message


def test_duplicate_keys_are_malformed(tmp_path: Path) -> None:
    value = bundle_entry(shard=0, offset=0, size=4)
    data = sstable([(b"", header()), (b"a", value), (b"a", value)])
    (message,) = incomplete(scan_index(tmp_path, data))
    assert "is not after" in message


def test_restart_point_inside_an_entry_is_malformed(tmp_path: Path) -> None:
    # TensorFlow's seek decodes entries at restart points: one that is not at an entry
    # would show it different keys than a scan in order.
    entries = [(b"", header()), (b"w", bundle_entry(shard=0, offset=0, size=4))]
    data = bytearray(sstable(entries))
    first_block = block(entries)
    restart_at = len(first_block) - 8
    assert data[restart_at : restart_at + 4] == b"\0\0\0\0"
    data[restart_at] = 3
    (message,) = incomplete(scan_index(tmp_path, bytes(data)))
    assert "restart points" in message


def test_block_handle_past_the_file_is_malformed(tmp_path: Path) -> None:
    data = bytearray(sstable([(b"", header())]))
    footer = len(data) - 48
    data[footer : footer + 40] = (handle(0, 8) + handle(10**9, 16)).ljust(40, b"\0")
    (message,) = incomplete(scan_index(tmp_path, bytes(data)))
    assert "outside the table" in message


def test_truncated_index_is_not_a_bundle(tmp_path: Path) -> None:
    data = sstable([(b"", header()), (b"w", bundle_entry(shard=0, offset=0, size=4))])
    report = scan_index(tmp_path, data[:-1])
    assert found(report) == {("scan.unknown-format", "medium", "variables.index")}


def test_block_over_the_limit_is_a_limit(tmp_path: Path) -> None:
    # A sparse file: the index handle names a 65 MiB block, which is never read.
    size = 65 << 20
    path = tmp_path / "variables.index"
    with path.open("wb") as stream:
        stream.truncate(size + 5)
        stream.seek(size + 5)
        stream.write((handle(0, 0) + handle(0, size)).ljust(40, b"\0") + MAGIC)
    report = scan(path)
    assert {(f.rule_id, f.format) for f in report.findings} == {("scan.limit", "tf-tensor-bundle")}


def test_too_many_shards_is_a_limit(tmp_path: Path) -> None:
    report = scan_index(tmp_path, sstable([(b"", header(10**6))]))
    assert {(f.rule_id, f.format) for f in report.findings} == {("scan.limit", "tf-tensor-bundle")}


# --- hostile bytes: a report, never an exception or a hang ---------------------------------

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SEEDS = [
    index_bytes(TENSORS)[0],
    index_bytes({f"t{i:03d}": floats(i) for i in range(60)}, 4)[0],
]


def scan_stream(data: bytes) -> ScanContext:
    ctx = ScanContext(path="variables.index", limits=Limits(), dispatch=dispatch)
    ctx.nested(io.BytesIO(data), None, 0)
    return ctx


def escaped(ctx: ScanContext) -> list[str]:
    """Findings made from an exception that escaped the reader (see ``describe_error``)."""
    return [f.message for f in ctx.findings if f.message.startswith("could not be parsed (")]


@SETTINGS
@given(
    seed=st.sampled_from(range(len(SEEDS))),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=8),
    cut=st.integers(0, 10**6),
)
def test_mutated_indexes_give_reports_not_exceptions(
    seed: int, edits: list[tuple[int, int]], cut: int
) -> None:
    blob = bytearray(SEEDS[seed])
    for at, byte in edits:
        blob[at % len(blob)] = byte
    blob = blob[: max(1, cut % (len(blob) + 1))]
    ctx = scan_stream(bytes(blob) + (b"" if blob.endswith(MAGIC) else b"\0" * 40 + MAGIC))
    assert escaped(ctx) == []
    assert ctx.scanned or ctx.findings


@SETTINGS
@given(body=st.binary(max_size=600), tail=st.binary(max_size=40))
def test_random_bytes_before_a_footer_give_reports(body: bytes, tail: bytes) -> None:
    ctx = scan_stream(body + tail.ljust(40, b"\0") + MAGIC)
    assert escaped(ctx) == []
    assert ctx.scanned or ctx.findings


@SETTINGS
@given(
    entries=st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=40)), max_size=40),
    block_size=st.integers(1, 256),
)
def test_random_well_formed_tables_give_reports(
    entries: list[tuple[bytes, bytes]], block_size: int
) -> None:
    ordered = sorted(dict(entries).items())
    ctx = scan_stream(sstable(ordered, block_size=block_size))
    assert escaped(ctx) == []
    rules = {f.rule_id for f in ctx.findings}
    assert rules <= {"scan.incomplete", "tf-bundle.data-range"}
    assert bool(ctx.scanned) == ("scan.incomplete" not in rules)


@pytest.mark.parametrize("cut", [1, 47, 48, 100])
def test_short_files_ending_in_the_magic_are_reported(cut: int) -> None:
    ctx = scan_stream((b"\0" * 200 + MAGIC)[-cut:])
    assert escaped(ctx) == []
    assert ctx.findings
