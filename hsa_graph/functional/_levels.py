r"""Moving per-node tensors along a :class:`~hsa_graph.layout.TreeLayout`'s
levels: the three primitives every pass is made of.

Per-level tensors are ``[H, S, *]`` (a head or batch dimension first, then the
level's ``S = F * B`` slots), so a level's families are the free view
``[H, F, B, *]``.
"""
from __future__ import annotations

from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layout import LevelLayout, TreeLayout


def slot_mask(mask: Tensor, like: Tensor) -> Tensor:
    r"""A per-slot ``[S]`` tensor shaped to broadcast against ``[H, S, *]``."""
    return mask.view((1, -1) + (1, ) * (like.dim() - 2))


def read_leaves(x: Tensor, layout: TreeLayout,
                dtype: torch.dtype) -> List[Optional[Tensor]]:
    r"""The rows of ``x`` (``[H, N, *]``) at every level's slots, in
    :obj:`dtype`; ``None`` for levels without leaves, whose rows are never
    read. Rows of inner nodes and padding are read but never used."""
    return [x.index_select(1, level.node).to(dtype) if level.has_leaves
            else None for level in layout.levels]


def subtree_sums(rows: List[Optional[Tensor]], layout: TreeLayout,
                 inner_too: bool = False) -> List[Tensor]:
    r"""Bottom-up, per level ``[H, S, *]``: the sum of :obj:`rows` over the
    leaves below each slot (a leaf's own row; 0 on padding). With
    :obj:`inner_too`, inner nodes' own rows are added too (every level must
    then have rows). Sums over children are sums over the family dimension:
    sorted and deterministic on every device."""
    sums: List[Optional[Tensor]] = [None] * layout.num_levels
    below: Optional[Tensor] = None    # [H, F_below + 1, *]: a zero row last
    for depth in range(layout.num_levels - 1, -1, -1):
        level = layout.levels[depth]
        own = rows[depth]
        children = (below.index_select(1, level.child_family)
                    if level.has_inner else None)
        if inner_too:
            total = own if children is None else own + children
            total = torch.where(slot_mask(level.real, total), total, 0)
        elif children is None:
            total = torch.where(slot_mask(level.leaf, own), own, 0)
        elif own is None:
            total = children
        else:
            total = torch.where(slot_mask(level.leaf, own), own, children)
        sums[depth] = total
        if depth > 0:
            below = family_sum(total, level)
    return sums


def family_sum(t: Tensor, level: LevelLayout) -> Tensor:
    r"""``[H, S, *]`` -> ``[H, F + 1, *]``: each family's sum over its
    members, and a zero row last (the "no children" family)."""
    sums = t.unflatten(1, (level.num_families, level.family_size)).sum(2)
    return F.pad(sums, (0, 0) * (t.dim() - 2) + (0, 1))


def from_parents(t: Tensor, level: LevelLayout) -> Tensor:
    r"""The parents' rows of ``t`` (``[H, S_above, *]``) for every family of
    :obj:`level`, as ``[H, F, 1, *]``: they broadcast over the members."""
    return t.index_select(1, level.parent_slot).unsqueeze(2)


def to_nodes(levels: List[Tensor], layout: TreeLayout) -> Tensor:
    r"""Per-level ``[H, S, *]`` -> ``[N, H, *]`` in node order."""
    return torch.cat(levels, 1).index_select(1, layout.node_slot) \
        .transpose(0, 1)
