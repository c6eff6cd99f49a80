"""The RFC 6962 Merkle tree: published vectors, and the accumulator against a plain recursion."""

from __future__ import annotations

import contextlib
import hashlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.audit import MerkleAccumulator, merkle_root
from bastion.audit._merkle import leaf_hash
from bastion.errors import InputError

# The Certificate Transparency reference inputs and the RFC 6962 tree heads over
# their first n items (n = 0..8), as published with the RFC's reference code.
CT_INPUTS = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1, written as the RFC states it."""
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    left, right = reference_root(leaves[:k]), reference_root(leaves[k:])
    return hashlib.sha256(b"\x01" + left + right).digest()


digests = st.binary(min_size=32, max_size=32)


def test_the_reference_recursion_gives_the_published_roots() -> None:
    for n, root in enumerate(CT_ROOTS):
        assert reference_root(CT_INPUTS[:n]).hex() == root


def test_the_accumulator_gives_the_published_roots() -> None:
    tree = MerkleAccumulator()
    assert tree.root().hex() == CT_ROOTS[0]
    for n, data in enumerate(CT_INPUTS, 1):
        tree._push(leaf_hash(data))  # the CT inputs are not 32 bytes, so bypass append's check
        assert tree.size == n
        assert tree.root().hex() == CT_ROOTS[n]


@settings(max_examples=60, deadline=None)
@given(st.lists(digests, max_size=70))
def test_root_after_every_append_matches_the_recursion(leaves: list[bytes]) -> None:
    tree = MerkleAccumulator()
    for n, leaf in enumerate(leaves, 1):
        tree.append(leaf)
        assert tree.root() == reference_root(leaves[:n])
    assert merkle_root(leaves) == reference_root(leaves)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=600), st.integers(min_value=0, max_value=40))
def test_state_stays_logarithmic_and_resumes_after_serialisation(size: int, more: int) -> None:
    leaves = [hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(size + more)]
    tree = MerkleAccumulator()
    for leaf in leaves[:size]:
        tree.append(leaf)
    state = tree.to_json()
    assert len(json.loads(state)["nodes"]) == size.bit_count() <= 10
    resumed = MerkleAccumulator.from_json(state)
    assert resumed == tree
    assert resumed.size == size
    for leaf in leaves[size:]:
        resumed.append(leaf)
    assert resumed.root() == reference_root(leaves)


def test_a_copy_grows_independently() -> None:
    tree = MerkleAccumulator()
    tree.append(b"\x01" * 32)
    copy = tree.copy()
    copy.append(b"\x02" * 32)
    assert tree.size == 1
    assert copy.size == 2
    assert tree.root() != copy.root()


def test_the_split_is_rfc6962s_not_the_midpoint() -> None:
    leaves = [bytes([i]) * 32 for i in range(6)]
    midpoint = hashlib.sha256(
        b"\x01" + reference_root(leaves[:3]) + reference_root(leaves[3:])
    ).digest()
    assert merkle_root(leaves) == reference_root(leaves) != midpoint


@pytest.mark.parametrize("leaf", [b"", b"\x00" * 31, b"\x00" * 33, "00" * 32])
def test_a_leaf_must_be_a_32_byte_digest(leaf: object) -> None:
    with pytest.raises(InputError, match="32-byte"):
        MerkleAccumulator().append(leaf)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"v": 1, "size": 3, "nodes": ["00" * 32]}, "one digest per bit"),
        ({"v": 1, "size": -1, "nodes": []}, "between 0 and"),
        ({"v": 1, "size": 1, "nodes": ["AA" * 32]}, "lower-case hexadecimal"),
        ({"v": 1, "size": 1, "nodes": [" " + "a" * 63]}, "lower-case hexadecimal"),
        ({"v": 1, "size": 1, "nodes": "aa"}, "one digest per bit"),
        ({"v": 2, "size": 0, "nodes": []}, "version 2"),
        ({"size": 0, "nodes": []}, "lacks the field"),
        ({"v": 1, "size": 0, "nodes": [], "root": "x"}, "unknown field"),
    ],
)
def test_from_json_is_strict(doc: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        MerkleAccumulator.from_json(json.dumps(doc))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_from_json_never_crashes_on_arbitrary_input(data: bytes | str) -> None:
    try:
        tree = MerkleAccumulator.from_json(data)
    except InputError:
        return
    assert MerkleAccumulator.from_json(tree.to_json()) == tree


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=50), st.data())
def test_from_json_never_crashes_on_mutated_state(size: int, data: st.DataObject) -> None:
    tree = MerkleAccumulator()
    for i in range(size):
        tree.append(bytes([i]) * 32)
    raw = bytearray(tree.to_json().encode())
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    with contextlib.suppress(InputError):
        MerkleAccumulator.from_json(bytes(raw))
