r"""Level-synchronous tree passes: leaf-to-root aggregation and root-to-leaf
accumulation over a forest.

Both work on tensors in *level order* (see :class:`~hsa_graph.layout.
TreeLayout`): level ``d`` is the slice ``level_ptr[d]:level_ptr[d + 1]``, and
the parents of level ``d`` sit in level ``d - 1`` at offsets
``parent_local[d]``. A pass is one gather or one scatter per level, so its
cost is O(N) work in O(height) kernel launches, with no Python loop over nodes.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ..allocator import new_buffer
from ..layout import TreeLayout, tree_layout

__all__ = ['tree_upward', 'tree_downward']


def children_sum(child: Tensor, layout: TreeLayout, level: int,
                 dim: int = 0) -> Tensor:
    r"""Sums level ``level + 1``'s rows (along :obj:`dim`) into their
    parents, in level-local coordinates."""
    size = layout.levels[level].node_ids.size(0)
    if size == 1:   # one parent (a lone root): a plain sum, and it sidesteps
        return child.sum(dim, keepdim=True)   # an Inductor CPU scatter bug
    if layout.levels[level].uniform_fanout:
        # Families back to back: a sum over a view, whose backward is a
        # broadcast (no scatter forward, no gathered copy backward).
        dim = dim % child.dim()
        return child.unflatten(dim, (size, -1)).sum(dim + 1)
    index = layout.levels[level + 1].parent_local
    if torch.compiler.is_compiling():     # Inductor plans its own buffers
        shape = list(child.shape)
        shape[dim] = size
        return child.new_zeros(shape).index_add(dim, index, child)
    return _SumIntoParents.apply(child, index, size, dim)


class _SumIntoParents(torch.autograd.Function):
    r"""``zeros.index_add(dim, index, child)``, saving only the index:
    autograd's ``index_add`` saves its whole source for backward, which
    kept every ragged level's q, k and v copies alive until backward."""
    @staticmethod
    def forward(ctx, child: Tensor, index: Tensor, size: int, dim: int):
        ctx.save_for_backward(index)
        ctx.dim = dim % child.dim()
        shape = list(child.shape)
        shape[ctx.dim] = size
        return new_buffer(child, shape).zero_().index_add_(ctx.dim, index,
                                                           child)

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, = ctx.saved_tensors
        if torch.is_grad_enabled():     # double backward: out= has no grad
            return grad.index_select(ctx.dim, index), None, None, None
        shape = list(grad.shape)
        shape[ctx.dim] = index.numel()
        return (torch.index_select(grad, ctx.dim, index,
                                   out=new_buffer(grad, shape)),
                None, None, None)


def subtree_sum_lo(values: Tensor, layout: TreeLayout) -> Tensor:
    r"""For every node, the sum of :obj:`values` over its subtree (itself
    included). Level order in and out."""
    sums = [None] * layout.num_levels
    for level in range(layout.num_levels - 1, -1, -1):
        own = values[layout.level_slice(level)]
        if level + 1 < layout.num_levels:
            own = own + children_sum(sums[level + 1], layout, level)
        sums[level] = own
    return torch.cat(sums, dim=0)


def path_sum_lo(values: Tensor, layout: TreeLayout) -> Tensor:
    r"""For every node, the sum of :obj:`values` along its root path (root and
    itself included). Level order in and out."""
    sums = [values[layout.level_slice(0)]]
    for level in range(1, layout.num_levels):
        inherited = sums[level - 1][layout.parent_local[level]]
        sums.append(inherited + values[layout.level_slice(level)])
    return torch.cat(sums, dim=0)


def _layout_for(src: Tensor, edge_index: Optional[Tensor],
                layout: Optional[TreeLayout]) -> TreeLayout:
    if layout is not None:
        return layout
    if edge_index is None:
        raise ValueError('Pass either edge_index or layout')
    return tree_layout(edge_index, src.size(0), device=src.device)


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
    if src.size(0) != layout.num_nodes:
        raise ValueError(f'src has {src.size(0)} rows but the forest has '
                         f'{layout.num_nodes} nodes')
    values = src[layout.order]
    extra = (1, ) * (src.dim() - 1)
    if leaves_only:
        values = values * layout.is_leaf_lo.view(-1, *extra).to(values.dtype)
    out = subtree_sum_lo(values, layout)
    if reduce == 'mean':
        if leaves_only:
            count = layout.leaf_count_lo
        else:
            count = subtree_sum_lo(torch.ones_like(layout.leaf_count_lo),
                                   layout)
        out = out / count.to(out.dtype).view(-1, *extra)
    return out[layout.rank]


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
    if src.size(0) != layout.num_nodes:
        raise ValueError(f'src has {src.size(0)} rows but the forest has '
                         f'{layout.num_nodes} nodes')
    values = src[layout.order]
    if reduce == 'sum':
        out = path_sum_lo(values, layout)
    else:
        pieces = [values[layout.level_slice(0)]]
        for level in range(1, layout.num_levels):
            pieces.append(pieces[level - 1][layout.parent_local[level]] *
                          values[layout.level_slice(level)])
        out = torch.cat(pieces, dim=0)
    return out[layout.rank]
