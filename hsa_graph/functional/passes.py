r"""Level-synchronous tree passes: leaf-to-root aggregation and root-to-leaf
accumulation over a forest.

Both run level by level on a :class:`~hsa_graph.layout.TreeLayout`'s levels
(see ``_levels.py``): children's rows are added into their parents' slots
by one ``index_add`` (after a sum over the family view on a padded level), a
parent's value reaches its children by one gather. The cost is
O(N) work in O(height) kernel launches, with no Python loop over nodes.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..layout import TreeLayout, tree_layout
from ._levels import (as_families, as_slots, families_to_nodes,
                      from_parents, read_levels, subtree_sums, to_nodes)

__all__ = ['tree_upward', 'tree_downward']


def _layout_for(src: Tensor, edge_index: Optional[Tensor],
                layout: Optional[TreeLayout]) -> TreeLayout:
    if not isinstance(src, Tensor):
        raise TypeError(f'src must be a tensor, got {type(src).__name__}')
    if layout is None:
        if edge_index is None:
            raise ValueError('Pass either edge_index or layout')
        layout = tree_layout(edge_index, src.size(0), device=src.device)
    if src.dim() == 0 or src.size(0) != layout.num_nodes:
        raise ValueError(f'src has {src.size(0) if src.dim() else 0} rows '
                         f'but the forest has {layout.num_nodes} nodes')
    return layout


def tree_upward(src: Tensor, edge_index: Optional[Tensor] = None, *,
                reduce: str = 'sum', leaves_only: bool = True,
                layout: Optional[TreeLayout] = None) -> Tensor:
    r"""Leaf-to-root aggregation: for every node :math:`A`,

    .. math::
        \mathrm{out}_A = \bigoplus_{i \in \ell(A)} \mathrm{src}_i

    where :math:`\ell(A)` are the leaves below :math:`A` (or all nodes of the
    subtree rooted at :math:`A` when :obj:`leaves_only` is :obj:`False`), and
    :math:`\oplus` is a sum or a mean. A leaf's output is its own row.

    Args:
        src (torch.Tensor): ``[N, *]`` values, one row per node.
        edge_index (torch.Tensor, optional): ``[2, E]`` child -> parent edges
            of a forest over the :obj:`N` nodes.
        reduce (str): :obj:`"sum"` or :obj:`"mean"`. (default: :obj:`"sum"`)
        leaves_only (bool): aggregate leaf rows only; internal rows of
            :obj:`src` are ignored. (default: :obj:`True`)
        layout (TreeLayout, optional): precomputed structure, instead of
            :obj:`edge_index`.

    Shapes:
        - **input:** ``[N, *]``
        - **output:** ``[N, *]``
    """
    if reduce not in ('sum', 'mean'):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    layout = _layout_for(src, edge_index, layout)
    x = src.unsqueeze(1)                                    # (N, 1, *)
    out = families_to_nodes(subtree_sums(read_levels(
        [x], layout, leaves_only=leaves_only), layout), layout)[:, 0]
    if reduce == 'mean':
        count = layout.leaf_count if leaves_only else families_to_nodes(
            subtree_sums([(level.node < layout.num_nodes).to(src.dtype)
                          .unsqueeze(0) for level in layout.levels], layout),
            layout)[:, 0]
        out = out / count.to(out.dtype).view((-1, ) + (1, ) * (src.dim() - 1))
    return out


def tree_downward(src: Tensor, edge_index: Optional[Tensor] = None, *,
                  reduce: str = 'sum', layout: Optional[TreeLayout] = None
                  ) -> Tensor:
    r"""Root-to-leaf accumulation: for every node :math:`A` with root path
    :math:`R = A_0, A_1, \ldots, A_L = A`,

    .. math::
        \mathrm{out}_A = \bigoplus_{l=0}^{L} \mathrm{src}_{A_l}

    with :math:`\oplus` a sum or a product (a log-space stick-breaking weight
    is a :obj:`"sum"` of log factors).

    Args:
        src (torch.Tensor): ``[N, *]`` values, one row per node.
        edge_index (torch.Tensor, optional): ``[2, E]`` child -> parent edges.
        reduce (str): :obj:`"sum"` or :obj:`"prod"`. (default: :obj:`"sum"`)
        layout (TreeLayout, optional): precomputed structure, instead of
            :obj:`edge_index`.

    Shapes:
        - **input:** ``[N, *]``
        - **output:** ``[N, *]``
    """
    if reduce not in ('sum', 'prod'):
        raise ValueError(f"reduce must be 'sum' or 'prod', got {reduce!r}")
    layout = _layout_for(src, edge_index, layout)
    x = src.unsqueeze(1)                                    # (N, 1, *)
    levels = []
    for depth, (level, own) in enumerate(zip(layout.levels,
                                             read_levels(
                                                 [x], layout,
                                                 leaves_only=False))):
        if depth > 0:
            above = from_parents(levels[-1], level)
            own = as_families(own, level)
            own = as_slots(above + own if reduce == 'sum' else above * own,
                           level)
        levels.append(own)
    return to_nodes(levels, layout)[:, 0]
