"""The hasher gives the digests a plain one-shot hash would, on every code path."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import blake3
import pytest

from bastion.errors import ModelTreeError
from bastion.signing._hashing import ManifestHasher
from bastion.signing._manifest import Serialization
from bastion.signing._tree import walk_model
from tests.conftest import ModelFactory

# Sizes that cross the hasher's thresholds: one read, several reads (4 MiB
# buffer), and BLAKE3's multi-threaded path (16 MiB and up).
SIZES = {"tiny.bin": 1, "empty.bin": 0, "mid.bin": 5 << 20, "big.bin": (17 << 20) + 3}


@pytest.fixture(scope="module")
def contents() -> dict[str, bytes]:
    rng = __import__("random").Random(7)
    return {name: rng.randbytes(size) for name, size in SIZES.items()}


def _hash(data: bytes, hash_type: str) -> bytes:
    return hashlib.sha256(data).digest() if hash_type == "sha256" else blake3.blake3(data).digest()


@pytest.mark.parametrize("hash_type", ["sha256", "blake3"])
@pytest.mark.parametrize("threads", [1, 2])
def test_files_method_matches_one_shot_hashes(
    make_model: ModelFactory, contents: dict[str, bytes], hash_type: str, threads: int
) -> None:
    model = make_model(contents)
    ser = Serialization(hash_type=hash_type)  # type: ignore[arg-type]
    resources = ManifestHasher(ser, threads=threads).hash(walk_model(model))
    assert [r.name for r in resources] == ["big.bin", "empty.bin", "mid.bin", "tiny.bin"]
    for r in resources:
        assert r.digest == _hash(contents[r.name], hash_type)
        assert r.algorithm == hash_type


@pytest.mark.parametrize("threads", [1, 2])
def test_shards_cover_every_byte_in_order(
    make_model: ModelFactory, contents: dict[str, bytes], threads: int
) -> None:
    model = make_model(contents)
    size = 3 << 20
    ser = Serialization(method="shards", shard_size=size)
    resources = ManifestHasher(ser, threads=threads).hash(walk_model(model))
    expected = []
    for name in sorted(contents):
        data = contents[name]
        if not data:
            expected.append((f"{name}:0:0", hashlib.sha256(b"").digest()))
        for start in range(0, len(data), size):
            end = min(start + size, len(data))
            expected.append((f"{name}:{start}:{end}", hashlib.sha256(data[start:end]).digest()))
    assert [(r.name, r.digest) for r in resources] == expected
    assert {r.algorithm for r in resources} == {f"sha256-sharded-{size}"}


def test_empty_files_can_be_left_out_like_the_reference(make_model: ModelFactory) -> None:
    model = make_model({"a": b"", "b": b"x"})
    ser = Serialization(method="shards", shard_size=10)
    names = [r.name for r in ManifestHasher(ser, record_empty_shards=False).hash(walk_model(model))]
    assert names == ["b:0:1"]


def test_many_small_files_are_all_hashed(make_model: ModelFactory) -> None:
    files = {f"d{i % 7}/f{i}.txt": str(i).encode() * 3 for i in range(1500)}
    model = make_model(files)
    resources = ManifestHasher(Serialization(), threads=2).hash(walk_model(model))
    assert len(resources) == 1500
    assert all(r.digest == hashlib.sha256(files[r.name]).digest() for r in resources)


def test_file_replaced_between_walk_and_read_is_refused(make_model: ModelFactory) -> None:
    model = make_model({"a.bin": b"original"})
    files = walk_model(model)
    os.remove(model / "a.bin")
    (model / "a.bin").write_bytes(b"swapped!")
    with pytest.raises(ModelTreeError, match=r"replaced|changed"):
        ManifestHasher(Serialization()).hash(files)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_file_replaced_by_a_pipe_between_walk_and_read_is_refused_at_once(
    make_model: ModelFactory,
) -> None:
    # Opening the pipe once waited for a writer that never came: sign hung for good.
    model = make_model({"a.bin": b"original"})
    files = walk_model(model)
    os.remove(model / "a.bin")
    os.mkfifo(model / "a.bin")
    raised: list[BaseException] = []

    def hash_them() -> None:
        try:
            ManifestHasher(Serialization(), threads=1).hash(files)
        except BaseException as exc:
            raised.append(exc)

    worker = threading.Thread(target=hash_them, daemon=True)
    worker.start()
    worker.join(timeout=30)
    if worker.is_alive():  # let the stuck open return before failing
        os.close(os.open(model / "a.bin", os.O_WRONLY | os.O_NONBLOCK))
        worker.join(timeout=5)
        pytest.fail("hashing waited on a named pipe")
    assert isinstance(raised[0], ModelTreeError)
    assert "replaced" in raised[0].message


def test_file_changed_between_walk_and_read_is_refused(make_model: ModelFactory) -> None:
    model = make_model({"a.bin": b"original"})
    files = walk_model(model)
    with open(model / "a.bin", "ab") as fh:
        fh.write(b"more")
    with pytest.raises(ModelTreeError, match="changed"):
        ManifestHasher(Serialization()).hash(files)


def test_blake3_shards_are_refused() -> None:
    from bastion.errors import UsageError

    with pytest.raises(UsageError, match="blake3"):
        Serialization(method="shards", hash_type="blake3")


def test_special_files_are_refused(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    os.mkfifo(model / "pipe")
    with pytest.raises(ModelTreeError, match="special file"):
        walk_model(model)
