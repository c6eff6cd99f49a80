"""Digests of a file that arrives as a stream, for checking it against a signature.

The hub hashes every uploaded file while it is written, so that committing a
version never reads the files again to compare them with the signed manifest.
The resources come out exactly as :class:`ManifestHasher` names them from disk.
"""

from __future__ import annotations

import hashlib
from typing import Any

import blake3

from bastion.signing._manifest import Resource, Serialization

__all__ = ["StreamDigester"]


class StreamDigester:
    """Feed a file's bytes in order with :meth:`update`; :meth:`resources` gives its digests."""

    def __init__(self, name: str, serialization: Serialization) -> None:
        self._name = name
        self._ser = serialization
        self._offset = 0
        self._shard_start = 0
        self._done: list[Resource] = []
        self._hasher: Any = self._new()

    def _new(self) -> Any:
        if self._ser.hash_type == "blake3":
            return blake3.blake3(max_threads=blake3.blake3.AUTO)
        return hashlib.sha256()

    @property
    def size(self) -> int:
        return self._offset

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        if self._ser.method == "files":
            self._hasher.update(view)
            self._offset += len(view)
            return
        step = self._ser.shard_size
        while view:
            room = self._shard_start + step - self._offset
            take = view[:room]
            self._hasher.update(take)
            self._offset += len(take)
            view = view[len(take) :]
            if self._offset - self._shard_start == step:
                self._close_shard()

    def _close_shard(self) -> None:
        name = f"{self._name}:{self._shard_start}:{self._offset}"
        self._done.append(Resource(name, self._ser.algorithm, self._hasher.digest()))
        self._shard_start = self._offset
        self._hasher = self._new()

    def resources(self) -> list[Resource]:
        """The file's resources: one digest, or one per shard (an empty file has ``:0:0``)."""
        if self._ser.method == "files":
            return [Resource(self._name, self._ser.algorithm, self._hasher.digest())]
        out = list(self._done)
        if self._offset > self._shard_start or self._offset == 0:
            name = f"{self._name}:{self._shard_start}:{self._offset}"
            out.append(Resource(name, self._ser.algorithm, self._hasher.copy().digest()))
        return out
