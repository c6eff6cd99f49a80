"""The OMS manifest: how a model is serialized, and the digest of every resource.

A resource is a whole file (method ``files``) or a byte range of one
(method ``shards``, named ``path:start:end``). Resources are ordered the way
the reference tool (model-signing 1.1.1) orders them: by path *components*,
then by numeric offset. The OMS specification says code-point order of the
names; following the reference keeps root digests identical across the two
tools (see ``docs/signing.md``, "Deviations").
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bastion.errors import BundleFormatError, UsageError

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "HASH_TYPES",
    "ManifestDiff",
    "Resource",
    "Serialization",
    "file_of",
    "order_key",
    "root_digest",
]

HashType = Literal["sha256", "blake3"]
Method = Literal["files", "shards"]
HASH_TYPES: tuple[HashType, ...] = ("sha256", "blake3")
DEFAULT_SHARD_SIZE = 1_000_000_000
_MAX_PATH = 4096
#: Canonical offsets only: ASCII digits, no leading zeros, at most 20 digits.
_OFFSET = re.compile(r"0|[1-9][0-9]{0,19}", re.ASCII)
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Serialization:
    """How a model was turned into a list of resources (the predicate's ``serialization``)."""

    method: Method = "files"
    hash_type: HashType = "sha256"
    shard_size: int = DEFAULT_SHARD_SIZE
    allow_symlinks: bool = False
    ignore_paths: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.method not in ("files", "shards"):
            raise UsageError(f"unknown serialization method {self.method!r}; use files or shards")
        if self.hash_type not in HASH_TYPES:
            raise UsageError(f"unknown hash {self.hash_type!r}; use sha256 or blake3")
        if self.method == "shards" and self.hash_type == "blake3":
            raise UsageError(
                "blake3 already hashes one file on every core; use the files method with blake3"
            )
        if self.shard_size <= 0:
            raise UsageError(
                f"shard size must be a positive number of bytes, not {self.shard_size}"
            )

    @property
    def algorithm(self) -> str:
        """The per-resource ``algorithm`` string the reference writes."""
        if self.method == "shards":
            return f"{self.hash_type}-sharded-{self.shard_size}"
        return self.hash_type

    @property
    def cache_descriptor(self) -> str:
        return f"{self.method}:{self.algorithm}"

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "method": self.method,
            "hash_type": self.hash_type,
            "allow_symlinks": self.allow_symlinks,
        }
        if self.method == "shards":
            body["shard_size"] = self.shard_size
        if self.ignore_paths:
            body["ignore_paths"] = list(self.ignore_paths)
        return body

    @classmethod
    def from_dict(cls, body: object) -> Serialization:
        """Read a predicate's ``serialization`` block, refusing anything ambiguous."""
        if not isinstance(body, Mapping):
            raise BundleFormatError("the signature's serialization block is not an object")
        method = body.get("method")
        hash_type = body.get("hash_type")
        allow = body.get("allow_symlinks", False)
        if method not in ("files", "shards"):
            raise BundleFormatError(f"the signature uses an unknown method {method!r}")
        if hash_type not in HASH_TYPES:
            raise BundleFormatError(f"the signature uses an unsupported hash {hash_type!r}")
        if not isinstance(allow, bool):
            raise BundleFormatError("the signature's allow_symlinks is not a boolean")
        shard_size = DEFAULT_SHARD_SIZE
        if method == "shards":
            shard_size = _whole_number(body.get("shard_size"), "shard_size")
            if shard_size <= 0:
                raise BundleFormatError("the signature's shard_size is not positive")
        ignore = body.get("ignore_paths", [])
        if not isinstance(ignore, list) or not all(isinstance(p, str) for p in ignore):
            raise BundleFormatError("the signature's ignore_paths is not a list of strings")
        for p in ignore:
            check_relative_name(p, what="ignore path")
        try:
            return cls(method, hash_type, shard_size, allow, tuple(ignore))
        except UsageError as exc:
            raise BundleFormatError(f"the signature's serialization is invalid: {exc}") from None


def _whole_number(value: object, what: str) -> int:
    # The reference round-trips numbers through a protobuf Struct, so a shard
    # size of 1000 comes back as 1000.0: accept integral floats, nothing else.
    if isinstance(value, bool):
        raise BundleFormatError(f"the signature's {what} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    raise BundleFormatError(f"the signature's {what} is not a whole number")


def check_relative_name(name: str, *, what: str = "resource name") -> str:
    """Refuse names that could point outside a model: absolute, ``..``, empty parts."""
    if not name or len(name) > _MAX_PATH:
        raise BundleFormatError(f"the signature holds an empty or overlong {what}")
    if name == ".":
        return name
    parts = name.split("/")
    if name.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in name:
        raise BundleFormatError(f"the signature holds an unsafe {what} {name!r}")
    return name


@dataclass(frozen=True, slots=True)
class Resource:
    """One entry of the predicate's ``resources``: a file or a shard and its digest."""

    name: str
    algorithm: str
    digest: bytes

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "algorithm": self.algorithm, "digest": self.digest.hex()}


def file_of(name: str, method: Method) -> tuple[str, int, int]:
    """Split a resource name into (file, start, end); a whole file is (name, 0, -1).

    Shard names are parsed from the right, so a file name containing ``:``
    stays unambiguous.
    """
    if method == "files":
        return name, 0, -1
    rest, sep1, end = name.rpartition(":")
    path, sep2, start = rest.rpartition(":")
    if not (sep1 and sep2 and _OFFSET.fullmatch(start) and _OFFSET.fullmatch(end)):
        raise BundleFormatError(f"the signature holds a malformed shard name {name!r}")
    if int(end) < int(start):
        raise BundleFormatError(
            f"the signature holds a malformed shard name {name!r} (it ends before it starts)"
        )
    return path, int(start), int(end)


def order_key(name: str, method: Method) -> tuple[list[str], int, int]:
    """Sort key matching the reference: path components, then offsets."""
    path, start, end = file_of(name, method)
    return path.split("/"), start, end


def root_digest(resources: Iterable[Resource]) -> bytes:
    """SHA-256 over the raw digests of the resources, in the order given."""
    hasher = hashlib.sha256()
    for resource in resources:
        hasher.update(resource.digest)
    return hasher.digest()


def parse_resources(body: object, serialization: Serialization) -> tuple[Resource, ...]:
    """Read a predicate's ``resources`` array, refusing duplicates and unsafe names."""
    if not isinstance(body, list) or not body:
        raise BundleFormatError("the signature lists no resources")
    out: list[Resource] = []
    seen: set[str] = set()
    for item in body:
        if not isinstance(item, Mapping):
            raise BundleFormatError("a resource in the signature is not an object")
        name, algorithm, digest = item.get("name"), item.get("algorithm"), item.get("digest")
        if not (isinstance(name, str) and isinstance(algorithm, str) and isinstance(digest, str)):
            raise BundleFormatError("a resource in the signature lacks a name, algorithm or digest")
        path, _, _ = file_of(name, serialization.method)
        check_relative_name(path)
        if name in seen:
            raise BundleFormatError(f"the signature lists {name!r} twice")
        seen.add(name)
        if algorithm != serialization.algorithm:
            raise BundleFormatError(
                f"resource {name!r} uses {algorithm!r}, "
                f"but the serialization says {serialization.algorithm!r}"
            )
        if not _HEX_DIGEST.fullmatch(digest):
            raise BundleFormatError(
                f"resource {name!r} has a digest that is not hex, or of the wrong length "
                "(64 lower-case hex digits expected)"
            )
        out.append(Resource(name, algorithm, bytes.fromhex(digest)))
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ManifestDiff:
    """What differs between the files a signature covers and the files on disk."""

    modified: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    matching: int = 0
    notes: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not (self.modified or self.added or self.removed)

    @classmethod
    def compare(
        cls, signed: Iterable[Resource], local: Iterable[Resource], method: Method
    ) -> ManifestDiff:
        """Compare per file: a file is modified when any of its shards differs."""
        signed_files = _by_file(signed, method)
        local_files = _by_file(local, method)
        modified = sorted(
            n for n in signed_files.keys() & local_files.keys() if signed_files[n] != local_files[n]
        )
        added = sorted(local_files.keys() - signed_files.keys())
        removed = sorted(signed_files.keys() - local_files.keys())
        matching = len(signed_files.keys() & local_files.keys()) - len(modified)
        return cls(tuple(modified), tuple(added), tuple(removed), matching)


def _by_file(resources: Iterable[Resource], method: Method) -> dict[str, frozenset[Any]]:
    files: dict[str, set[tuple[int, int, bytes]]] = {}
    for r in resources:
        path, start, end = file_of(r.name, method)
        files.setdefault(path, set()).add((start, end, r.digest))
    return {path: frozenset(shards) for path, shards in files.items()}
