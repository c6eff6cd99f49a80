"""Hashing a model's files into manifest resources, on every core, in flat memory.

* SHA-256 is sequential within one stream, so work is spread across threads by
  file and, in ``shards`` mode, by shard, which also spreads one large file.
  ``hashlib`` releases the GIL while it hashes, so threads scale.
* BLAKE3 is parallel within one stream: large files are hashed one at a time
  with BLAKE3's own threads.
* Small files are batched so that 10,000 of them do not cost 10,000 tasks.

Every file is opened without following a final symlink and checked to be the
very file the walk saw (device and inode), and its size and times are checked
again after hashing: a file swapped or changed while it is read is an error,
never a wrong digest.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import blake3

from bastion.errors import ModelTreeError
from bastion.signing._manifest import Resource, Serialization, order_key

if TYPE_CHECKING:
    from bastion.signing._cache import DigestCache
    from bastion.signing._tree import ModelFile

__all__ = ["ManifestHasher"]

_BUFFER = 4 << 20  # read size
_PARALLEL_BYTES = 16 << 20  # BLAKE3 hashes a file this large with its own threads
_BATCH_BYTES = 8 << 20  # small files are grouped up to this many bytes per task
_BATCH_FILES = 512
_SMALL_PIECE = 64 << 10  # pieces smaller than this are hashed on the calling thread


@dataclass(frozen=True, slots=True)
class _Piece:
    """One unit of hashing: a whole file, or a byte range of it."""

    file: ModelFile
    start: int
    end: int
    name: str


class ManifestHasher:
    """Turns a model's files into the resources of a manifest."""

    def __init__(
        self,
        serialization: Serialization,
        *,
        threads: int | None = None,
        cache: DigestCache | None = None,
        record_empty_shards: bool = True,
    ) -> None:
        self._ser = serialization
        self._threads = max(1, threads or os.cpu_count() or 1)
        self._cache = cache
        self._record_empty_shards = record_empty_shards

    def hash(self, files: Iterable[ModelFile]) -> list[Resource]:
        """The resources of ``files``, in manifest order."""
        files = list(files)
        digests: dict[str, bytes] = {}
        todo: list[ModelFile] = []
        hits = self._cache.get_many(files, self._ser.cache_descriptor) if self._cache else {}
        for f in files:
            cached = hits.get(f)
            names = self._piece_names(f)
            if cached is not None and len(cached) == len(names):
                digests.update(zip(names, cached, strict=True))
            else:
                todo.append(f)
        computed = self._hash_files(todo)
        digests.update(computed)
        if self._cache is not None and todo:
            self._cache.put_many(
                (f, self._ser.cache_descriptor, [computed[n] for n in self._piece_names(f)])
                for f in todo
            )
        method = self._ser.method
        algorithm = self._ser.algorithm
        return [
            Resource(name, algorithm, digests[name])
            for name in sorted(digests, key=lambda n: order_key(n, method))
        ]

    def _pieces(self, f: ModelFile) -> list[_Piece]:
        if self._ser.method == "files":
            return [_Piece(f, 0, f.size, f.name)]
        size, step = f.size, self._ser.shard_size
        if size == 0:
            return [_Piece(f, 0, 0, f"{f.name}:0:0")] if self._record_empty_shards else []
        return [
            _Piece(f, start, min(start + step, size), f"{f.name}:{start}:{min(start + step, size)}")
            for start in range(0, size, step)
        ]

    def _piece_names(self, f: ModelFile) -> list[str]:
        return [p.name for p in self._pieces(f)]

    def _hash_files(self, files: list[ModelFile]) -> dict[str, bytes]:
        pieces = [p for f in files for p in self._pieces(f)]
        out: dict[str, bytes] = {}
        if self._ser.hash_type == "blake3":
            large = [p for p in pieces if p.end - p.start >= _PARALLEL_BYTES]
            pieces = [p for p in pieces if p.end - p.start < _PARALLEL_BYTES]
            for piece in large:  # BLAKE3 uses every core within the file
                out[piece.name] = _hash_piece(piece, _blake3_range)
        hasher = _blake3_range if self._ser.hash_type == "blake3" else _sha256_range
        # Tiny files cost more in system calls under the GIL than in hashing:
        # this thread takes them while the pool hashes the rest.
        small = [p for p in pieces if p.end - p.start < _SMALL_PIECE]
        pooled = [p for p in pieces if p.end - p.start >= _SMALL_PIECE]
        if self._threads == 1 or len(pooled) <= 1:
            out.update(_hash_batch(pooled + small, hasher))
            return out
        with ThreadPoolExecutor(self._threads, thread_name_prefix="bastion-hash") as pool:
            futures = [pool.submit(_hash_batch, b, hasher) for b in _batches(pooled)]
            out.update(_hash_batch(small, hasher))
            for future in futures:
                out.update(future.result())
        return out


def _batches(pieces: list[_Piece]) -> Iterator[list[_Piece]]:
    """Large pieces alone, biggest first; small ones grouped."""
    pieces = sorted(pieces, key=lambda p: p.end - p.start, reverse=True)
    batch: list[_Piece] = []
    size = 0
    for piece in pieces:
        length = piece.end - piece.start
        if length >= _BATCH_BYTES:
            yield [piece]
            continue
        batch.append(piece)
        size += length
        if size >= _BATCH_BYTES or len(batch) >= _BATCH_FILES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


_RangeHasher = Callable[[int, int, int, str], bytes]
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


def _hash_batch(pieces: list[_Piece], hasher: _RangeHasher) -> dict[str, bytes]:
    return {p.name: _hash_piece(p, hasher) for p in pieces}


def _hash_piece(piece: _Piece, hasher: _RangeHasher) -> bytes:
    f = piece.file
    try:
        # O_NONBLOCK: a FIFO swapped in since the walk opens at once (and is refused
        # below) instead of waiting for a writer; reads of a regular file ignore it.
        fd = os.open(f.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | _NONBLOCK)
    except OSError as exc:
        raise ModelTreeError(f"cannot open {f.name!r}: {exc.strerror}") from exc
    try:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode) or (before.st_dev, before.st_ino) != (
            f.device,
            f.inode,
        ):
            raise ModelTreeError(f"{f.name!r} was replaced while the model was being read")
        digest = hasher(fd, piece.start, piece.end, f.name)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
        f.size,
        f.mtime_ns,
        f.ctime_ns,
    ):
        raise ModelTreeError(f"{f.name!r} changed while the model was being read; try again")
    return digest


def _short_read(name: str) -> ModelTreeError:
    return ModelTreeError(f"{name!r} shrank while the model was being read; try again")


def _read_range(fd: int, start: int, end: int, name: str) -> Iterator[memoryview | bytes]:
    """The bytes of ``[start, end)`` in bounded chunks; a short read is an error."""
    length = end - start
    if length <= _BUFFER:
        data = os.pread(fd, length, start)
        if len(data) != length:
            raise _short_read(name)
        yield data
        return
    buf = bytearray(_BUFFER)
    view = memoryview(buf)
    offset = start
    while offset < end:
        got = os.preadv(fd, [view[: min(_BUFFER, end - offset)]], offset)
        if got <= 0:
            raise _short_read(name)
        yield view[:got]
        offset += got


def _sha256_range(fd: int, start: int, end: int, name: str) -> bytes:
    hasher = hashlib.sha256()
    for chunk in _read_range(fd, start, end, name):
        hasher.update(chunk)
    return hasher.digest()


def _blake3_range(fd: int, start: int, end: int, name: str) -> bytes:
    # Read, not mmap: a file truncated under a mapping kills the process with SIGBUS.
    threads = blake3.blake3.AUTO if end - start >= _PARALLEL_BYTES else 1
    hasher = blake3.blake3(max_threads=threads)
    for chunk in _read_range(fd, start, end, name):
        hasher.update(chunk)
    return bytes(hasher.digest())
