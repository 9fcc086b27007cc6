r"""Analytic attention FLOPs: flat softmax attention versus HSA on a tree.

Both counts cover the attention operator only (what HSA replaces): the
Q/K/V/output projections are identical in both and are left out. One
multiply-add counts as 2 FLOPs, per head:

* **softmax attention** over ``n`` tokens: ``q k^T`` (``2 n^2 d``) plus the
  weighted sum of values (``2 n^2 d``), i.e. ``4 n^2 d``;
* **HSA**: every family of ``b >= 2`` siblings runs the same two products on
  its means (``4 b^2 d``); the means themselves cost ``2 d`` per child ->
  parent edge for each of q, k, v (``6 d`` per edge); the downward mixture
  ``2 d`` per node; with ``include_self`` the self logit and self value
  ``4 d`` per leaf.

Element-wise work (scaling, exponentials, normalisation) is left out of both;
it is ``O(n^2)`` for softmax
attention and ``O(sum b^2)`` for HSA, so it does not change the ratio much.
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
from torch import Tensor

from ..hierarchy import Hierarchy
from ..layout import TreeLayout, tree_layout

__all__ = ['softmax_attention_flops', 'hsa_attention_flops',
           'attention_flops_report']


def softmax_attention_flops(lengths: Union[Tensor, Sequence[int], int],
                            num_heads: int, head_dim: int) -> int:
    r"""FLOPs of flat softmax attention (``4 n^2 d`` per head and sequence).

    Args:
        lengths (int, list or Tensor): the number of attended tokens of each
            sequence (for a padded batch: ``attention_mask.sum(1)``, since
            padding costs nothing in an efficient kernel).
        num_heads (int): number of heads :math:`H`.
        head_dim (int): channels per head :math:`d`.
    """
    lengths = torch.as_tensor(lengths, dtype=torch.long).reshape(-1)
    if bool((lengths < 0).any()):
        raise ValueError('lengths must be non-negative')
    return int(4 * (lengths**2).sum()) * num_heads * head_dim


def hsa_attention_flops(hierarchy: Union[Hierarchy, TreeLayout, Tensor],
                        num_heads: int, head_dim: int,
                        include_self: bool = True,
                        num_nodes: Optional[int] = None) -> int:
    r"""FLOPs of :func:`~hsa_graph.hsa_attention` on a tree or forest (see the
    module docstring for what is counted).

    Args:
        hierarchy (Hierarchy, TreeLayout or Tensor): the forest, or its
            child -> parent :obj:`edge_index` (then pass :obj:`num_nodes`).
        num_heads (int): number of heads :math:`H`.
        head_dim (int): channels per head :math:`d`.
        include_self (bool): count the self logit and self value of every
            leaf. (default: :obj:`True`)
        num_nodes (int, optional): number of nodes, with an edge_index.
    """
    if isinstance(hierarchy, Hierarchy):
        layout = hierarchy.layout
    elif isinstance(hierarchy, TreeLayout):
        layout = hierarchy
    elif isinstance(hierarchy, Tensor):
        layout = tree_layout(hierarchy, num_nodes)
    else:
        raise ValueError(f'hierarchy must be a Hierarchy, TreeLayout or '
                         f'edge_index, got {type(hierarchy).__name__}')
    parent = layout.parent.cpu()
    child_count = torch.bincount(parent[parent >= 0],
                                 minlength=layout.num_nodes)
    families = child_count[child_count >= 2]
    num_edges = int(child_count.sum())
    num_leaves = int((child_count == 0).sum())
    per_channel = (4 * int((families**2).sum()) + 6 * num_edges +
                   2 * layout.num_nodes +
                   (4 * num_leaves if include_self else 0))
    return per_channel * num_heads * head_dim


def attention_flops_report(hierarchy: Hierarchy, lengths: Union[Tensor,
                                                                Sequence[int]],
                           num_heads: int, head_dim: int,
                           patched_layers: Sequence[int],
                           num_layers: int) -> Dict[str, object]:
    r"""Per-layer and total attention FLOPs of a model whose
    :obj:`patched_layers` run HSA on :obj:`hierarchy` while the others run
    softmax attention over the same tokens.

    Args:
        hierarchy (Hierarchy): the token forest of one batch.
        lengths (list or Tensor): tokens per sequence of that batch.
        num_heads (int): heads per layer.
        head_dim (int): channels per head.
        patched_layers (list of int): layers running HSA.
        num_layers (int): number of attention layers in the model.

    Returns:
        dict with ``per_layer`` (list of FLOPs), ``total``, ``flat_total``
        (every layer softmax) and ``cut`` (``1 - total / flat_total``).
    """
    flat = softmax_attention_flops(lengths, num_heads, head_dim)
    hsa = hsa_attention_flops(hierarchy, num_heads, head_dim)
    patched = set(patched_layers)
    per_layer = [hsa if layer in patched else flat
                 for layer in range(num_layers)]
    total = sum(per_layer)
    flat_total = flat * num_layers
    return {'per_layer': per_layer, 'total': total, 'flat_total': flat_total,
            'cut': 1.0 - total / flat_total if flat_total else 0.0}
