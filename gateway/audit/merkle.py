"""RFC 6962 Merkle trees over the audit leaves: incremental root, inclusion proofs.

leaf = SHA256(0x00 || data), node = SHA256(0x01 || left || right), empty root = SHA256("").
The :class:`Frontier` keeps only the roots of the perfect subtrees (O(log n)), so every
append updates the root cheaply and a checkpoint can be signed at any size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


@dataclass
class Frontier:
    """Roots of the perfect subtrees of the tree so far, largest (leftmost) first."""

    size: int = 0
    nodes: list[tuple[int, bytes]] = field(default_factory=list)  # (subtree size, root)

    def append(self, leaf: bytes) -> None:
        self.size += 1
        self.nodes.append((1, leaf))
        while len(self.nodes) >= 2 and self.nodes[-1][0] == self.nodes[-2][0]:
            (size, right), (_, left) = self.nodes.pop(), self.nodes.pop()
            self.nodes.append((2 * size, node_hash(left, right)))

    def root(self) -> bytes:
        if not self.nodes:
            return EMPTY_ROOT
        root = self.nodes[-1][1]
        for _, left in reversed(self.nodes[:-1]):
            root = node_hash(left, root)
        return root

    def to_json(self) -> list[list[object]]:
        return [[size, digest.hex()] for size, digest in self.nodes]

    @classmethod
    def from_json(cls, size: int, data: Iterable[Sequence[object]]) -> Frontier:
        nodes = [(int(str(s)), bytes.fromhex(str(h))) for s, h in data]
        if sum(s for s, _ in nodes) != size:
            raise ValueError("frontier does not add up to its size")
        return cls(size=size, nodes=nodes)


def tree_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """Every level of the tree, leaves first; a lone right node is carried up unchanged."""
    levels = [list(leaves)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = [node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])
        levels.append(above)
    return levels


def root_of(levels: list[list[bytes]]) -> bytes:
    return levels[-1][0] if levels and levels[0] else EMPTY_ROOT


def inclusion_proof(levels: list[list[bytes]], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` (0-based) in the tree whose levels are given."""
    if not 0 <= index < len(levels[0]):
        raise IndexError(index)
    path: list[bytes] = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        index //= 2
    return path


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: recompute the root from a leaf and its audit path."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn % 2 == 1 or fn == sn:
            r = node_hash(p, r)
            while fn % 2 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root
