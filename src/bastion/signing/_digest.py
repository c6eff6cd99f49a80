"""The root digest of a model: a compact handle for exactly these files."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from bastion.errors import PathNotFoundError
from bastion.signing._cache import DigestCache
from bastion.signing._hashing import ManifestHasher
from bastion.signing._manifest import (
    DEFAULT_SHARD_SIZE,
    HashType,
    Method,
    Serialization,
    root_digest,
)
from bastion.signing._sign import default_signature_path, effective_ignore_paths
from bastion.signing._tree import walk_model

__all__ = ["digest"]


def digest(
    model_path: str | os.PathLike[str],
    *,
    hash_type: HashType = "sha256",
    method: Method = "files",
    shard_size: int = DEFAULT_SHARD_SIZE,
    ignore_paths: Iterable[str | os.PathLike[str]] = (),
    ignore_git_paths: bool = True,
    allow_symlinks: bool = False,
    cache: DigestCache | None = None,
    threads: int | None = None,
) -> str:
    """``sha256:<hex>``: the subject digest ``sign`` would record with the same options.

    Like ``sign``, it leaves out ``.git*`` paths and the default signature file.
    """
    model = Path(model_path)
    if not model.exists():
        raise PathNotFoundError(f"model path {os.fspath(model)!r} does not exist")
    ser = Serialization(
        method=method,
        hash_type=hash_type,
        shard_size=shard_size,
        allow_symlinks=allow_symlinks,
        ignore_paths=effective_ignore_paths(
            model, default_signature_path(model), ignore_paths, ignore_git_paths
        ),
    )
    files = walk_model(model, ignore_paths=ser.ignore_paths, allow_symlinks=allow_symlinks)
    resources = ManifestHasher(ser, threads=threads, cache=cache).hash(files)
    return "sha256:" + root_digest(resources).hex()
