r"""Moving per-node tensors along a :class:`~hsa_graph.layout.TreeLayout`'s
levels: the primitives every pass is made of.

Per-level tensors are ``[H, S, *]`` (a head or batch dimension first, then the
level's ``S = F * B`` slots), so a level's families are the view
``[H, F, B, *]``. Node order and the levels' slots are exchanged with one
gather each way, through indices the layout stores.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from torch import Tensor

from ..layout import LevelLayout, TreeLayout


def read_levels(x: Tensor, layout: TreeLayout,
                leaves_only: bool = True) -> List[Tensor]:
    r"""The rows of :obj:`x` (``[N, H, *]``) at every level's slots, each
    ``[H, S, *]``: leaf rows and zeros elsewhere (inner nodes' rows are never
    read), or with :obj:`leaves_only` :obj:`False` every node's row (zeros on
    padding). One gather for all levels; the levels are views of it."""
    padded = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 1) + (0, 1))
    index = layout.slot_leaf if leaves_only else layout.slot_node
    rows = padded.index_select(0, index).transpose(0, 1)      # (H, S_all, *)
    sizes = [level.node.size(0) for level in layout.levels]
    return list(rows.split(sizes, 1))


def to_nodes(levels: List[Tensor], layout: TreeLayout) -> Tensor:
    r"""Per-level ``[H, S, *]`` -> ``[N, H, *]`` in node order (one gather
    from the levels laid end to end; the result is a transposed view)."""
    return torch.cat(levels, 1).index_select(1, layout.node_slot) \
        .transpose(0, 1)


def family_sums(t: Tensor, level: LevelLayout,
                weight: Optional[Tensor] = None) -> Tensor:
    r"""``[H, S, *]`` -> ``[H, F, *]``: each family's sum over its members,
    optionally weighted by a per-slot ``[S]`` :obj:`weight` (a sum over the
    family dimension: sorted, deterministic, no atomics)."""
    blocks = t.unflatten(1, (level.num_families, level.family_size))
    if weight is not None:      # weighted as blocks: see subtree_sums
        blocks = blocks * weight.to(t.dtype).view(
            (1, ) + blocks.shape[1:3] + (1, ) * (t.dim() - 2))
    return blocks.sum(2)


def add_family_sums(parents: Tensor, children: Tensor, level: LevelLayout,
                    weight: Optional[Tensor] = None) -> Tensor:
    r"""``parents`` (``[H, S_above, *]``) plus, in each family's parent slot,
    the (weighted) sum of the family's rows of ``children`` (``[H, S, *]``,
    the level below). A parent has one family: no slot is added to twice."""
    return parents.index_add(1, level.parent_slot,
                             family_sums(children, level, weight))


def subtree_sums(rows: List[Optional[Tensor]],
                 layout: TreeLayout) -> List[Tensor]:
    r"""Bottom-up, per level ``[H, S, *]``: each slot's row of :obj:`rows`
    (zero where it is not to be counted, as :func:`read_levels` gives them;
    :obj:`None` for a level of zeros) plus the sums of its children."""
    sums: List[Optional[Tensor]] = [None] * layout.num_levels
    families: Optional[Tensor] = None       # (H, F_below, *) family sums
    for depth in range(layout.num_levels - 1, -1, -1):
        level = layout.levels[depth]
        total = rows[depth]
        if families is not None:            # every level but the deepest
            if total is None:
                total = families.new_zeros((families.size(0),
                                            level.node.size(0)) +
                                           families.shape[2:])
            total = total.index_add(1, layout.levels[depth + 1].parent_slot,
                                    families)
        # Summed as (H, F, B, *): the sum's backward (an expand) then adds to
        # the level's other gradients directly; through a [H, S, *] view
        # autograd would first copy it.
        blocks = total.unflatten(1, (level.num_families, level.family_size))
        sums[depth] = blocks.flatten(1, 2)
        families = blocks.sum(2)
    return sums


def from_parents(t: Tensor, level: LevelLayout) -> Tensor:
    r"""The parents' rows of ``t`` (``[H, S_above, *]``) for every family of
    :obj:`level`, as ``[H, F, 1, *]``: they broadcast over the members."""
    return t.index_select(1, level.parent_slot).unsqueeze(2)


def per_slot(t: Tensor, like: Tensor) -> Tensor:
    r"""A per-slot ``[S]`` layout tensor shaped to broadcast against
    ``[H, S, *]`` and cast to :obj:`like`'s dtype (free when the layout is
    stored in it)."""
    return t.to(like.dtype).view((1, -1) + (1, ) * (like.dim() - 2))
