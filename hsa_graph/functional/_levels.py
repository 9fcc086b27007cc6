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


def _read(x: Tensor, layout: TreeLayout, field: str,
          levels: List[int]) -> List[Tensor]:
    r"""The rows of ``x`` (``[N, H, *]``) at the slots of :obj:`levels`,
    each ``[H, S, *]``, in one gather: ``x`` is read as ``[N * H + 1, *]``
    rows (the last one zero, read by slots whose :obj:`field` is ``N``) in
    level, head, slot order, so that every level comes out contiguous."""
    num_nodes, heads = x.size(0), x.size(1)
    rows = x.reshape(num_nodes * heads, -1)
    rows = torch.cat([rows, rows.new_zeros(1, rows.size(1))])
    head = torch.arange(heads, device=x.device).unsqueeze(1)      # (H, 1)
    index = []
    for depth in levels:
        node = getattr(layout.levels[depth], field).unsqueeze(0)  # (1, S)
        index.append(torch.where(node < num_nodes, node * heads + head,
                                 num_nodes * heads).flatten())
    flat = rows.index_select(0, torch.cat(index))
    sizes = [layout.levels[d].node.size(0) * heads for d in levels]
    return [t.view((heads, -1) + x.shape[2:])
            for t in flat.split(sizes)]


def read_leaves(x: Tensor, layout: TreeLayout,
                dtype: torch.dtype) -> List[Tensor]:
    r"""The leaf rows of ``x`` (``[N, H, *]``) at every level's slots,
    ``[H, S, *]`` in :obj:`dtype`, zeros at inner and padding slots. Inner
    nodes' rows are never read."""
    return _read(x.to(dtype), layout, 'leaf_node',
                 list(range(layout.num_levels)))


def read_nodes(x: Tensor, layout: TreeLayout) -> List[Tensor]:
    r"""The rows of ``x`` (``[N, H, *]``) at every level's slots,
    ``[H, S, *]`` (zeros on padding)."""
    return _read(x, layout, 'node', list(range(layout.num_levels)))


def subtree_sums(rows: List[Tensor], layout: TreeLayout) -> List[Tensor]:
    r"""Bottom-up, per level ``[H, S, *]``: each slot's row of :obj:`rows`
    plus the sums of its children (:obj:`rows` must be zero where they are
    not to be counted, as :func:`read_leaves` gives them). Sums over
    children are sums over the family dimension: sorted and deterministic
    on every device."""
    sums: List[Optional[Tensor]] = [None] * layout.num_levels
    below: Optional[Tensor] = None    # [H, F_below + 1, *]: a zero row last
    for depth in range(layout.num_levels - 1, -1, -1):
        level = layout.levels[depth]
        total = rows[depth]
        if below is not None:     # every level but the deepest (all leaves)
            total = total + below.index_select(1, level.child_family)
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
    r"""Per-level ``[H, S, *]`` -> ``[N, H, *]`` in node order (one gather
    from the levels laid end to end)."""
    heads = levels[0].size(0)
    flat = torch.cat([t.reshape(-1, *t.shape[2:]) for t in levels])
    head = torch.arange(heads, device=flat.device)
    index = (layout.node_level_start * heads + layout.node_slot).unsqueeze(1) \
        + head * layout.node_level_slots.unsqueeze(1)              # (N, H)
    return flat.index_select(0, index.flatten()).view(
        (-1, heads) + levels[0].shape[2:])
