"""The digest cache: hits for unchanged files, misses for anything that changed."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import bastion
from bastion.errors import InputError, VerificationError
from bastion.signing import DigestCache, PrivateKey
from bastion.signing._hashing import ManifestHasher
from bastion.signing._manifest import Serialization
from bastion.signing._tree import walk_model


class CountingCache(DigestCache):
    """A real cache that also counts hits, to show what was not re-hashed."""

    hits = 0

    def __init__(self, path: Path, **kwargs: object) -> None:
        # Files in these tests were just written; a clock 10 s ahead makes
        # them old enough to cache unless a test says otherwise.
        kwargs.setdefault("now", lambda: time.time() + 10)
        super().__init__(path, **kwargs)  # type: ignore[arg-type]

    def get_many(self, files, descriptor):  # type: ignore[no-untyped-def]
        found = super().get_many(files, descriptor)
        self.hits += len(found)
        return found


def test_unchanged_model_reverifies_from_the_cache(
    model: Path, key: PrivateKey, tmp_path: Path
) -> None:
    cache = CountingCache(tmp_path / "cache.sqlite")
    bastion.sign(model, key, cache=cache)
    assert cache.hits == 0
    assert bastion.verify(model, public_key=key.public_key, cache=cache).ok
    assert cache.hits == 5


def test_a_changed_file_is_rehashed_and_caught(
    model: Path, key: PrivateKey, tmp_path: Path
) -> None:
    cache = CountingCache(tmp_path / "cache.sqlite")
    bastion.sign(model, key, cache=cache)
    target = model / "weights/part-1.bin"
    data = target.read_bytes()
    target.write_bytes(data[:-1] + b"\x02")  # same size
    os.utime(target, (1_700_000_000, 1_700_000_000))  # even with the old mtime: ctime moved
    with pytest.raises(VerificationError) as info:
        bastion.verify(model, public_key=key.public_key, cache=cache)
    assert info.value.result is not None
    assert info.value.result.modified == ("weights/part-1.bin",)
    assert cache.hits == 4


def test_recently_changed_files_are_not_cached(tmp_path: Path) -> None:
    model = tmp_path / "m"
    model.mkdir()
    (model / "fresh.bin").write_bytes(b"new")  # mtime and ctime are now
    cache = CountingCache(tmp_path / "cache.sqlite", now=time.time)
    ser = Serialization()
    ManifestHasher(ser, cache=cache).hash(walk_model(model))
    ManifestHasher(ser, cache=cache).hash(walk_model(model))
    assert cache.hits == 0
    later = CountingCache(tmp_path / "cache.sqlite", now=lambda: time.time() + 10)
    ManifestHasher(ser, cache=later).hash(walk_model(model))
    ManifestHasher(ser, cache=later).hash(walk_model(model))
    assert later.hits == 1


def test_cache_entries_are_per_hashing_method(model: Path, tmp_path: Path) -> None:
    cache = CountingCache(tmp_path / "cache.sqlite")
    files = walk_model(model)
    ManifestHasher(Serialization(), cache=cache).hash(files)
    ManifestHasher(Serialization(hash_type="blake3"), cache=cache).hash(files)
    assert cache.hits == 0


def test_a_cache_others_can_write_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    DigestCache(path).close()
    path.chmod(0o666)
    with pytest.raises(InputError, match="writable by others"):
        DigestCache(path)
