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
    r"""Where each row moves between node order (``[N * H, *]`` rows, plus a
    zero row ``N * H``) and the levels' slots laid end to end (``[H, S]`` per
    level, head-major), for ``H`` heads. Built once per call and shared by
    every tensor moved."""
    leaf_index: Tensor      # slot -> node row of a leaf, else the zero row
    node_index: Tensor      # slot -> node row, or the zero row (padding)
    slot_index: Tensor      # node row -> slot


def level_rows(layout: TreeLayout, heads: int) -> Rows:
    r"""The :class:`Rows` of :obj:`layout` for :obj:`heads` heads."""
    head = torch.arange(heads, device=layout.device)
    zero_row = layout.num_nodes * heads
    slots = []
    for field in ('leaf_node', 'node'):       # node id N: no node to read
        index = torch.cat([(getattr(level, field) * heads +
                            head.unsqueeze(1)).flatten()
                           for level in layout.levels])
        slots.append(index.clamp_(max=zero_row))
    slot_index = ((layout.node_level_start * heads + layout.node_slot)
                  .unsqueeze(1) + head * layout.node_level_slots.unsqueeze(1)
                  ).flatten()
    return Rows(*slots, slot_index)


def _read(x: Tensor, layout: TreeLayout, index: Tensor) -> List[Tensor]:
    r"""The rows of ``x`` (``[N, H, *]``) at every level's slots, each
    ``[H, S, *]``, in one gather: every level comes out contiguous."""
    heads = x.size(1)
    rows = x.reshape(x.size(0) * heads, -1)
    rows = torch.cat([rows, rows.new_zeros(1, rows.size(1))])
    flat = rows.index_select(0, index)
    sizes = [level.node.size(0) * heads for level in layout.levels]
    return [t.view((heads, -1) + x.shape[2:]) for t in flat.split(sizes)]


def read_leaves(x: Tensor, layout: TreeLayout, dtype: torch.dtype,
                rows: Optional[Rows] = None) -> List[Tensor]:
    r"""The leaf rows of ``x`` (``[N, H, *]``) at every level's slots,
    ``[H, S, *]`` in :obj:`dtype`, zeros at inner and padding slots. Inner
    nodes' rows are never read."""
    rows = rows or level_rows(layout, x.size(1))
    return _read(x.to(dtype), layout, rows.leaf_index)


def read_nodes(x: Tensor, layout: TreeLayout,
               rows: Optional[Rows] = None) -> List[Tensor]:
    r"""The rows of ``x`` (``[N, H, *]``) at every level's slots,
    ``[H, S, *]`` (zeros on padding)."""
    rows = rows or level_rows(layout, x.size(1))
    return _read(x, layout, rows.node_index)


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
    r"""Per-level ``[H, S, *]`` -> ``[N, H, *]`` in node order (one gather
    from the levels laid end to end)."""
    heads = levels[0].size(0)
    rows = rows or level_rows(layout, heads)
    flat = torch.cat([t.reshape(-1, *t.shape[2:]) for t in levels])
    return flat.index_select(0, rows.slot_index).view(
        (-1, heads) + levels[0].shape[2:])
