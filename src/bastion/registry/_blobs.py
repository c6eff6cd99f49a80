"""Where encrypted artifacts live: a blob-store interface and its local-folder default.

Blob ids are made by the hub (random hex), never taken from a request, so no
caller-supplied name is ever joined to a path. A blob is written under
``partial/`` and renamed into ``blobs/`` only when complete: a crash leaves
only partial files, which :meth:`LocalBlobStore.sweep_partial` removes at start-up.
Completing a blob does not wait for the disk: :meth:`BlobStore.sync` makes a
version's blobs durable at its commit, in one pass, so an upload goes on to the
next file while the disk writes the last one. (An upload that never commits does
not survive a restart, so nothing is lost by not syncing it earlier.)
An S3-compatible store implements the same protocol.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO, Protocol

from bastion.errors import InternalError, NotFoundError, StorageFullError
from bastion.registry._writeback import start_writeback

__all__ = ["BlobStore", "BlobWriter", "LocalBlobStore", "new_blob_id"]

_BLOB_ID = re.compile(r"[0-9a-f]{32}")


def new_blob_id() -> str:
    return secrets.token_hex(16)


def _check(blob_id: str) -> str:
    if not _BLOB_ID.fullmatch(blob_id):
        raise InternalError("a blob id must be 32 lower-case hex digits")
    return blob_id


class BlobWriter(Protocol):
    def write(self, data: bytes | bytearray | memoryview) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


class BlobStore(Protocol):
    def writer(self, blob_id: str) -> BlobWriter: ...
    def open(self, blob_id: str) -> BinaryIO: ...
    def delete(self, blob_id: str) -> None: ...
    def exists(self, blob_id: str) -> bool: ...
    def sweep_partial(self) -> int: ...
    def sync(self, blob_ids: Iterable[str]) -> None: ...


def _disk_error(exc: OSError) -> Exception:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFullError("the hub's blob store is out of disk space; nothing was kept")
    return InternalError(f"the blob store failed: {exc.strerror}")


#: Bytes written between two requests to the kernel to start writing them to disk.
_WRITEBACK_EVERY = 32 << 20


class _LocalWriter:
    def __init__(self, partial: Path, final: Path) -> None:
        self._partial = partial
        self._final = final
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._file = os.fdopen(fd, "wb", buffering=0)
        self._open = True
        self._written = 0
        self._flushed = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        try:
            view = memoryview(data)
            while view:
                n = self._file.write(view)
                view = view[n:] if n else view
                self._written += n or 0
        except OSError as exc:
            self.abort()
            raise _disk_error(exc) from exc
        if self._written - self._flushed >= _WRITEBACK_EVERY:
            # The commit's fsync then finds most of the blob on disk already.
            start_writeback(self._file.fileno(), self._flushed, self._written - self._flushed)
            self._flushed = self._written

    def commit(self) -> None:
        """Complete the blob under its final name (durable once :meth:`LocalBlobStore.sync` ran)."""
        try:
            self._file.close()
            self._open = False
            self._final.parent.mkdir(mode=0o700, exist_ok=True)
            os.replace(self._partial, self._final)
        except FileNotFoundError:
            # The upload was dropped (aborted, or expired) while this file arrived, and its
            # partial blob with it: nothing to keep.
            self.abort()
            raise NotFoundError(
                "the upload was aborted or expired while this file arrived; nothing was kept, "
                "start a new upload"
            ) from None
        except OSError as exc:
            self.abort()
            raise _disk_error(exc) from exc

    def abort(self) -> None:
        if self._open:
            self._file.close()
            self._open = False
        self._partial.unlink(missing_ok=True)


class LocalBlobStore:
    """Blobs as files under ``root/blobs/<2 hex>/<id>``, mode 0600."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._blobs = root / "blobs"
        self._partial = root / "partial"
        for folder in (root, self._blobs, self._partial):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, blob_id: str) -> Path:
        _check(blob_id)
        return self._blobs / blob_id[:2] / blob_id

    def writer(self, blob_id: str) -> _LocalWriter:
        final = self._path(blob_id)
        try:
            return _LocalWriter(self._partial / blob_id, final)
        except OSError as exc:
            raise _disk_error(exc) from exc

    def open(self, blob_id: str) -> BinaryIO:
        try:
            return self._path(blob_id).open("rb")
        except FileNotFoundError:
            raise NotFoundError("the stored file is missing from the blob store") from None

    def delete(self, blob_id: str) -> None:
        self._path(blob_id).unlink(missing_ok=True)
        (self._partial / _check(blob_id)).unlink(missing_ok=True)

    def exists(self, blob_id: str) -> bool:
        return self._path(blob_id).is_file()

    def sync(self, blob_ids: Iterable[str]) -> None:
        """Wait until these complete blobs, and the names that lead to them, are on disk."""
        folders = {self._blobs}
        try:
            for blob_id in blob_ids:
                path = self._path(blob_id)
                _fsync(path, os.O_RDONLY)
                folders.add(path.parent)
            for folder in sorted(folders, reverse=True):  # each blob's folder, then blobs/
                _fsync(folder, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise NotFoundError("a stored file is missing from the blob store") from None
        except OSError as exc:
            raise _disk_error(exc) from exc

    def sweep_partial(self) -> int:
        """Remove what interrupted writes left behind; the number of files removed."""
        removed = 0
        for entry in self._partial.iterdir():
            entry.unlink(missing_ok=True)
            removed += 1
        return removed


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
