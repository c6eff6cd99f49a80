"""The local blob store: blobs appear only when complete, partial writes are swept."""

from __future__ import annotations

import errno
import stat
from pathlib import Path

import pytest

from bastion.errors import InternalError, NotFoundError, StorageFullError
from bastion.registry import LocalBlobStore
from bastion.registry._blobs import _disk_error, new_blob_id


def test_a_blob_is_visible_only_after_commit(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob = new_blob_id()
    writer = store.writer(blob)
    writer.write(b"hello ")
    writer.write(memoryview(b"world"))
    assert not store.exists(blob)
    writer.commit()
    assert store.exists(blob)
    with store.open(blob) as f:
        assert f.read() == b"hello world"
    path = tmp_path / "blobs" / blob[:2] / blob
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not any((tmp_path / "partial").iterdir())


def test_abort_and_sweep_leave_nothing(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    first, second = new_blob_id(), new_blob_id()
    (tmp_path / "partial" / first).write_bytes(b"partial")  # a writer killed mid-blob
    aborted = store.writer(second)
    aborted.write(b"x")
    aborted.abort()
    assert [p.name for p in (tmp_path / "partial").iterdir()] == [first]
    assert LocalBlobStore(tmp_path).sweep_partial() == 1
    assert not any((tmp_path / "partial").iterdir())
    assert not store.exists(first)
    assert not store.exists(second)


def test_delete_and_missing_blobs(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    blob = new_blob_id()
    w = store.writer(blob)
    w.commit()
    store.delete(blob)
    assert not store.exists(blob)
    with pytest.raises(NotFoundError):
        store.open(blob)


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABCDEF", "", "0" * 31, "g" * 32])
def test_blob_ids_are_never_taken_as_paths(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InternalError):
        LocalBlobStore(tmp_path).open(bad)


def test_a_full_disk_is_a_storage_full_error() -> None:
    assert isinstance(_disk_error(OSError(errno.ENOSPC, "No space left")), StorageFullError)
    assert isinstance(_disk_error(OSError(errno.EIO, "I/O error")), InternalError)
