r"""Per-level, head-major views of node tensors, in level order.

Every per-level tensor is head-major: values ``(H, n, C)``, scalars
``(H, n)``. A level's families then read as ``(H * F, B, C)`` views, so the
sibling softmax is two ``bmm`` calls with no transposing copies.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ..layout import FamilyBucket, TreeLayout
from .passes import children_sum

Levels = List[Tensor]


def _to_levels(t: Tensor, layout: TreeLayout, dtype: torch.dtype) -> Levels:
    r"""``[N, H, C]`` -> per level ``[H, n, C]`` contiguous, in level order
    (one gather per level)."""
    plan = _level_index(layout)
    if torch.compiler.is_compiling():
        # Inductor plans the buffers of the plain ops itself.
        return _gather_levels(t, plan, dtype)
    return list(_ToLevels.apply(t, dtype, plan))


def _from_levels(pieces: Levels, layout: TreeLayout) -> Tensor:
    r"""Per level ``[H, n, *]`` -> ``[N, H, *]`` in node order."""
    plan = _level_index(layout)
    if torch.compiler.is_compiling():
        return _scatter_levels(pieces, plan)
    return _FromLevels.apply(plan, *pieces)


class _LevelIndex(NamedTuple):
    r"""Where each level's rows sit in node order: either runs of
    consecutive rows (``segments``: ``(level, offset in level, length)`` in
    node order), or one index tensor per level (``ids``)."""
    sizes: List[int]
    segments: Optional[List[Tuple[int, int, int]]]
    ids: Optional[List[Tensor]]


def _level_index(layout: TreeLayout) -> _LevelIndex:
    sizes = [level.node_ids.size(0) for level in layout.levels]
    if layout.identity_order:       # every level is one run, in order
        return _LevelIndex(sizes, [(depth, 0, size) for depth, size
                                   in enumerate(sizes)], None)
    if layout.node_segments is not None and \
            not torch.compiler.is_compiling():
        # Python ints would specialise a compiled graph on each batch.
        return _LevelIndex(sizes, [segment[1:] for segment in
                                   layout.node_segments], None)
    return _LevelIndex(sizes, None, [level.node_ids for level in
                                     layout.levels])


def _level_runs(plan: _LevelIndex) -> List[List[Tuple[int, int]]]:
    r"""Per level, its ``(node start, length)`` runs in level order."""
    runs: List[List[Tuple[int, int, int]]] = [[] for _ in plan.sizes]
    start = 0
    for depth, offset, length in plan.segments:
        runs[depth].append((offset, start, length))
        start += length
    return [[(node, length) for _, node, length in sorted(level)]
            for level in runs]


def _gather_levels(t: Tensor, plan: _LevelIndex,
                   dtype: torch.dtype) -> Levels:
    head_major = t.to(dtype).transpose(0, 1)
    if plan.ids is not None:
        if torch.compiler.is_compiling():   # Inductor lowers it to a gather
            return [head_major.index_select(1, level_ids)
                    for level_ids in plan.ids]
        # Indexing, not index_select: eager index_select on CPU copies a
        # strided input whole before gathering, i.e. all N rows per level.
        return [head_major[:, level_ids] for level_ids in plan.ids]
    pieces = []
    for runs in _level_runs(plan):      # slices are plain strided copies
        parts = [head_major[:, start:start + length]
                 for start, length in runs]
        pieces.append(parts[0].contiguous() if len(parts) == 1 else
                      torch.cat(parts, dim=1))
    return pieces


def _scatter_levels(pieces: List[Optional[Tensor]], plan: _LevelIndex,
                    dtype: Optional[torch.dtype] = None) -> Tensor:
    r"""Per level ``[H, n, *]`` pieces -> ``[N, H, *]`` rows (in
    :obj:`dtype` if given); a ``None`` piece stands for zeros."""
    like = next(piece for piece in pieces if piece is not None)
    dtype = like.dtype if dtype is None else dtype
    rows = [None if piece is None else piece.transpose(0, 1).to(dtype)
            for piece in pieces]
    if plan.ids is None:      # runs: one cat writes every row, in order
        parts = []
        for depth, offset, length in plan.segments:
            row = rows[depth]
            parts.append(like.new_zeros((length, ) + like.shape[:1] +
                                        like.shape[2:], dtype=dtype)
                         if row is None else row[offset:offset + length])
        return torch.cat(parts, dim=0)
    # One write per row: each level's transposed view goes straight into
    # its node-major rows, with no concatenated copy in between.
    shape = (sum(plan.sizes), like.size(0)) + like.shape[2:]
    out = like.new_empty(shape, dtype=dtype)   # every row is written below
    for row, level_ids in zip(rows, plan.ids):
        if row is None:
            out.index_fill_(0, level_ids, 0)
        else:
            out.index_copy_(0, level_ids, row)
    return out


class _ToLevels(torch.autograd.Function):
    r"""The gather into levels as one autograd node whose backward is the
    inverse permutation, written once. Plain ``index_select`` would
    zero-fill and scatter-add a fresh ``[N, H, C]`` gradient per level: the
    largest allocations of a step (on CPU each one above glibc's 32 MB mmap
    threshold is page-faulted afresh)."""
    @staticmethod
    def forward(ctx, t: Tensor, dtype: torch.dtype, plan: _LevelIndex):
        ctx.plan, ctx.in_dtype = plan, t.dtype
        ctx.set_materialize_grads(False)   # an unused level stays None
        return tuple(_gather_levels(t, plan, dtype))

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]):
        grad = None
        if any(g is not None for g in grads):
            grad = _scatter_levels(list(grads), ctx.plan, ctx.in_dtype)
        return grad, None, None


class _FromLevels(torch.autograd.Function):
    r"""The scatter back to node order; its backward is one gather per
    level (plain autograd would add a cat and an index_add pass)."""
    @staticmethod
    def forward(ctx, plan: _LevelIndex, *pieces: Tensor):
        ctx.plan, ctx.dtype = plan, pieces[0].dtype
        return _scatter_levels(list(pieces), plan)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return (None, *_gather_levels(grad, ctx.plan, ctx.dtype))


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


def _gather_level_members(rows: Optional[Tensor],
                          buckets: List[FamilyBucket]
                          ) -> List[Optional[Tensor]]:
    r""":func:`_gather_members` for every bucket of a level. With several
    gathered buckets, eager mode gathers them in one autograd node whose
    backward writes one ``[H, n, C]`` gradient: per-bucket ``index_select``
    would zero-fill a level-sized gradient per bucket and then add them."""
    if rows is None:
        return [None] * len(buckets)
    gathered = [bucket.contiguous_start is None for bucket in buckets]
    if sum(gathered) < 2 or torch.compiler.is_compiling() or \
            not rows.requires_grad:
        return [_gather_members(rows, bucket) for bucket in buckets]
    indices = [bucket.member_index for bucket, g in zip(buckets, gathered)
               if g]
    blocks = iter(_GatherMembers.apply(rows, *indices))
    return [next(blocks) if g else _gather_members(rows, bucket)
            for bucket, g in zip(buckets, gathered)]


class _GatherMembers(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rows: Tensor, *indices: Tensor):
        ctx.save_for_backward(*indices)
        ctx.rows_shape = rows.shape
        ctx.set_materialize_grads(False)
        return tuple(rows.index_select(1, index.flatten()).reshape(
            -1, index.size(1), rows.size(-1)) for index in indices)

    @staticmethod
    def backward(ctx, *grads: Optional[Tensor]):
        indices = ctx.saved_tensors
        heads, _, channels = ctx.rows_shape
        first = next(g for g in grads if g is not None)
        grad = first.new_zeros(ctx.rows_shape)
        for index, g in zip(indices, grads):
            if g is not None:   # padding repeats a member: add, not copy
                grad.index_add_(1, index.flatten(),
                                g.reshape(heads, -1, channels))
        return (grad, ) + (None, ) * len(indices)
