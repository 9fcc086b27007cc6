r"""Moving per-node tensors along a :class:`~hsa_graph.layout.TreeLayout`'s
levels: the primitives every pass is made of.

Per-level tensors are head-major ``[H, S, *]`` (a head or batch dimension
first, then the level's ``S`` slots), so that a family block is ``[H * F,
B, *]`` for ``bmm``: a free view on a padded level, a gather on a packed one
(see ``layout.py``). Node order and the levels' slots are exchanged with one
gather each way, whose row indices for ``H`` heads come from the layout's
per-slot node ids in a few small integer operations.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..layout import LevelLayout, TreeLayout


def read_levels(parts: List[Tensor], layout: TreeLayout,
                leaves_only: bool = True) -> List[Tensor]:
    r"""The rows of the :obj:`parts` (each ``[N, H, *]``, such as query, key
    and value) at every level's slots, each level ``[P * H, S, *]`` (part
    by part, head by head): leaf rows and zeros elsewhere (inner nodes' rows
    are never read), or with :obj:`leaves_only` :obj:`False` every node's
    row (zeros on padding). One gather for all levels; each level comes out
    contiguous."""
    num_nodes, heads = parts[0].shape[:2]   # (sizes of tensors: symbolic)
    # Each part followed by a zero row (node id N: nothing to read there).
    zero = parts[0].new_zeros((1, ) + parts[0].shape[1:])
    rows = torch.cat([t for part in parts for t in (part, zero)])
    # Row (p * (N + 1) + n) * H + h for part p, head h and slot s of node n.
    start = torch.add(torch.arange(heads, device=layout.device),
                      torch.arange(len(parts), device=layout.device
                                   ).unsqueeze(1),
                      alpha=(num_nodes + 1) * heads).unsqueeze(-1)
    index = torch.cat([
        torch.add(start, (level.leaf_node if leaves_only else level.node),
                  alpha=heads).flatten() for level in layout.levels])
    levels = GatherPieces.apply(rows.flatten(0, 1), 0, index, [
        level.node.size(0) * heads * len(parts) for level in layout.levels])
    return [t.view((len(parts) * heads, -1) + rows.shape[2:]) for t in levels]


class GatherPieces(torch.autograd.Function):
    r"""``GatherPieces.apply(rows, dim, index, sizes)``: ``rows.index_select(
    dim, piece)`` for each piece of :obj:`index` split into :obj:`sizes`,
    each contiguous. Its backward adds every piece's gradient into one zeroed
    tensor, where autograd would zero and add a ``rows``-sized tensor per
    piece (102 MB each on the ragged 8 x 4,096 batch's packed levels). (No
    ``*args``: dynamo cannot trace those without gradients, torch 2.13.)"""

    @staticmethod
    def forward(ctx, rows, dim, index, sizes):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(index)
        ctx.dim, ctx.sizes, ctx.shape = dim, sizes, rows.shape
        if dim == 0:               # one gather: its pieces are contiguous
            return rows.index_select(0, index).split(sizes)
        return tuple(rows.index_select(dim, piece)
                     for piece in index.split(sizes))

    @staticmethod
    @once_differentiable            # double backward raises a clear error
    def backward(ctx, *grads):
        index, = ctx.saved_tensors
        like = next((g for g in grads if g is not None), None)
        out = None if like is None else like.new_zeros(ctx.shape)
        for grad, piece in zip(grads, index.split(ctx.sizes)):
            if grad is not None:
                out.index_add_(ctx.dim, piece, grad)
        return out, None, None, None


def to_nodes(levels: List[Tensor], layout: TreeLayout) -> Tensor:
    r"""Per-level ``[H, S, *]`` -> ``[N, H, *]`` in node order (one gather
    from the levels laid end to end)."""
    heads = levels[0].size(0)
    head = torch.arange(heads, device=layout.device)
    # Node n's row for head h: the levels above, then h * S + its slot.
    slot = torch.addcmul(
        torch.add(layout.node_slot, layout.node_level_start,
                  alpha=heads).unsqueeze(1),
        head.unsqueeze(0), layout.node_level_slots.unsqueeze(1)).flatten()
    flat = torch.cat([t.flatten(0, 1) for t in levels])
    return flat.index_select(0, slot).view((-1, heads) + levels[0].shape[2:])


def families_to_nodes(levels: List[Tensor], layout: TreeLayout) -> Tensor:
    r""":func:`to_nodes` of per-level tensors in :func:`as_families` form."""
    return to_nodes([as_slots(t, level)
                     for t, level in zip(levels, layout.levels)], layout)


def as_families(t: Tensor, level: LevelLayout) -> Tensor:
    r"""``[H, S, *]`` -> ``[H, F, B, *]`` on a padded level (sums and
    broadcasts over families then run on this free view, cheaper than a
    per-slot ``index_add`` or gather); unchanged on a packed one. (``F`` and
    ``B`` given, not ``-1``: under ``torch.compile`` with dynamic shapes,
    dividing by a symbolic size made tracing 16x slower.)"""
    if not level.padded:
        return t
    if not level.blocks:                       # families of one
        return t.unsqueeze(2)
    block = level.blocks[0]
    return t.unflatten(1, (block.num_families, block.family_size))


def as_slots(t: Tensor, level: LevelLayout) -> Tensor:
    r"""The inverse of :func:`as_families`."""
    return t.flatten(1, 2) if level.padded else t


def add_to_parents(parents: Tensor, children: Tensor, level: LevelLayout
                   ) -> Tensor:
    r"""``parents`` (``[H, S_above, *]``) plus, in every parent's slot, the
    sum of its children's rows of ``children``, the :func:`as_families`
    view of the level below: one ``index_add`` (on CUDA under
    ``torch.use_deterministic_algorithms``, a sorted segment sum), after a
    sum over the family view on a padded level."""
    if level.padded:
        children = children.sum(2)
    return parents.index_add(1, level.parent, children)


def subtree_sums(rows: List[Optional[Tensor]], layout: TreeLayout,
                 top: int = 0) -> List[Optional[Tensor]]:
    r"""Bottom-up, per level in its :func:`as_families` form from the
    deepest to level :obj:`top` (:obj:`None` above it): each slot's row of
    :obj:`rows` (``[H, S, *]``, zero where it is not to be counted, as
    :func:`read_levels` gives them; :obj:`None` for a level of zeros) plus
    the sums of its children.

    Consumers take the family form itself, not a view of it: a gradient
    that reaches a tensor through a view cannot be added into in place, so
    autograd would allocate a level-sized sum for it (at 16,384 leaves,
    8 x 64, a 96 MB tensor per step)."""
    sums: List[Optional[Tensor]] = [None] * layout.num_levels
    below: Optional[Tensor] = None
    for depth in range(layout.num_levels - 1, top - 1, -1):
        level = layout.levels[depth]
        total = rows[depth]
        if below is not None:               # every level but the deepest
            child = layout.levels[depth + 1]
            if total is None:
                total = below.new_zeros((below.size(0), level.node.size(0)) +
                                        as_slots(below, child).shape[2:])
            total = add_to_parents(total, below, child)
        # The sum over children (an expand in backward) and the consumers
        # of sums[depth] both read the family view, so their gradients meet
        # there: the expand is added into the other, in place.
        below = sums[depth] = as_families(total, level)
    return sums


def from_parents(t: Tensor, level: LevelLayout) -> Tensor:
    r"""The parent's row of ``t`` (``[H, S_above, *]``) for every slot of
    :obj:`level`: ``[H, S, *]``, or on a padded level ``[H, F, 1, *]``, to
    broadcast against :func:`as_families` views."""
    rows = t.index_select(1, level.parent)
    return rows.unsqueeze(2) if level.padded else rows


def per_slot(t: Tensor, like: Tensor,
             level: Optional[LevelLayout] = None) -> Tensor:
    r"""A per-slot ``[S]`` layout tensor shaped to broadcast against
    ``[H, S, *]`` (with :obj:`level`, against that level's
    :func:`as_families` form) and cast to :obj:`like`'s dtype (free when
    the layout is stored in it)."""
    dims = like.dim() - (level is not None and level.padded)
    t = t.to(like.dtype).view((1, -1) + (1, ) * (dims - 2))
    return t if level is None else as_families(t, level)
