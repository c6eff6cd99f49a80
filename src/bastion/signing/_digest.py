"""The root digest of a model: a compact handle for exactly these file contents.

It is the OMS root digest: SHA-256 over the resources' raw digests, in
manifest order. File names (and shard offsets) are not hashed, so renaming a
file, or moving it to another folder, can leave the root digest unchanged; only
the signed manifest binds names to contents. It stays this way to match
OMS/``model-signing``.
"""

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
    It identifies the contents, in order, not the file names: to pin the names
    as well, verify against the signed manifest.
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
