"""RFC 6962 Merkle trees: the tree hash, audit paths and consistency proofs, checked against
the RFC's worked example, published test vectors and a direct transcription of the RFC's
recursive definitions."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vault import merkle

# The leaves of the Certificate Transparency reference tests, and the root of each prefix.
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


# -- the RFC's definitions, transcribed recursively -------------------------------------------


def naive_root(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + naive_root(leaves[:k]) + naive_root(leaves[k:])).digest()


def naive_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*naive_path(m, leaves[:k]), naive_root(leaves[k:])]
    return [*naive_path(m - k, leaves[k:]), naive_root(leaves[:k])]


def naive_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if complete else [naive_root(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*naive_subproof(m, leaves[:k], complete), naive_root(leaves[k:])]
    return [*naive_subproof(m - k, leaves[k:], False), naive_root(leaves[:k])]


def leaves_of(count: int) -> list[bytes]:
    return [hashlib.sha256(index.to_bytes(4, "big")).digest() for index in range(count)]


# -- known cases ------------------------------------------------------------------------------


def test_the_empty_tree_and_the_reference_vectors() -> None:
    assert merkle.root([]) == hashlib.sha256(b"").digest() == merkle.EMPTY_ROOT
    for size, expected in enumerate(CT_ROOTS, start=1):
        assert merkle.root(CT_LEAVES[:size]).hex() == expected
        assert naive_root(CT_LEAVES[:size]).hex() == expected


def test_leaves_and_nodes_are_hashed_apart() -> None:
    a, b = b"a", b"b"
    assert merkle.root([a]) == hashlib.sha256(b"\x00a").digest()
    assert merkle.root([a, b]) == merkle.node_hash(merkle.leaf_hash(a), merkle.leaf_hash(b))
    # A node's two children, given as one leaf, do not make the same tree.
    joined = merkle.leaf_hash(a) + merkle.leaf_hash(b)
    assert merkle.root([joined]) != merkle.root([a, b])


def test_the_split_is_the_largest_power_of_two_below_the_size() -> None:
    assert [merkle.split(n) for n in range(2, 10)] == [1, 2, 2, 4, 4, 4, 4, 8]
    with pytest.raises(ValueError, match="two or more"):
        merkle.split(1)


def test_the_rfc_example_of_seven_leaves() -> None:
    # RFC 6962 §2.1.3, as ranges of leaves: the audit path of d0 is [b, h, l], of d3 [c, g, l],
    # of d4 [f, j, k], of d6 [i, k]; the proof from 3 to 7 is [c, d, g, l], from 4 [l], from 6
    # [i, j, k], where b, c, d, f, j are single leaves, g = d0..d1, h = d2..d3, i = d4..d5,
    # k = d0..d3 and l = d4..d6.
    assert merkle.inclusion_ranges(0, 7) == [(1, 2), (2, 4), (4, 7)]
    assert merkle.inclusion_ranges(3, 7) == [(2, 3), (0, 2), (4, 7)]
    assert merkle.inclusion_ranges(4, 7) == [(5, 6), (6, 7), (0, 4)]
    assert merkle.inclusion_ranges(6, 7) == [(4, 6), (0, 4)]
    assert merkle.consistency_ranges(3, 7) == [(2, 3), (3, 4), (0, 2), (4, 7)]
    assert merkle.consistency_ranges(4, 7) == [(4, 7)]
    assert merkle.consistency_ranges(6, 7) == [(4, 6), (6, 7), (0, 4)]
    assert merkle.consistency_ranges(7, 7) == []


def test_a_frontier_stores_the_perfect_subtrees_and_resumes() -> None:
    leaves = leaves_of(13)
    frontier = merkle.Frontier()
    frontier.extend(leaves[:6])
    assert [span for span, _ in frontier.blocks()] == [(0, 4), (4, 6)]
    resumed = merkle.Frontier(frontier.size, frontier.subtrees)
    resumed.extend(leaves[6:])
    assert resumed.root() == naive_root(leaves)
    assert [span for span, _ in resumed.blocks()] == [(0, 8), (8, 12), (12, 13)]
    with pytest.raises(ValueError, match="each set bit"):
        merkle.Frontier(6, frontier.subtrees[:1])


def test_bad_arguments_are_refused_or_fail_verification() -> None:
    leaves = leaves_of(5)
    top = merkle.root(leaves)
    with pytest.raises(ValueError, match="outside the tree"):
        merkle.inclusion_ranges(5, 5)
    with pytest.raises(ValueError, match="old size"):
        merkle.consistency_ranges(0, 5)
    with pytest.raises(ValueError, match="old size"):
        merkle.consistency_ranges(6, 5)
    assert not merkle.verify_inclusion(leaves[0], 5, 5, [], top)
    assert not merkle.verify_consistency(0, 5, top, top, [])
    assert not merkle.verify_consistency(3, 5, top, top, [])
    assert merkle.verify_consistency(5, 5, top, top, [])
    assert not merkle.verify_consistency(5, 5, top, top, [top])


# -- every size up to 70, against the transcription -------------------------------------------

SIZES = range(1, 71)


@pytest.mark.parametrize("size", SIZES)
def test_roots_and_proofs_match_the_rfc_definitions(size: int) -> None:
    leaves = leaves_of(size)
    top = merkle.root(leaves)
    assert top == naive_root(leaves)
    for index in range(size):
        proof = merkle.inclusion_proof(leaves, index)
        assert proof == naive_path(index, leaves)
        assert merkle.verify_inclusion(leaves[index], index, size, proof, top)
    for old in range(1, size + 1):
        proof = merkle.consistency_proof(leaves, old)
        assert proof == naive_subproof(old, leaves, True)
        assert merkle.verify_consistency(old, size, naive_root(leaves[:old]), top, proof)


@pytest.mark.parametrize("size", SIZES)
def test_one_pass_gives_every_subtree_the_proofs_name(size: int) -> None:
    leaves = leaves_of(size)
    wanted = {span for index in range(size) for span in merkle.inclusion_ranges(index, size)}
    wanted |= {span for old in range(1, size) for span in merkle.consistency_ranges(old, size)}
    roots = merkle.subtree_roots(iter(leaves), wanted)
    assert set(roots) == wanted
    for start, end in wanted:
        assert roots[(start, end)] == naive_root(leaves[start:end])


def test_a_range_that_is_no_subtree_is_refused() -> None:
    with pytest.raises(ValueError, match="no subtree"):
        merkle.subtree_roots(iter(leaves_of(7)), {(1, 3)})
    with pytest.raises(ValueError, match="no subtree"):
        merkle.subtree_roots(iter(leaves_of(7)), {(4, 9)})


@given(st.data())
@settings(max_examples=300, deadline=None)
def test_a_changed_proof_root_or_position_fails(data: st.DataObject) -> None:
    size = data.draw(st.integers(1, 70), label="size")
    leaves = leaves_of(size)
    top = merkle.root(leaves)
    index = data.draw(st.integers(0, size - 1), label="index")
    path = merkle.inclusion_proof(leaves, index)
    assert merkle.verify_inclusion(leaves[index], index, size, path, top)
    assert not merkle.verify_inclusion(b"forged", index, size, path, top)
    if size > 1:
        other = data.draw(st.integers(0, size - 1).filter(lambda i: i != index), label="other")
        assert not merkle.verify_inclusion(leaves[index], other, size, path, top)
        flipped = data.draw(st.integers(0, len(path) - 1), label="flipped")
        broken = [*path]
        broken[flipped] = bytes(32)
        assert not merkle.verify_inclusion(leaves[index], index, size, broken, top)
        assert not merkle.verify_inclusion(leaves[index], index, size, path[:-1], top)
        assert not merkle.verify_inclusion(leaves[index], index, size, [*path, top], top)

    old = data.draw(st.integers(1, size), label="old")
    old_root = merkle.root(leaves[:old])
    proof = merkle.consistency_proof(leaves, old)
    assert merkle.verify_consistency(old, size, old_root, top, proof)
    if old < size:
        # History rewritten below the old size: the new tree no longer extends the old one.
        rewritten = [*leaves]
        rewritten[data.draw(st.integers(0, old - 1), label="rewritten")] = b"rewritten"
        forged_root = merkle.root(rewritten)
        forged_proof = merkle.consistency_proof(rewritten, old)
        assert not merkle.verify_consistency(old, size, old_root, forged_root, forged_proof)
        assert not merkle.verify_consistency(old, size, old_root, top, proof[:-1])
        assert not merkle.verify_consistency(old, size, top, top, proof)
        flipped = data.draw(st.integers(0, len(proof) - 1), label="flipped")
        broken = [*proof]
        broken[flipped] = bytes(32)
        assert not merkle.verify_consistency(old, size, old_root, top, broken)
        if old + 1 < size:
            assert not merkle.verify_consistency(old + 1, size, old_root, top, proof)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=70))
@settings(max_examples=200, deadline=None)
def test_the_frontier_root_equals_the_recursive_root(leaves: list[bytes]) -> None:
    frontier = merkle.Frontier()
    for count, leaf in enumerate(leaves, start=1):
        frontier.append(leaf)
        assert frontier.size == count
        assert frontier.root() == naive_root(leaves[:count])
    # The old tree's part of a consistency proof is exactly its frontier's blocks.
    for old in range(1, len(leaves) + 1):
        prefix = merkle.Frontier()
        prefix.extend(leaves[:old])
        blocks = {span for span, _ in prefix.blocks()}
        inside = [span for span in merkle.consistency_ranges(old, len(leaves)) if span[1] <= old]
        assert set(inside) <= blocks
