r"""Pooling over hierarchies: leaves into whole trees, or into the nodes at a
chosen depth (sentences, paragraphs...)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor
from torch_geometric.utils import scatter

from ..layout import TreeLayout

__all__ = ['leaf_mean_pool', 'pool_to_depth']


def leaf_mean_pool(x: Tensor, layout: TreeLayout,
                   batch: Optional[Tensor] = None,
                   num_graphs: Optional[int] = None) -> Tensor:
    r"""Mean of the leaf rows of :obj:`x` per tree (internal rows are
    ignored).

    Args:
        x (torch.Tensor): ``[N, C]`` node features.
        layout (TreeLayout): the forest's layout
            (:func:`~hsa_graph.tree_layout`).
        batch (torch.Tensor, optional): ``[N]`` tree id of every node, as in
            a PyG :class:`~torch_geometric.data.Batch`; :obj:`None` for one
            tree.
        num_graphs (int, optional): number of trees (default: the layout's).

    Shapes:
        - **input:** x ``[N, C]``, batch ``[N]``
        - **output:** ``[B, C]``
    """
    if x.size(0) != layout.num_nodes:
        raise ValueError(f'x has {x.size(0)} rows but the layout has '
                         f'{layout.num_nodes} nodes')
    leaf = layout.is_leaf.to(x.dtype).unsqueeze(-1)             # (N, 1)
    if batch is None:
        total = (x * leaf).sum(0, keepdim=True)
        return total / leaf.sum().clamp(min=1)
    size = layout.num_trees if num_graphs is None else num_graphs
    total = scatter(x * leaf, batch, dim=0, dim_size=size, reduce='sum')
    count = scatter(leaf, batch, dim=0, dim_size=size, reduce='sum')
    return total / count.clamp(min=1)


def pool_to_depth(x: Tensor, layout: TreeLayout, depth: int,
                  batch: Optional[Tensor] = None
                  ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    r"""Pools the leaves into their ancestors at :obj:`depth`: each node at
    that depth gets the mean of the leaf rows below it (for a document tree,
    ``depth=1`` gives one vector per paragraph, ``depth=2`` per sentence).
    Leaves shallower than :obj:`depth` have no such ancestor and are kept as
    they are, so no leaf is lost.

    Args:
        x (torch.Tensor): ``[N, C]`` node features.
        layout (TreeLayout): the forest's layout.
        depth (int): target depth (``0`` pools every tree into its root).
        batch (torch.Tensor, optional): ``[N]`` tree id of every node.

    Returns:
        ``(pooled, node_id, pooled_batch)``: ``[M, C]`` features of the
        ``M`` target nodes, their ids ``[M]`` in ascending order, and their
        tree ids ``[M]`` (:obj:`None` when :obj:`batch` is :obj:`None`).

    Shapes:
        - **input:** x ``[N, C]``, batch ``[N]``
        - **output:** ``[M, C]``, ``[M]``, ``[M]``
    """
    if depth < 0:
        raise ValueError(f'depth must be >= 0, got {depth}')
    if x.size(0) != layout.num_nodes:
        raise ValueError(f'x has {x.size(0)} rows but the layout has '
                         f'{layout.num_nodes} nodes')
    node_depth, parent = layout.depth, layout.parent
    # Structure only: walk every node up until it reaches `depth`.
    ancestor = torch.arange(layout.num_nodes, device=x.device)
    for _ in range(max(layout.num_levels - 1 - depth, 0)):
        up = node_depth[ancestor] > depth
        ancestor = torch.where(up, parent[ancestor], ancestor)
    is_leaf = layout.is_leaf
    target = (node_depth == depth) | (is_leaf & (node_depth < depth))
    node_id = target.nonzero().flatten()
    slot = torch.full((layout.num_nodes, ), -1, dtype=torch.long,
                      device=x.device)
    slot[node_id] = torch.arange(node_id.numel(), device=x.device)
    leaf_id = is_leaf.nonzero().flatten()
    pooled = scatter(x[leaf_id], slot[ancestor[leaf_id]], dim=0,
                     dim_size=node_id.numel(), reduce='mean')
    pooled_batch = None if batch is None else batch[node_id]
    return pooled, node_id, pooled_batch
