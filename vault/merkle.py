"""Merkle trees as RFC 6962 (§2.1) and RFC 9162 (§2.1) define them: the tree hash, audit
paths (inclusion proofs) and consistency proofs, and the verification of both.

A leaf is hashed as ``SHA-256(0x00 ‖ leaf)`` and an inner node as
``SHA-256(0x01 ‖ left ‖ right)``; the two prefixes keep a leaf from passing for a node. A
tree of n > 1 leaves splits at k, the largest power of two smaller than n. Pure: the standard
library only, no I/O.

Proofs are described as the leaf ranges ``(start, end)`` whose subtree hashes they list, so
a caller holding the leaves elsewhere (a database) computes only those subtrees, one streamed
range at a time; ``inclusion_proof`` and ``consistency_proof`` do it over a list in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable, Sequence

LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Range = tuple[int, int]


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split(size: int) -> int:
    """The largest power of two smaller than ``size`` (which is at least 2)."""
    if size < 2:
        raise ValueError("only a tree of two or more leaves splits")
    return 1 << ((size - 1).bit_length() - 1)


class Frontier:
    """The compact state of a growing tree: the hashes of its maximal perfect subtrees, from
    the leftmost (largest) to the rightmost, one for each set bit of the size.

    Appending is the carry of a binary counter, so a tree of n leaves is hashed in O(n) time
    and O(log n) memory whatever the order its leaves arrive in, and a stored frontier lets
    the tree grow later without reading its old leaves again.
    """

    def __init__(self, size: int = 0, subtrees: Sequence[bytes] = ()) -> None:
        if size < 0 or len(subtrees) != size.bit_count():
            raise ValueError("a frontier holds one subtree for each set bit of its size")
        if any(len(subtree) != HASH_SIZE for subtree in subtrees):
            raise ValueError("a subtree hash is 32 bytes")
        self._size = size
        self._subtrees = list(subtrees)

    @property
    def size(self) -> int:
        return self._size

    @property
    def subtrees(self) -> tuple[bytes, ...]:
        return tuple(self._subtrees)

    def blocks(self) -> list[tuple[Range, bytes]]:
        """Each perfect subtree with the leaf range it covers."""
        found, start = [], 0
        bits = [
            1 << bit for bit in reversed(range(self._size.bit_length())) if self._size >> bit & 1
        ]
        for width, subtree in zip(bits, self._subtrees, strict=True):
            found.append(((start, start + width), subtree))
            start += width
        return found

    def append(self, leaf: bytes) -> None:
        self.append_hash(leaf_hash(leaf))

    def append_hash(self, hashed_leaf: bytes) -> None:
        self._size += 1
        merged = hashed_leaf
        # Every trailing zero bit of the new size is a pair of equal subtrees to merge.
        carries = (self._size & -self._size).bit_length() - 1
        for _ in range(carries):
            merged = node_hash(self._subtrees.pop(), merged)
        self._subtrees.append(merged)

    def extend(self, leaves: Iterable[bytes]) -> None:
        for leaf in leaves:
            self.append(leaf)

    def root(self) -> bytes:
        """The tree hash: the subtrees folded from the right, which is RFC 6962's split."""
        if not self._subtrees:
            return EMPTY_ROOT
        folded = self._subtrees[-1]
        for subtree in reversed(self._subtrees[:-1]):
            folded = node_hash(subtree, folded)
        return folded


def root(leaves: Iterable[bytes]) -> bytes:
    """MTH(D[n]) of the leaves, streamed."""
    frontier = Frontier()
    frontier.extend(leaves)
    return frontier.root()


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The ranges of the subtrees in PATH(index, D[size]), in proof order (RFC 6962 §2.1.1)."""
    if not 0 <= index < size:
        raise ValueError("the leaf index lies outside the tree")
    ranges: list[Range] = []
    start, end = 0, size
    # Walk down from the root; the siblings are collected top first, the proof wants them
    # bottom first.
    while end - start > 1:
        middle = start + split(end - start)
        if index < middle:
            ranges.append((middle, end))
            end = middle
        else:
            ranges.append((start, middle))
            start = middle
    return ranges[::-1]


def consistency_ranges(old_size: int, new_size: int) -> list[Range]:
    """The ranges of the subtrees in PROOF(old_size, D[new_size]) (RFC 6962 §2.1.2)."""
    if not 0 < old_size <= new_size:
        raise ValueError("a consistency proof needs 0 < old size <= new size")
    ranges: list[Range] = []
    start, end, m, complete = 0, new_size, old_size, True
    # SUBPROOF(m, D[start:end], complete), unrolled: each step descends into one half and
    # owes the other half's hash, which comes after those found further down.
    while m != end - start:
        k = split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start, m, complete = start + k, m - k, False
    if not complete:
        ranges.append((start, end))
    return ranges[::-1]


def subtree_roots(
    leaves: Iterable[bytes], wanted: Collection[Range], after: Frontier | None = None
) -> dict[Range, bytes]:
    """The hashes of the ``wanted`` subtrees of the tree over ``leaves``, in one streamed pass;
    the leaves follow those ``after`` holds, if given.

    Every range an RFC 6962 proof names is either a perfect subtree, which the carries of the
    frontier produce as the leaves go by, or a subtree on the tree's right edge, made of the
    frontier's last blocks; memory is the frontier plus the hashes kept. A proof of a leaf
    beyond ``after`` needs of the leaves before it only ranges its blocks make up. Raises
    ValueError for a range that is none of these.
    """
    pending = set(wanted)
    found: dict[Range, bytes] = {}
    # (start, width, hash) of each perfect subtree of the frontier, largest first.
    blocks: list[tuple[int, int, bytes]] = []
    size = 0
    if after is not None:
        blocks = [(begin, end - begin, subtree) for (begin, end), subtree in after.blocks()]
        size = after.size
        found = {span: subtree for span, subtree in after.blocks() if span in pending}
    for leaf in leaves:
        start, width, merged = size, 1, leaf_hash(leaf)
        size += 1
        if (start, size) in pending:
            found[(start, size)] = merged
        while blocks and blocks[-1][1] == width:
            start, _, left = blocks.pop()
            merged, width = node_hash(left, merged), width * 2
            if (start, start + width) in pending:
                found[(start, start + width)] = merged
        blocks.append((start, width, merged))
    for span in pending - found.keys():
        tail = [block for block in blocks if block[0] >= span[0]]
        if span[1] != size or not tail or tail[0][0] != span[0]:
            raise ValueError(f"{span} is no subtree of a tree of {size} leaves")
        folded = tail[-1][2]
        for _, _, subtree in reversed(tail[:-1]):
            folded = node_hash(subtree, folded)
        found[span] = folded
    return found


def _subtree(leaves: Sequence[bytes]) -> Callable[[Range], bytes]:
    return lambda span: root(leaves[span[0] : span[1]])


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    return [*map(_subtree(leaves), inclusion_ranges(index, len(leaves)))]


def consistency_proof(leaves: Sequence[bytes], old_size: int) -> list[bytes]:
    return [*map(_subtree(leaves), consistency_ranges(old_size, len(leaves)))]


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does ``proof`` put ``leaf`` at ``index`` of the tree ``expected_root``?"""
    if not 0 <= index < size:
        return False
    fn, sn, running = index, size - 1, leaf_hash(leaf)
    for sibling in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            running = node_hash(sibling, running)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            running = node_hash(running, sibling)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and running == expected_root


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree ``new_root`` the tree ``old_root`` with leaves appended?"""
    if not 0 < old_size <= new_size:
        return False
    if old_size == new_size:
        return not proof and old_root == new_root
    if not proof:
        return False
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    old_running = new_running = path[0]
    for node in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            old_running = node_hash(node, old_running)
            new_running = node_hash(node, new_running)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            new_running = node_hash(new_running, node)
        fn, sn = fn >> 1, sn >> 1
    return old_running == old_root and new_running == new_root and sn == 0
