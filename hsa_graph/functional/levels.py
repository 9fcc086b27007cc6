r"""Per-level, head-major views of node tensors, in level order.

Every per-level tensor is head-major: values ``(H, n, C)``, scalars
``(H, n)``. A level's families then read as ``(H * F, B, C)`` views, so the
sibling softmax is two ``bmm`` calls with no transposing copies.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..layout import FamilyBucket, TreeLayout
from .passes import children_sum

Levels = List[Tensor]


def _to_levels(t: Tensor, layout: TreeLayout, dtype: torch.dtype) -> Levels:
    r"""``[N, H, C]`` -> per level ``[H, n, C]`` contiguous, in level order
    (one gather per level)."""
    head_major = t.to(dtype).transpose(0, 1)
    if layout.identity_order:
        return [piece.contiguous() for piece in
                torch.split(head_major, _level_sizes(layout), dim=1)]
    return [head_major.index_select(1, level.node_ids)
            for level in layout.levels]


def _level_sizes(layout: TreeLayout) -> List[int]:
    return [level.node_ids.size(0) for level in layout.levels]


def _from_levels(pieces: Levels, layout: TreeLayout) -> Tensor:
    r"""Per level ``[H, n, *]`` -> ``[N, H, *]`` in node order."""
    # One pass: cat writes the transposed views straight into node-major rows.
    out = torch.cat([piece.transpose(0, 1) for piece in pieces], dim=0)
    return out if layout.identity_order else out.index_select(0, layout.rank)


def _node_vector(values: Tensor, like: Tensor) -> Tensor:
    r"""A per-node ``[n]`` vector shaped to broadcast against ``like``."""
    shape = [1] * like.dim()
    shape[1] = -1
    return values.to(like.dtype).view(shape)


def _leaf_means_levels(values: Levels, layout: TreeLayout,
                       bottom_totals: Optional[Tensor] = None) -> Levels:
    r"""Step 1: mean of the leaf rows of :obj:`values` below every node.
    :obj:`bottom_totals`, when given, are the children totals of the
    next-to-last level, already summed by the fused leaf-level softmax."""
    sums: Levels = [None] * layout.num_levels
    means: Levels = [None] * layout.num_levels
    for depth in range(layout.num_levels - 1, -1, -1):
        level = layout.levels[depth]
        if level.leaf_kind == 'all':      # leaves: the mean is the row itself
            sums[depth] = means[depth] = values[depth]
            continue
        if bottom_totals is not None and depth == layout.num_levels - 2:
            total = bottom_totals
        else:
            total = children_sum(sums[depth + 1], layout, depth, dim=1)
        if level.leaf_kind == 'mixed':
            total = total + values[depth] * _node_vector(level.is_leaf, total)
        sums[depth] = total
        means[depth] = total / _node_vector(level.leaf_count, total)
    return means


def _level_positions(pos: Optional[Tensor], layout: TreeLayout,
                     dtype: torch.dtype) -> Optional[Levels]:
    if pos is None:
        return None
    if pos.dim() == 2:
        pos = pos.unsqueeze(1)                    # (N, 1, P)
    return _to_levels(pos, layout, dtype)         # per level (H|1, n, P)


def _gather_members(rows: Tensor, bucket: FamilyBucket) -> Tensor:
    r"""``[H, n, C]`` level rows -> ``[H * F, B, C]`` family blocks."""
    num_families, size = bucket.member_index.shape
    if bucket.contiguous_start is not None:
        start = bucket.contiguous_start
        block = rows[:, start:start + num_families * size]
    else:
        block = rows.index_select(1, bucket.member_index.flatten())
    return block.reshape(-1, size, rows.size(-1))
