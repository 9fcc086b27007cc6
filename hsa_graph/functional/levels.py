r"""Per-level, head-major tensors: leaf means (step 1) and family blocks.

Every per-level tensor is head-major: values ``(H, n, C)``, scalars
``(H, n)`` (``level_order.py`` moves node tensors into that form). A level's
families then read as ``(H * F, B, C)`` views, so the sibling softmax is two
``bmm`` calls with no transposing copies.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..allocator import new_buffer
from ..layout import FamilyBucket, TreeLayout
from .level_order import Levels, _to_levels
from .passes import children_sum


def _node_vector(values: Tensor, like: Tensor) -> Tensor:
    r"""A per-node ``[n]`` vector shaped to broadcast against ``like``."""
    shape = [1] * like.dim()
    shape[1] = -1
    return values.to(like.dtype).view(shape)


class _Fork(torch.autograd.Function):
    r"""Two aliases of one level tensor for its two consumers (the family
    gather and the parents' sums), whose gradients are added in place into
    the first: autograd would add them into a fresh level-sized tensor.
    Only used where both consumers return fresh, contiguous gradients."""
    @staticmethod
    def forward(ctx, t: Tensor):
        ctx.set_materialize_grads(False)
        return t.detach(), t.detach()

    @staticmethod
    def backward(ctx, first: Optional[Tensor], second: Optional[Tensor]):
        if first is None or second is None:
            return second if first is None else first
        if torch.is_grad_enabled() or not first.is_contiguous() or \
                first._base is not None:
            return first + second
        return first.add_(second)


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
            summed_above = depth > 0 and not (
                bottom_totals is not None and depth == layout.num_levels - 1)
            sums[depth] = means[depth] = values[depth]
            if summed_above and values[depth].requires_grad and \
                    not torch.compiler.is_compiling():
                means[depth], sums[depth] = _Fork.apply(values[depth])
            continue
        if bottom_totals is not None and depth == layout.num_levels - 2:
            total = bottom_totals
        else:
            total = children_sum(sums[depth + 1], layout, depth, dim=1)
        if level.leaf_kind == 'mixed':
            total = torch.addcmul(total, values[depth],
                                  _node_vector(level.is_leaf, total))
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


def _gather_level_members(rows: Optional[Tensor],
                          buckets: List[FamilyBucket]
                          ) -> List[Optional[Tensor]]:
    r""":func:`_gather_members` for every bucket of a level. With several
    gathered buckets, eager mode gathers them in one autograd node whose
    backward writes one ``[H, n, C]`` gradient: per-bucket ``index_select``
    would zero-fill a level-sized gradient per bucket and then add them."""
    if rows is None:
        return [None] * len(buckets)
    blocks: List[Optional[Tensor]] = [None] * len(buckets)
    if rows.requires_grad and not torch.compiler.is_compiling():
        # several contiguous buckets: one split; several gathered: one node
        for contiguous, read in ((True, _split_members),
                                 (False, _gather_all_members)):
            chosen = [i for i, bucket in enumerate(buckets)
                      if (bucket.contiguous_start is not None) == contiguous]
            if len(chosen) > 1:
                for i, block in zip(chosen, read(
                        rows, [buckets[i] for i in chosen])):
                    blocks[i] = block
    return [_gather_members(rows, bucket) if block is None else block
            for block, bucket in zip(blocks, buckets)]


def _gather_all_members(rows: Tensor, buckets: List[FamilyBucket]
                        ) -> List[Tensor]:
    return list(_GatherMembers.apply(
        rows, *[bucket.member_index for bucket in buckets]))


def _split_members(rows: Tensor, buckets: List[FamilyBucket]
                   ) -> List[Tensor]:
    r"""Family blocks of several contiguous buckets as one ``split`` of the
    level (one autograd node, whose backward concatenates the blocks'
    gradients): a slice per bucket would zero-fill and add a level-sized
    gradient per bucket in backward."""
    spans = sorted((bucket.contiguous_start, bucket.num_families *
                    bucket.size, i) for i, bucket in enumerate(buckets))
    sizes, order, end = [], [], 0
    for start, length, i in spans:
        if start > end:
            sizes.append(start - end)
            order.append(None)
        sizes.append(length)
        order.append(i)
        end = start + length
    if end < rows.size(1):
        sizes.append(rows.size(1) - end)
        order.append(None)
    pieces = rows.split(sizes, dim=1)
    blocks: List[Optional[Tensor]] = [None] * len(buckets)
    for piece, i in zip(pieces, order):
        if i is not None:
            blocks[i] = piece.reshape(-1, buckets[i].size, rows.size(-1))
    return blocks


class _GatherMembers(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: Tensor, *indices: Tensor):
        ctx.save_for_backward(*indices)
        ctx.rows_shape = rows.shape
        ctx.set_materialize_grads(False)
        def gather(index: Tensor) -> Tensor:
            out = new_buffer(rows, (rows.size(0), index.numel(),
                                    rows.size(-1)))
            return torch.index_select(rows, 1, index.flatten(), out=out)
        return tuple(gather(index).view(-1, index.size(1), rows.size(-1))
                     for index in indices)

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]):
        indices = ctx.saved_tensors
        heads, _, channels = ctx.rows_shape
        first = next(g for g in grads if g is not None)
        grad = new_buffer(first, ctx.rows_shape).zero_()
        for index, g in zip(indices, grads):
            if g is not None:   # padding repeats a member: add, not copy
                grad.index_add_(1, index.flatten(),
                                g.reshape(heads, -1, channels))
        return (grad, ) + (None, ) * len(indices)
