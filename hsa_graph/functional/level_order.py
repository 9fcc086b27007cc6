r"""Moving node tensors between node order ``[N, H, C]`` and level order
(per level, head-major ``[H, n, C]``), each way one autograd node whose
backward is the inverse move.

A level is read as a few slices when its nodes are runs of consecutive ids
(how a PyG batch of trees stored level by level looks), otherwise by one
index gather; a tree whose node order is the level order is the one-run
case. On an aligned layout (:attr:`~hsa_graph.layout.TreeLayout.aligned`)
the stand-in nodes (ids from ``virtual_from`` on) have no row in node order:
they are zero rows in level order, and are dropped on the way back.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ..allocator import new_buffer
from ..layout import TreeLayout

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
    node order; ``runs``: per level, ``(node start, length)`` in level
    order), or one index tensor per level (``ids``). Read off the layout,
    which computed them once."""
    sizes: List[int]
    segments: Optional[List[Tuple[int, int, int]]]
    runs: Optional[List[List[Tuple[int, int]]]]
    ids: Optional[List[Tensor]]
    # Stand-in rows: node ids from virtual_from on; per level, their level
    # positions where a level has any. An index move reads them from a
    # real row and zeroes them, and writes them to a spare row past the
    # end. (segments hold real rows only: the layout drops stand-in runs)
    virtual_from: Optional[int] = None
    stand_in_rows: Optional[List[Optional[Tensor]]] = None


def _level_index(layout: TreeLayout) -> _LevelIndex:
    # Sizes read off tensors, so that torch.compile(dynamic=True) keeps them
    # symbolic across trees.
    sizes = [level.node_ids.size(0) for level in layout.levels]
    virtual = {}
    if layout.virtual_from is not None:
        virtual = dict(
            virtual_from=layout.virtual_from,
            stand_in_rows=[level.stand_in_rows for level in layout.levels])
    if layout.identity_order:       # every level is one run, in order
        starts = [0]
        for size in sizes[:-1]:
            starts.append(starts[-1] + size)
        return _LevelIndex(
            sizes, [(depth, 0, size) for depth, size in enumerate(sizes)],
            [[(start, size)] for start, size in zip(starts, sizes)], None)
    if layout.node_segments is not None and \
            not torch.compiler.is_compiling():
        # Python ints would specialise a compiled graph on each batch.
        return _LevelIndex(sizes, layout.node_segments, layout.level_runs,
                           None, **virtual)
    return _LevelIndex(sizes, None, None,
                       [level.node_ids for level in layout.levels], **virtual)


def _stand_ins_read_as(level_ids: Tensor, stand_in: Optional[Tensor],
                       row: int) -> Tensor:
    r"""A level's node ids with its stand-ins' (at positions
    :obj:`stand_in`) replaced by :obj:`row`."""
    return level_ids if stand_in is None else \
        level_ids.index_fill(0, stand_in, row)


def _gather_levels(t: Tensor, plan: _LevelIndex,
                   dtype: torch.dtype) -> Levels:
    head_major = t.transpose(0, 1)      # copy_ below converts the dtype
    if plan.ids is not None:
        head_major = head_major.to(dtype)
        stand_ins = plan.stand_in_rows or [None] * len(plan.sizes)
        return [_gather_by_index(head_major, level_ids, stand_in)
                for level_ids, stand_in in zip(plan.ids, stand_ins)]
    virtual_from = plan.virtual_from
    if torch.compiler.is_compiling():
        return [torch.cat([
            head_major[:, start:start + length] if virtual_from is None or
            start < virtual_from else head_major.new_zeros(
                (head_major.size(0), length) + head_major.shape[2:])
            for start, length in runs], dim=1).to(dtype)
                for runs in plan.runs]
    pieces = []
    for size, runs in zip(plan.sizes, plan.runs):
        # slices are plain strided copies, into a (huge-paged) buffer
        piece = new_buffer(t, (t.size(1), size) + t.shape[2:], dtype)
        offset = 0
        for start, length in runs:
            if virtual_from is not None and start >= virtual_from:
                piece[:, offset:offset + length].zero_()    # stand-ins
            else:
                piece[:, offset:offset + length].copy_(
                    head_major[:, start:start + length])
            offset += length
        pieces.append(piece)
    return pieces


def _gather_by_index(head_major: Tensor, level_ids: Tensor,
                     stand_in: Optional[Tensor]) -> Tensor:
    r"""One level's rows, ``[H, n, *]``; stand-in rows (at level positions
    :obj:`stand_in`) are zeros.

    Eager on CPU the level is gathered head by head into one buffer: per
    head, the rows are a strided 2-D view that ``index_select`` reads at
    copy speed, while an index over the whole ``[H, N, *]`` view (or
    ``index_select`` on it, which on CPU first copies it whole) is 4x
    slower (``python benchmarks/probes.py moves``). Compiled (Inductor
    lowers a gather), on GPUs (one kernel, not one per head; unmeasured)
    and under double backward (differentiable) it is one index."""
    level_ids = _stand_ins_read_as(level_ids, stand_in, 0)
    if torch.compiler.is_compiling() or head_major.device.type != 'cpu' or \
            (torch.is_grad_enabled() and head_major.requires_grad):
        piece = head_major.index_select(1, level_ids) if \
            torch.compiler.is_compiling() else head_major[:, level_ids]
        return piece if stand_in is None else piece.index_fill(1, stand_in, 0)
    piece = new_buffer(head_major, (head_major.size(0), level_ids.numel()) +
                       head_major.shape[2:])
    for head in range(head_major.size(0)):
        torch.index_select(head_major[head], 0, level_ids, out=piece[head])
    if stand_in is not None:
        piece.index_fill_(1, stand_in, 0)
    return piece


def _scatter_levels(pieces: List[Optional[Tensor]], plan: _LevelIndex,
                    dtype: Optional[torch.dtype] = None) -> Tensor:
    r"""Per level ``[H, n, *]`` pieces -> ``[N, H, *]`` rows (in
    :obj:`dtype` if given); a ``None`` piece stands for zeros."""
    like = next(piece for piece in pieces if piece is not None)
    dtype = like.dtype if dtype is None else dtype
    rows = [None if piece is None else piece.transpose(0, 1)
            for piece in pieces]
    # stand-in rows (ids from virtual_from on) have no node row
    num_rows = sum(plan.sizes) if plan.virtual_from is None else \
        plan.virtual_from
    shape = (num_rows, like.size(0)) + like.shape[2:]
    if plan.ids is not None or torch.compiler.is_compiling():
        rows = [None if row is None else row.to(dtype) for row in rows]
    if plan.ids is None and torch.compiler.is_compiling():
        return torch.cat([
            like.new_zeros((length, ) + shape[1:], dtype=dtype)
            if rows[depth] is None else rows[depth][offset:offset + length]
            for depth, offset, length in plan.segments], dim=0)
    if plan.ids is not None:
        return _scatter_by_index(rows, plan, shape, dtype)
    out = new_buffer(like, shape, dtype)    # every row is written below
    start = 0                 # runs: every row written once, in order
    for depth, offset, length in plan.segments:
        row = rows[depth]
        if row is None:
            out[start:start + length].zero_()
        else:
            out[start:start + length].copy_(row[offset:offset + length])
        start += length
    return out


def _scatter_by_index(rows: List[Optional[Tensor]], plan: _LevelIndex,
                      shape: Tuple[int, ...], dtype: torch.dtype) -> Tensor:
    r"""Level rows (``[n, H, *]`` transposed views, already in
    :obj:`dtype`) into node order; stand-in rows go to one spare row past
    the end, which the result leaves out. Eager on CPU head by head (see
    :func:`_gather_by_index`); otherwise each level's transposed view goes
    straight into its rows."""
    spare = plan.virtual_from is not None
    like = next(row for row in rows if row is not None)
    out = new_buffer(like, (shape[0] + spare, ) + shape[1:], dtype)
    by_head = not torch.compiler.is_compiling() and \
        like.device.type == 'cpu'
    stand_ins = plan.stand_in_rows or [None] * len(plan.sizes)
    for row, level_ids, stand_in in zip(rows, plan.ids, stand_ins):
        level_ids = _stand_ins_read_as(level_ids, stand_in, shape[0])
        if row is None:
            out.index_fill_(0, level_ids, 0)
        elif by_head:
            for head in range(row.size(1)):
                out[:, head].index_copy_(0, level_ids, row[:, head])
        else:
            out.index_copy_(0, level_ids, row)
    return out[:shape[0]] if spare else out


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
