"""The RFC 6962 Merkle tree over entry hashes, and an incremental accumulator for it.

Leaf data is an entry's 32-byte hash (the raw digest, not its hex). Following RFC 6962
section 2.1: the root of no leaves is ``SHA-256("")``; a leaf hashes as
``SHA-256(0x00 || data)``; an inner node as ``SHA-256(0x01 || left || right)``; a tree of
``n > 1`` leaves splits at ``k``, the largest power of two below ``n``.

:class:`MerkleAccumulator` keeps one root per full subtree on the right edge of the
tree, at most 64 of them, so it can give the root after any number of appended
leaves without the leaves themselves, and it serialises to a small JSON document the
hub keeps beside the log.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

from bastion.audit._encoding import (
    MAX_SAFE_INTEGER,
    canonical_json,
    check_fields,
    check_hex_digest,
    check_int,
    load_json_object,
)
from bastion.errors import InputError

__all__ = ["EMPTY_ROOT", "MerkleAccumulator", "leaf_hash", "merkle_root", "node_hash"]

EMPTY_ROOT = hashlib.sha256(b"").digest()
_LEAF = b"\x00"
_NODE = b"\x01"
_FORMAT = 1
_MAX_SIZE = MAX_SAFE_INTEGER
_FIELDS = frozenset({"v", "size", "nodes"})


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(_LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(_NODE + left + right).digest()


def _check_leaf(data: object) -> bytes:
    if not isinstance(data, bytes) or len(data) != 32:
        raise InputError("a Merkle leaf must be an entry's 32-byte SHA-256 digest")
    return data


def merkle_root(leaves: Iterable[bytes]) -> bytes:
    """The RFC 6962 root of ``leaves``, streamed through an accumulator (O(log n) memory)."""
    tree = MerkleAccumulator()
    for leaf in leaves:
        tree.append(leaf)
    return tree.root()


class MerkleAccumulator:
    """The right edge of a growing RFC 6962 tree: append leaves, ask for the root."""

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._size = 0
        # Roots of the full subtrees that make up the tree, largest (leftmost) first:
        # one per bit set in ``size``.
        self._nodes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(self, data: bytes) -> None:
        """Add one leaf: the next entry's raw 32-byte hash."""
        self._push(leaf_hash(_check_leaf(data)))

    def _push(self, node: bytes) -> None:
        count = self._size
        while count & 1:
            node = node_hash(self._nodes.pop(), node)
            count >>= 1
        self._nodes.append(node)
        self._size += 1

    def root(self) -> bytes:
        """The root of the leaves appended so far."""
        if not self._nodes:
            return EMPTY_ROOT
        node = self._nodes[-1]
        for left in reversed(self._nodes[:-1]):
            node = node_hash(left, node)
        return node

    def copy(self) -> MerkleAccumulator:
        other = MerkleAccumulator()
        other._size = self._size
        other._nodes = list(self._nodes)
        return other

    def to_dict(self) -> dict[str, Any]:
        return {"v": _FORMAT, "size": self._size, "nodes": [n.hex() for n in self._nodes]}

    def to_json(self) -> str:
        return canonical_json(self.to_dict()).decode("utf-8")

    @classmethod
    def from_json(cls, data: str | bytes) -> MerkleAccumulator:
        doc = load_json_object(data, "Merkle accumulator", limit=8 * 1024)
        check_fields(doc, _FIELDS, "Merkle accumulator")
        if check_int(doc["v"], "the accumulator's format version", low=0, high=2**31) != _FORMAT:
            raise InputError(
                f"Merkle accumulator format version {doc['v']} is not supported; "
                f"this Bastion reads version {_FORMAT}"
            )
        size = check_int(doc["size"], "the accumulator's size", low=0, high=_MAX_SIZE)
        nodes = doc["nodes"]
        if not isinstance(nodes, list) or len(nodes) != size.bit_count():
            raise InputError(
                "the Merkle accumulator's nodes must be a list with one digest per bit of its size"
            )
        return cls._of(size, [_hex_node(n) for n in nodes])

    @classmethod
    def _of(cls, size: int, nodes: Sequence[bytes]) -> MerkleAccumulator:
        tree = cls()
        tree._size = size
        tree._nodes = list(nodes)
        return tree

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MerkleAccumulator):
            return NotImplemented
        return self._size == other._size and self._nodes == other._nodes

    def __repr__(self) -> str:
        return f"MerkleAccumulator(size={self._size}, root={self.root().hex()})"


def _hex_node(value: object) -> bytes:
    return bytes.fromhex(check_hex_digest(value, "a Merkle accumulator node"))
