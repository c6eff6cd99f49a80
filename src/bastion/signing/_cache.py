"""An opt-in cache of file digests, so that re-verifying an unchanged model is cheap.

An entry maps a file's identity and state, (device, inode, size, mtime, ctime),
plus the hashing descriptor to the digests Bastion itself computed from the
file's content. A file that is written changes its mtime and ctime; ctime
cannot be set back by an ordinary user. So a hit means "this is the same file,
unchanged since Bastion hashed it".

Trust assumption (``docs/signing.md``): the cache is as trustworthy as the
account that owns it and the local file system. Someone who can write the
cache file, set the system clock, or write to the disk behind the file
system's back can make a changed file look unchanged. Hence the cache is
opt-in, lives in a file only its owner can write, and is refused otherwise.

Files whose mtime or ctime is within ``racy_seconds`` of now are not cached:
a write in the same timestamp tick as the hash would otherwise go unseen
(the "racy git" problem).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bastion.errors import InputError

if TYPE_CHECKING:
    from bastion.signing._tree import ModelFile

__all__ = ["DigestCache"]

_SCHEMA_VERSION = 1
_DIGEST_SIZE = 32
_COLUMNS = ("device", "inode", "descriptor", "size", "mtime_ns", "ctime_ns", "digests")
_SQLITE_HEADER = b"SQLite format 3\x00"
_QUERY_CHUNK = 500  # inodes per query, under SQLite's limit on bound parameters
_SELECT_BY_INODES = (
    "SELECT device, inode, size, mtime_ns, ctime_ns, digests FROM digests"
    " WHERE descriptor = ? AND inode IN ({marks})"
)


def _has_sqlite_header(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER


class DigestCache:
    """Digests of files Bastion has hashed, keyed by file identity and state."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        now: Callable[[], float] = time.time,
        racy_seconds: float = 2.0,
    ) -> None:
        self._path = Path(path)
        self._now = now
        self._racy_ns = int(racy_seconds * 1e9)
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            st = os.fstat(fd)
        finally:
            os.close(fd)
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise InputError(
                f"digest cache {str(self._path)!r} is writable by others or owned by another "
                "user; a cache others can write cannot be trusted. Use a private path."
            )
        if st.st_size and not _has_sqlite_header(self._path):
            raise self._foreign()
        try:
            self._db = sqlite3.connect(self._path, check_same_thread=False)
            self._open_schema()
        except sqlite3.DatabaseError as exc:
            raise self._foreign() from exc

    def _foreign(self) -> InputError:
        return InputError(
            f"{str(self._path)!r} is not a Bastion cache; delete it or choose another path"
        )

    def _open_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        tables = [r[0] for r in self._db.execute("SELECT name FROM sqlite_master")]
        if version == 0 and not tables:
            with self._db:
                self._db.execute(
                    "CREATE TABLE digests ("
                    " device INTEGER, inode INTEGER, descriptor TEXT,"
                    " size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, digests BLOB,"
                    " PRIMARY KEY (device, inode, descriptor))"
                )
                self._db.execute(f"PRAGMA user_version = {_SCHEMA_VERSION}")
            return
        if version not in (0, _SCHEMA_VERSION):
            raise InputError(f"digest cache {str(self._path)!r} has format {version}; delete it")
        columns = [r[1] for r in self._db.execute("PRAGMA table_info(digests)")]
        if version != _SCHEMA_VERSION or columns != list(_COLUMNS):
            raise self._foreign()

    def get_many(self, files: Sequence[ModelFile], descriptor: str) -> dict[ModelFile, list[bytes]]:
        """The digests cached for each of ``files`` in its current state (misses are absent)."""
        rows: dict[tuple[int, int], tuple[int, int, int, bytes]] = {}
        inodes = sorted({f.inode for f in files})
        for i in range(0, len(inodes), _QUERY_CHUNK):
            chunk = inodes[i : i + _QUERY_CHUNK]
            # Only "?" placeholders are formatted in; every value is bound.
            marks = ",".join("?" * len(chunk))
            query = _SELECT_BY_INODES.format(marks=marks)
            for dev, ino, size, mtime, ctime, blob in self._db.execute(query, (descriptor, *chunk)):
                rows[(dev, ino)] = (size, mtime, ctime, bytes(blob))
        found = {}
        for f in files:
            row = rows.get((f.device, f.inode))
            if row is None or row[:3] != (f.size, f.mtime_ns, f.ctime_ns):
                continue
            blob = row[3]
            if len(blob) % _DIGEST_SIZE == 0:
                found[f] = [blob[j : j + _DIGEST_SIZE] for j in range(0, len(blob), _DIGEST_SIZE)]
        return found

    def put_many(self, entries: Iterable[tuple[ModelFile, str, list[bytes]]]) -> None:
        """Remember digests just computed, skipping files changed too recently to trust."""
        horizon = int(self._now() * 1e9) - self._racy_ns
        rows = [
            (f.device, f.inode, d, f.size, f.mtime_ns, f.ctime_ns, b"".join(digests))
            for f, d, digests in entries
            if max(f.mtime_ns, f.ctime_ns) < horizon
        ]
        with self._db:
            self._db.executemany(
                "INSERT OR REPLACE INTO digests VALUES (?, ?, ?, ?, ?, ?, ?)", rows
            )

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> DigestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
