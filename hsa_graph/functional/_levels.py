r"""Moving per-node tensors along a :class:`~hsa_graph.layout.TreeLayout`'s
levels: the three primitives every pass is made of.

Per-level tensors are ``[H, S, *]`` (a head or batch dimension first, then the
level's ``S = F * B`` slots), so a level's families are the free view
``[H, F, B, *]``.
"""
from __future__ import annotations

from typing import List, NamedTuple, Optional

import torch
from torch import Tensor

from ..layout import LevelLayout, TreeLayout


def slot_mask(mask: Tensor, like: Tensor) -> Tensor:
    r"""A per-slot ``[S]`` tensor shaped to broadcast against ``[H, S, *]``."""
    return mask.view((1, -1) + (1, ) * (like.dim() - 2))


class Rows(NamedTuple):
    r"""Where each row moves between node order (``[N * H, *]``) and the
    levels' slots laid end to end (``[H, S]`` per level), for ``H`` heads:
    indices with ``-1`` clamped to 0 and a mask of those entries (zero rows).
    Built once per call and shared by every tensor moved."""
    leaf_index: Tensor      # slot -> node row of a leaf
    leaf_unread: Tensor     # slot reads no leaf (inner node or padding)
    node_index: Tensor      # slot -> node row
    padding: Tensor         # slot holds no node
    slot_index: Tensor      # node row -> slot
    inner_rows: Tensor      # node row of an inner node (not a leaf)


def level_rows(layout: TreeLayout, heads: int) -> Rows:
    r"""The :class:`Rows` of :obj:`layout` for :obj:`heads` heads."""
    head = torch.arange(heads, device=layout.device).unsqueeze(1)  # (H, 1)
    missing_row = layout.num_nodes * heads     # what slot index N maps to
    slots = []
    for field in ('leaf_node', 'node'):
        index = torch.cat([(getattr(level, field) * heads + head).flatten()
                           for level in layout.levels])
        missing = index >= missing_row
        slots += [index.masked_fill_(missing, 0), missing]
    head = head.squeeze(1)
    slot_index = ((layout.node_level_start * heads + layout.node_slot)
                  .unsqueeze(1) + head * layout.node_level_slots.unsqueeze(1)
                  ).flatten()
    inner_rows = (~layout.is_leaf).repeat_interleave(heads)
    return Rows(*slots, slot_index, inner_rows)


class _Move(torch.autograd.Function):
    r"""``out[p] = src[index[p]]``, a zero row where ``zero[p]``, whose
    backward is the inverse move, a gather too (each row of :obj:`src` is
    read at most once; ``inverse`` says where). Autograd's gather backward
    would zero-fill a source-sized tensor and scatter-add into it (atomics
    on a GPU)."""

    @staticmethod
    def forward(ctx, src, index, zero, inverse, inverse_zero):
        ctx.save_for_backward(index, zero, inverse, inverse_zero)
        out = src.index_select(0, index)
        return out.masked_fill_(zero.view((-1, ) + (1, ) * (out.dim() - 1)),
                                0)

    @staticmethod
    def backward(ctx, grad):
        index, zero, inverse, inverse_zero = ctx.saved_tensors
        return (_Move.apply(grad, inverse, inverse_zero, index, zero),
                None, None, None, None)


def _read(x: Tensor, layout: TreeLayout, rows: Rows,
          leaves_only: bool) -> List[Tensor]:
    r"""The rows of ``x`` (``[N, H, *]``) at every level's slots, each
    ``[H, S, *]``, in one move: every level comes out contiguous."""
    heads = x.size(1)
    move = (rows.leaf_index, rows.leaf_unread, rows.slot_index,
            rows.inner_rows) if leaves_only else \
        (rows.node_index, rows.padding, rows.slot_index,
         torch.zeros_like(rows.inner_rows))
    flat = _Move.apply(x.reshape(x.size(0) * heads, -1), *move)
    sizes = [level.node.size(0) * heads for level in layout.levels]
    return [t.view((heads, -1) + x.shape[2:]) for t in flat.split(sizes)]


def read_leaves(x: Tensor, layout: TreeLayout, dtype: torch.dtype,
                rows: Optional[Rows] = None) -> List[Tensor]:
    r"""The leaf rows of ``x`` (``[N, H, *]``) at every level's slots,
    ``[H, S, *]`` in :obj:`dtype`, zeros at inner and padding slots. Inner
    nodes' rows are never read."""
    rows = rows or level_rows(layout, x.size(1))
    return _read(x.to(dtype), layout, rows, leaves_only=True)


def read_nodes(x: Tensor, layout: TreeLayout,
               rows: Optional[Rows] = None) -> List[Tensor]:
    r"""The rows of ``x`` (``[N, H, *]``) at every level's slots,
    ``[H, S, *]`` (zeros on padding)."""
    rows = rows or level_rows(layout, x.size(1))
    return _read(x, layout, rows, leaves_only=False)


def subtree_sums(rows: List[Tensor], layout: TreeLayout) -> List[Tensor]:
    r"""Bottom-up, per level ``[H, S, *]``: each slot's row of :obj:`rows`
    (zero where it is not to be counted, as :func:`read_leaves` gives them)
    plus the sums of its children. A family's sum is a sum over the family
    dimension (sorted, deterministic on every device), added into its
    parent's slot."""
    sums: List[Optional[Tensor]] = [None] * layout.num_levels
    families: Optional[Tensor] = None       # (H, F_below, *) family sums
    for depth in range(layout.num_levels - 1, -1, -1):
        level = layout.levels[depth]
        total = rows[depth]
        if families is not None:            # every level but the deepest
            total = total.index_add(1, layout.levels[depth + 1].parent_slot,
                                    families)
        # Summed as (H, F, B, *): the sum's backward (an expand) then adds to
        # the level's other gradients directly; through a [H, S, *] view
        # autograd would first copy it.
        blocks = total.unflatten(1, (level.num_families, level.family_size))
        sums[depth] = blocks.flatten(1, 2)
        families = blocks.sum(2)
    return sums


def add_family_sums(parents: Tensor, children: Tensor,
                    level: LevelLayout) -> Tensor:
    r"""``parents`` (``[H, S_above, *]``) plus, in each family's parent slot,
    the sum of the family's rows of ``children`` (``[H, S, *]``, the level
    below)."""
    sums = children.unflatten(1, (level.num_families,
                                  level.family_size)).sum(2)
    return parents.index_add(1, level.parent_slot, sums)


def from_parents(t: Tensor, level: LevelLayout) -> Tensor:
    r"""The parents' rows of ``t`` (``[H, S_above, *]``) for every family of
    :obj:`level`, as ``[H, F, 1, *]``: they broadcast over the members."""
    return t.index_select(1, level.parent_slot).unsqueeze(2)


def to_nodes(levels: List[Tensor], layout: TreeLayout,
             rows: Optional[Rows] = None) -> Tensor:
    r"""Per-level ``[H, S, *]`` -> ``[N, H, *]`` in node order (one move
    from the levels laid end to end)."""
    heads = levels[0].size(0)
    rows = rows or level_rows(layout, heads)
    flat = torch.cat([t.reshape(-1, *t.shape[2:]) for t in levels])
    out = _Move.apply(flat, rows.slot_index,
                      torch.zeros_like(rows.inner_rows), rows.node_index,
                      rows.padding)
    return out.view((-1, heads) + levels[0].shape[2:])
