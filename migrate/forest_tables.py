"""A boosted forest as lookup tables, for scoring large batches in NumPy faster than sklearn's compiled loop.

Walking a tree costs a data-dependent gather per level; here every tree's leaf for a row comes from one lookup
per feature (the QuickScorer idea: Lucchese et al., SIGIR 2015). For each feature, every threshold any tree
compares it with, sorted: a row's *rank* on the feature is how many of them lie strictly below its value
(``searchsorted(..., side="left")``), and NaN gets a slot of its own past the largest rank. For the threshold
``t`` at position ``g`` of that list, ``x <= t`` holds exactly when the rank is at most ``g`` — the same float64
comparison sklearn makes. A tree's leaves are numbered left to right; a node whose comparison is false sends the
row right, ruling out every leaf of its left subtree, and the row's leaf is the leftmost one no false node rules
out. So per feature and rank (and NaN, which follows each node's ``missing_go_to_left``) a bit mask per tree of the
leaves still possible is precomputed; a row's masks over its features are ANDed, the lowest bit left is its leaf,
and the leaf values are added in tree order to the baseline, as sklearn adds them.

Trees of up to 64 leaves (the examples': 15). `compile` returns None past that, or past `MAX_MASK_BYTES`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

__all__ = ["CHUNK_ROWS", "MAX_LEAVES", "MAX_MASK_BYTES", "ForestTables"]

FloatArray = npt.NDArray[np.float64]
MaskArray = npt.NDArray[np.unsignedinteger]
MAX_LEAVES = 64
MAX_MASK_BYTES = 256 << 20  # (thresholds + 2) × trees masks per split feature, all features together
CHUNK_ROWS = 2_048  # rows scored at once: their (rows × trees) masks stay in cache (800 KiB at 100 trees)
# The lowest set bit's position by de Bruijn multiplication (one multiply, one shift, one lookup per mask).
_DE_BRUIJN: dict[int, tuple[np.unsignedinteger[Any], int]] = {
    32: (np.uint32(0x077CB531), 27),
    64: (np.uint64(0x03F79D71B4CB0A89), 58),
}


def _bit_positions(bits: int) -> npt.NDArray[np.uint8]:
    multiplier, shift = _DE_BRUIJN[bits]
    dtype = np.uint32 if bits == 32 else np.uint64
    powers = np.left_shift(np.ones(bits, dtype=dtype), np.arange(bits, dtype=dtype))
    slots = (powers * multiplier) >> dtype(shift)
    table = np.zeros(bits, dtype=np.uint8)
    table[slots.astype(np.intp)] = np.arange(bits, dtype=np.uint8)
    return table


@dataclass(frozen=True)
class ForestTables:
    """Per split feature its sorted thresholds and, per rank, each tree's mask of reachable leaves."""

    thresholds: tuple[FloatArray, ...]  # per split feature: every threshold on it, sorted and unique
    columns: tuple[int, ...]  # the feature (matrix column) of each entry of `thresholds`
    masks: tuple[MaskArray, ...]  # per split feature: (ranks 0..n, then NaN) × trees, leaves still possible
    values: FloatArray  # (trees, bits): each tree's leaf values by the de Bruijn slot of their bit, zero-padded
    bits: int  # 32 or 64: the masks' width
    baseline: float

    @classmethod
    def compile(cls, trees: Sequence[npt.NDArray[np.void]], baseline: float) -> ForestTables | None:
        """The tables of HistGradientBoosting predictor node arrays (numeric splits only), else None if too big."""

        leaves = max(int(t["is_leaf"].sum()) for t in trees)
        if leaves > MAX_LEAVES:
            return None
        bits = 32 if leaves <= 32 else 64
        dtype = np.uint32 if bits == 32 else np.uint64
        split_of = [~t["is_leaf"].astype(bool) for t in trees]
        used = sorted({int(c) for t, s in zip(trees, split_of, strict=True) for c in t["feature_idx"][s]})
        everywhere = {
            c: np.unique(
                np.concatenate(
                    [t["num_threshold"][s & (t["feature_idx"] == c)] for t, s in zip(trees, split_of, strict=True)]
                )
            ).astype(np.float64)
            for c in used
        }
        if sum(len(everywhere[c]) + 2 for c in used) * len(trees) * bits // 8 > MAX_MASK_BYTES:
            return None
        everything = dtype(np.iinfo(dtype).max)
        masks = {c: np.full((len(everywhere[c]) + 2, len(trees)), everything, dtype=dtype) for c in used}
        values = np.zeros((len(trees), bits), dtype=np.float64)
        slots = np.argsort(_bit_positions(bits))  # leaf position -> the slot its bit hashes to
        for number, nodes in enumerate(trees):
            order, left_leaves = _leaves_left_to_right(nodes)
            values[number, slots[: len(order)]] = nodes["value"][order]
            for node in np.flatnonzero(~nodes["is_leaf"].astype(bool)):
                column, ruled_out = int(nodes["feature_idx"][node]), dtype(~left_leaves[node] & int(everything))
                at = int(np.searchsorted(everywhere[column], nodes["num_threshold"][node]))
                masks[column][at + 1 : -1, number] &= ruled_out  # ranks past the threshold: x > t, go right
                if not nodes["missing_go_to_left"][node]:
                    masks[column][-1, number] &= ruled_out
        return cls(
            thresholds=tuple(everywhere[c] for c in used),
            columns=tuple(used),
            masks=tuple(masks[c] for c in used),
            values=values,
            bits=bits,
            baseline=baseline,
        )

    def raw(self, features: FloatArray) -> FloatArray:
        """The summed leaf values, shape (rows, 1), as sklearn's ``_raw_predict`` computes them."""
        rows = features.shape[0]
        out = np.empty((rows, 1), dtype=np.float64)
        work = _Work.for_rows(min(rows, CHUNK_ROWS), self.values.shape[0], self.bits)
        for start in range(0, rows, CHUNK_ROWS):
            out[start : start + CHUNK_ROWS, 0] = self._raw_chunk(features[start : start + CHUNK_ROWS], work)
        return out

    @property
    def _slot_starts(self) -> MaskArray:
        trees = self.values.shape[0]
        dtype = np.uint32 if self.bits == 32 else np.uint64
        return cast(MaskArray, np.asarray(np.arange(trees) * self.bits, dtype=dtype)[:, None])

    def _raw_chunk(self, features: FloatArray, work: _Work) -> FloatArray:
        rows, trees = features.shape[0], self.values.shape[0]
        possible, part = work.possible[:rows], work.part[:rows]
        first = True
        for column, thresholds, masks in zip(self.columns, self.thresholds, self.masks, strict=True):
            x = features[:, column]
            rank = np.searchsorted(thresholds, x, side="left")  # NaN sorts last: given its own slot below
            missing = np.isnan(x)
            if missing.any():
                rank[missing] = len(thresholds) + 1
            # (rows, trees): whole rows gathered, the cheap way round
            np.take(masks, rank, axis=0, out=possible if first else part, mode="clip")
            if not first:
                np.bitwise_and(possible, part, out=possible)
            first = False
        if first:  # no tree splits: each is its one leaf
            possible.fill(1)
        # Trees as rows from here: each tree's leaf values are one contiguous vector, added in order below.
        by_tree = work.by_tree[: trees * rows].reshape(trees, rows)
        np.copyto(by_tree, possible.T)
        lowest = work.lowest[: trees * rows].reshape(trees, rows)
        one = by_tree.dtype.type(1)
        np.invert(by_tree, out=lowest)
        np.add(lowest, one, out=lowest)
        np.bitwise_and(by_tree, lowest, out=lowest)
        multiplier, shift = _DE_BRUIJN[self.bits]
        np.multiply(lowest, multiplier, out=lowest)
        np.right_shift(lowest, by_tree.dtype.type(shift), out=lowest)  # the lowest bit's de Bruijn slot, per tree
        np.add(lowest, self._slot_starts, out=lowest)
        slot = work.slot[: trees * rows].reshape(trees, rows)
        np.copyto(slot, lowest, casting="unsafe")  # slots < trees × bits
        values = work.values[: trees * rows].reshape(trees, rows)
        np.take(self.values, slot, out=values, mode="clip")
        total = np.full(rows, np.float64(0.0) + np.float64(self.baseline))  # sklearn: zeros, then += baseline
        for tree in values:
            total += tree
        return total


@dataclass(frozen=True)
class _Work:
    """Scratch arrays for one `ForestTables.raw` call, reused by every block of rows.

    Fresh arrays per block cost 3× the scoring time on this machine (1.5 against 0.5 µs a row at 2,048 rows and
    100 trees): each is past glibc's mmap threshold, so it was mapped, page-faulted in and unmapped per block.
    """

    possible: MaskArray  # (rows, trees)
    part: MaskArray  # (rows, trees)
    by_tree: MaskArray  # flat, trees × rows
    lowest: MaskArray  # flat, trees × rows
    slot: npt.NDArray[np.intp]  # flat, trees × rows
    values: FloatArray  # flat, trees × rows

    @classmethod
    def for_rows(cls, rows: int, trees: int, bits: int) -> _Work:
        dtype = np.uint32 if bits == 32 else np.uint64
        return cls(
            possible=np.empty((rows, trees), dtype=dtype),
            part=np.empty((rows, trees), dtype=dtype),
            by_tree=np.empty(rows * trees, dtype=dtype),
            lowest=np.empty(rows * trees, dtype=dtype),
            slot=np.empty(rows * trees, dtype=np.intp),
            values=np.empty(rows * trees, dtype=np.float64),
        )


def _leaves_left_to_right(nodes: npt.NDArray[np.void]) -> tuple[npt.NDArray[np.intp], list[int]]:
    """A tree's leaves in left-to-right order, and per node the bit mask of the leaves of its left subtree."""
    is_leaf, lefts, rights = nodes["is_leaf"].tolist(), nodes["left"].tolist(), nodes["right"].tolist()
    order: list[int] = []
    under: dict[int, int] = {}  # node -> mask of the leaves below it
    left_leaves = [0] * len(nodes)
    stack: list[tuple[int, bool]] = [(0, False)]
    while stack:  # iterative post-order: a deep tree cannot hit the recursion limit
        node, expanded = stack.pop()
        if is_leaf[node]:
            under[node] = 1 << len(order)
            order.append(node)
        elif expanded:
            left, right = lefts[node], rights[node]
            left_leaves[node] = under[left]
            under[node] = under[left] | under[right]
        else:
            stack += [(node, True), (rights[node], False), (lefts[node], False)]
    return np.asarray(order, dtype=np.intp), left_leaves
