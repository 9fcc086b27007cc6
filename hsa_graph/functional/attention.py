r"""`hsa_attention`: the exact HSA dynamic program, read top to bottom.

The four steps of ../shared/spec/HSA.md section 4, in level order:

1. up:       leaf counts (cached in the layout) and mean q, k, v per node;
2. families: masked softmax among siblings, one dense block per family
             (families of equal padded size are batched together);
3. up:       free energies, level by level;
4. down:     the stick-breaking mixture, accumulated to every leaf.

This file holds the public functions and the order of the steps;
``level_order.py`` moves node tensors to and from per-level, head-major
blocks, ``levels.py`` holds step 1 and ``dp_steps.py`` steps 2-4.

Spec names -> code names: ``-eta`` -> ``log_sibling_mass``, ``-phi`` ->
``log_inner_mass``, ``logZ`` -> ``log_partition``, ``log mu`` ->
``log_stay``, ``log(1 - mu)`` -> ``log_leave``, ``vt`` -> ``sibling_value``.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..layout import TreeLayout, tree_layout
from .dp_steps import (_bucket_softmax, _family_softmax, _free_energies,
                       _fusable_bottom, _inner_finite, _mixture_down,
                       _self_logits)
from .level_order import _from_levels, _to_levels
from .levels import _leaf_means_levels, _level_positions
from .precision import stat_dtype

__all__ = ['hsa_attention', 'hsa_log_partition']

def _check_inputs(query: Tensor, key: Tensor, value: Optional[Tensor],
                  pos: Optional[Tensor]) -> None:
    if query.dim() != 3 or key.dim() != 3:
        raise ValueError(f'query and key must be [N, H, C], got '
                         f'{list(query.shape)} and {list(key.shape)}')
    if query.shape != key.shape:
        raise ValueError(f'query and key must have the same shape, got '
                         f'{list(query.shape)} and {list(key.shape)}')
    if value is not None and (value.dim() != 3 or
                              value.shape[:2] != query.shape[:2]):
        raise ValueError(f'value must be [N, H, Cv] with the same N and H as '
                         f'query {list(query.shape)}, got {list(value.shape)}')
    if pos is not None:
        num_nodes, heads = query.shape[:2]
        ok = (pos.dim() == 2 and pos.size(0) == num_nodes) or (
            pos.dim() == 3 and pos.size(0) == num_nodes and
            pos.size(1) in (1, heads))
        if not ok:
            raise ValueError(f'pos must be [N, P] or [N, H, P] with N = '
                             f'{num_nodes} and H = {heads}, got '
                             f'{list(pos.shape)}')


def _resolve_layout(query: Tensor, edge_index: Optional[Tensor],
                    num_nodes: Optional[int],
                    layout: Optional[TreeLayout]) -> TreeLayout:
    if layout is None:
        if edge_index is None:
            raise ValueError('Pass either edge_index or layout')
        if num_nodes is None:
            num_nodes = query.size(0)
        layout = tree_layout(edge_index, num_nodes, device=query.device)
    # Sizes are read off the layout's tensors (not its ints) so that
    # torch.compile(dynamic=True) keeps them symbolic across trees.
    if layout.order.size(0) != query.size(0):
        raise ValueError(f'query has {query.size(0)} rows but the hierarchy '
                         f'has {layout.num_nodes} nodes')
    # Trees of unequal height: the DP runs on the bottom-aligned levels.
    return layout if layout.aligned is None else layout.aligned


def hsa_log_partition(query: Tensor, key: Tensor,
                      edge_index: Optional[Tensor] = None, *,
                      pos: Optional[Tensor] = None, include_self: bool = False,
                      num_nodes: Optional[int] = None,
                      layout: Optional[TreeLayout] = None) -> Tensor:
    r"""The HSA free energy :math:`-\phi(A)` of every node (the paper's
    eq. 8), computed bottom-up:

    .. math::
        -\phi(A) = \sum_{B \in \mathrm{chd}(A)} \frac{n(B)}{n(A)}
        \log Z(B), \qquad
        \log Z(B) = \mathrm{logaddexp}\big(-\phi(B), -\eta(B)\big)

    Its gradient is an oracle for the attention matrix independent of the
    closed form: :math:`\sum_j \theta_{ij} k_j = n(\mathrm{root}) \sqrt{d}\,
    \partial(-\phi(\mathrm{root})) / \partial q_i`.

    Args and shapes as :func:`hsa_attention`, without :obj:`value`. Returns
    ``[N, H]``; entries that are :math:`-\infty` by structure (a subtree
    with a single leaf when :obj:`include_self` is :obj:`False`) are
    :math:`-\infty`.
    """
    _check_inputs(query, key, None, pos)
    layout = _resolve_layout(query, edge_index, num_nodes, layout)
    # Free energies are log masses all through: float32 for half inputs.
    dtype = stat_dtype(torch.promote_types(query.dtype, key.dtype))
    scale = 1.0 / math.sqrt(query.size(-1))
    query_levels = _to_levels(query, layout, dtype)
    key_levels = _to_levels(key, layout, dtype)
    pos_levels = _level_positions(pos, layout, dtype)
    log_sibling_mass, _ = _family_softmax(
        _leaf_means_levels(query_levels, layout),
        _leaf_means_levels(key_levels, layout), None, pos_levels, layout,
        scale)
    self_logit = _self_logits(query_levels, key_levels, pos_levels, scale) \
        if include_self else None
    inner, _, _ = _free_energies(self_logit, log_sibling_mass, layout,
                                 include_self)
    inner = [torch.where(_inner_finite(level, include_self)[None, :], value,
                         torch.full_like(value, -math.inf))
             for level, value in zip(layout.levels, inner)]
    return _from_levels(inner, layout).to(query.dtype)


def hsa_attention(query: Tensor, key: Tensor, value: Tensor,
                  edge_index: Optional[Tensor] = None, *,
                  pos: Optional[Tensor] = None, include_self: bool = False,
                  num_nodes: Optional[int] = None,
                  layout: Optional[TreeLayout] = None) -> Tensor:
    r"""Hierarchical Self-Attention from the `"Hierarchical Self-Attention:
    Generalizing Neural Attention Mechanics to Multi-Scale Problems"
    <https://arxiv.org/abs/2509.15448>`_ paper (NeurIPS 2025), computed
    exactly by a level-synchronous dynamic program in
    :math:`O(\sum_F b_F^2)` per head instead of :math:`O(N^2)`.

    For a query leaf :math:`i` and a key leaf :math:`j \neq i` whose lowest
    common ancestor has children :math:`A_m \ni i` and :math:`C \ni j`,

    .. math::
        \theta_{ij} = \Big(\prod_{l=1}^{m-1} \mu(A_l)\Big)
        \frac{\exp s(A_m \to C)}{Z(A_m)}, \qquad
        s(A \to C) = \frac{\bar q_A^\top \bar k_C}{\sqrt{d}} +
        \epsilon_A^\top \epsilon_C,

    where :math:`\bar q_A, \bar k_C` are means over the leaves below a node,
    :math:`\epsilon` the sibling positions, and :math:`\mu(A)` the mass that
    stays inside :math:`A`; the output is :math:`y_i = \sum_j \theta_{ij}
    v_j`. It is the block-constant matrix closest (in reverse KL) to flat
    softmax attention, and equals it on a one-level tree.

    Args:
        query (torch.Tensor): ``[N, H, C]`` queries; only leaf rows are read.
        key (torch.Tensor): ``[N, H, C]`` keys; only leaf rows are read.
        value (torch.Tensor): ``[N, H, Cv]`` values; only leaf rows are read.
        edge_index (torch.Tensor): ``[2, E]`` child -> parent edges of a forest
            over the :obj:`N` nodes; trees never attend to each other.
        pos (torch.Tensor, optional): ``[N, P]`` or ``[N, H, P]`` sibling
            position embeddings, adding :math:`\epsilon_A^\top \epsilon_C` to
            the logit of siblings :math:`A, C`. (default: :obj:`None`)
        include_self (bool): let each leaf attend to itself with logit
            :math:`q_i^\top k_i / \sqrt{d} + \epsilon_i^\top \epsilon_i`; a
            flat tree then equals standard softmax attention.
            (default: :obj:`False`, as in the paper)
        num_nodes (int, optional): number of nodes (default: ``query.size(0)``).
        layout (TreeLayout, optional): precomputed structure from
            :func:`~hsa_graph.tree_layout`; skips the cache lookup, which
            :func:`torch.compile` needs for a graph without breaks.

    Shapes:
        - **input:** query, key ``[N, H, C]``, value ``[N, H, Cv]``,
          edge_index ``[2, E]``, pos ``[N, P]`` or ``[N, H, P]``
        - **output:** ``[N, H, Cv]``: leaf rows hold :math:`y_i`, internal
          rows the mean of their leaves' outputs.

    Half-precision (float16, bfloat16) inputs keep their dtype for every
    ``[N, H, C]``-sized tensor, with the logits, the softmax and the
    stick-breaking weights in float32, as in attention kernels; the output
    has the inputs' dtype.
    """
    _check_inputs(query, key, value, pos)
    layout = _resolve_layout(query, edge_index, num_nodes, layout)
    # Level tensors in the inputs' dtype; logits and masses in float32 for
    # half-precision inputs (precision.py).
    dtype = torch.promote_types(torch.promote_types(query.dtype, key.dtype),
                                value.dtype)
    scale = 1.0 / math.sqrt(query.size(-1))
    query_levels = _to_levels(query, layout, dtype)   # per level (H, n, C)
    key_levels = _to_levels(key, layout, dtype)
    value_levels = _to_levels(value, layout, dtype)   # per level (H, n, Cv)
    pos_levels = _level_positions(pos, layout, stat_dtype(dtype))

    # The deepest level first when its families are the children of the
    # level above: its softmax node then also sums the parents' totals, and
    # step 4 there is one fused node (family_mixture.py), so the largest
    # level's tensors and gradients are written once, not once per pass.
    bottom_mass, leaf, totals = None, None, (None, None, None)
    if _fusable_bottom(layout):
        bottom_mass, _, *totals, leaf = _bucket_softmax(
            query_levels[-1], key_levels[-1], value_levels[-1],
            None if pos_levels is None else pos_levels[-1],
            layout.levels[-1].buckets[0], scale, family_sums=True,
            fused_down=True)

    # 1. up: mean query, key and value of the leaves below every node.
    mean_query = _leaf_means_levels(query_levels, layout, totals[0])
    mean_key = _leaf_means_levels(key_levels, layout, totals[1])
    mean_value = _leaf_means_levels(value_levels, layout, totals[2])

    # 2. families: sibling softmax (-eta) and the sibling mixture (vt).
    log_sibling_mass, sibling_value = _family_softmax(
        mean_query, mean_key, mean_value, pos_levels, layout, scale,
        bottom_mass)

    # 3. up: free energies -phi and logZ, level by level.
    self_logit = _self_logits(query_levels, key_levels, pos_levels, scale) \
        if include_self else None
    log_inner_mass, sibling_mass, log_partition = _free_energies(
        self_logit, log_sibling_mass, layout, include_self)

    # 4. down: the stick-breaking mixture, root to leaves.
    out_levels, out_totals = _mixture_down(
        log_inner_mass, sibling_mass, log_partition, sibling_value,
        value_levels, layout, include_self, leaf)

    # Leaves keep their output; internal rows get the mean over their leaves.
    out_levels = _leaf_means_levels(out_levels, layout, out_totals)
    return _from_levels(out_levels, layout).to(value.dtype)
