r"""`hsa_attention`: the exact HSA dynamic program, read top to bottom.

The four steps of ../shared/spec/HSA.md section 4, in level order:

1. up:       leaf counts (cached in the layout) and mean q, k, v per node;
2. families: masked softmax among siblings, one dense block per family
             (families of equal padded size are batched together);
3. up:       free energies, level by level;
4. down:     the stick-breaking mixture, accumulated to every leaf.

Spec names -> code names: ``-eta`` -> ``log_sibling_mass``, ``-phi`` ->
``log_inner_mass``, ``logZ`` -> ``log_partition``, ``log mu`` ->
``log_stay``, ``log(1 - mu)`` -> ``log_leave``, ``vt`` -> ``sibling_value``.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import Tensor

from ..layout import TreeLayout, tree_layout
from .passes import (_children_sum, parent_values_lo, path_sum_lo,
                     subtree_sum_lo)

__all__ = ['hsa_attention', 'hsa_log_partition']

_LOW_PRECISION = (torch.float16, torch.bfloat16)


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
    if layout.num_nodes != query.size(0):
        raise ValueError(f'query has {query.size(0)} rows but the hierarchy '
                         f'has {layout.num_nodes} nodes')
    return layout


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Log-sum-exps and long sums need more than 8 mantissa bits.
    return torch.float32 if dtype in _LOW_PRECISION else dtype


def _level_order_positions(pos: Optional[Tensor], layout: TreeLayout,
                           dtype: torch.dtype) -> Optional[Tensor]:
    if pos is None:
        return None
    pos = pos.to(dtype)[layout.order]
    return pos.unsqueeze(1) if pos.dim() == 2 else pos  # (N, H or 1, P)


def _family_softmax(mean_query: Tensor, mean_key: Tensor,
                    mean_value: Optional[Tensor], pos: Optional[Tensor],
                    layout: TreeLayout, scale: float
                    ) -> Tuple[Tensor, Optional[Tensor]]:
    r"""Step 2: for every node A with siblings,
    ``log_sibling_mass(A) = logsumexp_C s(A->C) + log n(C)`` and the
    softmax-weighted mean value of its siblings. Returns level-order ``[N, H]``
    (``-inf`` without siblings) and ``[N, H, Cv]`` (zero without siblings)."""
    num_nodes, heads = mean_query.shape[:2]

    def padded(t: Tensor) -> Tensor:  # a zero row at index N for padding
        return torch.cat([t, t.new_zeros((1, ) + t.shape[1:])], dim=0)

    query_rows, key_rows = padded(mean_query), padded(mean_key)
    value_rows = padded(mean_value) if mean_value is not None else None
    pos_rows = padded(pos) if pos is not None else None
    masses, values = [], []
    for bucket in layout.buckets:
        members = bucket.member_index                        # (F, B)
        q = query_rows[members].transpose(1, 2)              # (F, H, B, C)
        k = key_rows[members].transpose(1, 2)
        logits = torch.matmul(q * scale, k.transpose(-1, -2))  # (F, H, B, B)
        if pos_rows is not None:
            p = pos_rows[members].transpose(1, 2)            # (F, H|1, B, P)
            logits = logits + torch.matmul(p, p.transpose(-1, -2))
        logits = logits + bucket.sibling_mask.to(logits.dtype)
        mass = torch.logsumexp(logits, dim=-1)               # (F, H, B)
        masses.append(mass.transpose(1, 2).reshape(-1, heads))
        if value_rows is not None:
            weights = torch.exp(logits - mass.unsqueeze(-1))
            v = value_rows[members].transpose(1, 2)          # (F, H, B, Cv)
            mixed = torch.matmul(weights, v).transpose(1, 2)  # (F, B, H, Cv)
            values.append(mixed.reshape(-1, heads, v.size(-1)))
    # Row `num_sibling_nodes` is the "no siblings" row every other node reads.
    slot = layout.family_slot_lo
    masses.append(mean_query.new_full((1, heads), -math.inf))
    log_sibling_mass = torch.cat(masses, dim=0)[slot]
    sibling_value = None
    if mean_value is not None:
        values.append(mean_value.new_zeros((1, ) + mean_value.shape[1:]))
        sibling_value = torch.cat(values, dim=0)[slot]
    return log_sibling_mass, sibling_value


def _free_energies(self_logit: Optional[Tensor], log_sibling_mass: Tensor,
                   layout: TreeLayout, include_self: bool
                   ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Step 3, bottom-up: ``log_inner_mass(A) = -phi(A)`` and
    ``log_partition(A) = logaddexp(-phi(A), -eta(A))``.

    Infinite values are structural (a node whose subtree holds one leaf has
    ``-phi = -inf`` without self-attention; a node without siblings has
    ``-eta = -inf``), so they are handled with masks known from the layout
    and the arithmetic only ever sees finite numbers: no NaN, forward or
    backward. Returns the masked ``-phi``, ``-eta``, ``logZ`` (zeros where
    infinite) and the mask ``inner_finite``."""
    has_siblings = layout.has_siblings_lo
    inner_finite = layout.leaf_count_lo > 1
    if include_self:
        inner_finite = torch.ones_like(inner_finite)
    heads = log_sibling_mass.size(1)
    sibling_mass = torch.where(has_siblings[:, None], log_sibling_mass,
                               torch.zeros_like(log_sibling_mass))
    weight = layout.parent_weight_lo.to(log_sibling_mass.dtype)[:, None]

    inner_levels, partition_levels = [None] * layout.num_levels, [None] * \
        layout.num_levels
    for level in range(layout.num_levels - 1, -1, -1):
        span = layout.level_slice(level)
        count = span.stop - span.start
        if level + 1 < layout.num_levels:
            below = partition_levels[level + 1] * weight[layout.level_slice(
                level + 1)]
            inner = _children_sum(below, layout, level)
        else:
            inner = log_sibling_mass.new_zeros((count, heads))
        if self_logit is not None:
            inner = torch.where(layout.is_leaf_lo[span, None],
                                self_logit[span], inner)
        finite = inner_finite[span, None]
        inner = torch.where(finite, inner, torch.zeros_like(inner))
        sib, mass = has_siblings[span, None], sibling_mass[span]
        partition = torch.where(
            finite & sib, torch.logaddexp(inner, mass),
            torch.where(finite, inner, mass))
        # Where both masses are empty logZ = -inf; a parent only ever sums
        # such a child when its own -phi is -inf too, so 0 is a safe stand-in.
        partition = torch.where(finite | sib, partition,
                                torch.zeros_like(partition))
        inner_levels[level], partition_levels[level] = inner, partition
    return (torch.cat(inner_levels), sibling_mass, torch.cat(partition_levels),
            inner_finite)


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
    dtype = _compute_dtype(query.dtype)
    scale = 1.0 / math.sqrt(query.size(-1))
    query_lo = query.to(dtype)[layout.order]
    key_lo = key.to(dtype)[layout.order]
    pos_lo = _level_order_positions(pos, layout, dtype)
    means = _leaf_means(torch.cat([query_lo, key_lo], dim=-1), layout)
    mean_query, mean_key = means.split(query.size(-1), dim=-1)
    log_sibling_mass, _ = _family_softmax(mean_query, mean_key, None, pos_lo,
                                          layout, scale)
    self_logit = _self_logit(query_lo, key_lo, pos_lo, scale) \
        if include_self else None
    inner, _, _, inner_finite = _free_energies(self_logit, log_sibling_mass,
                                               layout, include_self)
    inner = torch.where(inner_finite[:, None], inner,
                        torch.full_like(inner, -math.inf))
    return inner[layout.rank].to(query.dtype)


def _leaf_means(values: Tensor, layout: TreeLayout) -> Tensor:
    leaf = layout.is_leaf_lo[:, None, None].to(values.dtype)
    sums = subtree_sum_lo(values * leaf, layout)
    return sums / layout.leaf_count_lo.to(values.dtype)[:, None, None]


def _self_logit(query: Tensor, key: Tensor, pos: Optional[Tensor],
                scale: float) -> Tensor:
    logit = (query * key).sum(-1) * scale                     # (N, H)
    if pos is not None:
        logit = logit + (pos * pos).sum(-1)
    return logit


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

    Half-precision inputs are computed in float32 and cast back.
    """
    _check_inputs(query, key, value, pos)
    layout = _resolve_layout(query, edge_index, num_nodes, layout)
    dtype = _compute_dtype(query.dtype)
    scale = 1.0 / math.sqrt(query.size(-1))
    query_lo = query.to(dtype)[layout.order]                  # (N, H, C)
    key_lo = key.to(dtype)[layout.order]
    value_lo = value.to(dtype)[layout.order]                  # (N, H, Cv)
    pos_lo = _level_order_positions(pos, layout, dtype)

    # 1. up: mean query, key and value of the leaves below every node.
    channels = query.size(-1)
    means = _leaf_means(torch.cat([query_lo, key_lo, value_lo], dim=-1),
                        layout)
    mean_query, mean_key = means[..., :channels], means[..., channels:2 *
                                                        channels]
    mean_value = means[..., 2 * channels:]

    # 2. families: sibling softmax (-eta) and the sibling mixture (vt).
    log_sibling_mass, sibling_value = _family_softmax(
        mean_query, mean_key, mean_value, pos_lo, layout, scale)

    # 3. up: free energies -phi and logZ, level by level.
    self_logit = _self_logit(query_lo, key_lo, pos_lo, scale) \
        if include_self else None
    log_inner_mass, sibling_mass, log_partition, inner_finite = \
        _free_energies(self_logit, log_sibling_mass, layout, include_self)

    # 4. down: log mu (stay inside A) and log(1 - mu) (leave A for siblings).
    has_siblings = layout.has_siblings_lo[:, None]
    minus_inf = torch.full_like(log_partition, -math.inf)
    log_stay = torch.where(
        has_siblings,
        torch.where(inner_finite[:, None], log_inner_mass - log_partition,
                    minus_inf), torch.zeros_like(log_partition))
    log_leave = torch.where(has_siblings, sibling_mass - log_partition,
                            minus_inf)
    log_reach = path_sum_lo(log_stay, layout)          # u(A), (N, H)
    log_reach_parent = parent_values_lo(log_reach, layout, 0.0)
    leave_weight = torch.exp(log_reach_parent + log_leave)
    out = path_sum_lo(leave_weight.unsqueeze(-1) * sibling_value, layout)
    if include_self:
        out = out + torch.exp(log_reach).unsqueeze(-1) * value_lo

    # Leaves keep their output; internal rows get the mean over their leaves.
    out = _leaf_means(out, layout)
    return out[layout.rank].to(value.dtype)
