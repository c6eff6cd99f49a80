"""The local blob store: blobs appear only when complete, partial writes are swept."""

from __future__ import annotations

import errno
import os
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


def test_sync_waits_for_each_blob_and_the_folders_that_name_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    blobs = [new_blob_id() for _ in range(3)]
    for blob in blobs:
        writer = store.writer(blob)
        writer.write(blob.encode())
        writer.commit()
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    store.sync(blobs)
    root = tmp_path.resolve() / "blobs"
    expected = {str(root / b[:2] / b) for b in blobs}
    expected |= {str(root / b[:2]) for b in blobs} | {str(root)}
    assert set(synced) == expected
    assert synced.index(str(root)) == len(synced) - 1  # the top folder last


def test_sync_of_a_missing_blob_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        LocalBlobStore(tmp_path).sync([new_blob_id()])
