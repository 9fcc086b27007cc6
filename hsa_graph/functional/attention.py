r"""`hsa_attention`: the exact HSA dynamic program, read top to bottom.

The four steps of ../shared/spec/HSA.md section 4, level by level on the
family blocks of a :class:`~hsa_graph.layout.TreeLayout` (``layout.py``):

1. up:       mean query, key and value of the leaves below every node;
2. families: masked softmax among siblings, one ``[B, B]`` block per family;
3. up:       free energies, then the stick-breaking factors;
4. down:     the stick-breaking mixture, root to leaves.

Per-level tensors are head-major ``[H, S, C]`` (``S = F * B`` slots, padded
families of ``B``), so a level's families are a free ``[H * F, B, C]`` view
and the sibling softmax is two ``bmm``. Every step is the same plain tensor
code on every device, eager or compiled, with no host synchronisation.

Spec names -> code names: ``-eta`` -> ``log_sibling_mass``, ``-phi`` ->
``log_inner_mass``, ``logZ`` -> ``log_partition``, ``mu`` -> ``stay``,
``1 - mu`` -> ``leave``, ``prod mu`` -> ``reach``, ``vt`` -> ``sibling_value``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..layout import LevelLayout, TreeLayout, tree_layout
from ._levels import (add_family_sums, from_parents, level_rows, read_leaves,
                      read_nodes, slot_mask, subtree_sums, to_nodes)

__all__ = ['hsa_attention', 'hsa_log_partition']


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
        edge_index (torch.Tensor, optional): ``[2, E]`` child -> parent edges
            of a forest over the :obj:`N` nodes; trees never attend to each
            other. Not needed when :obj:`layout` is given.
        pos (torch.Tensor, optional): ``[N, P]`` or ``[N, H, P]`` sibling
            position embeddings, adding :math:`\epsilon_A^\top \epsilon_C` to
            the logit of siblings :math:`A, C` (read at every node).
            (default: :obj:`None`)
        include_self (bool): let each leaf attend to itself with logit
            :math:`q_i^\top k_i / \sqrt{d} + \epsilon_i^\top \epsilon_i`; a
            flat tree then equals standard softmax attention.
            (default: :obj:`False`, as in the paper)
        num_nodes (int, optional): number of nodes (default: ``query.size(0)``).
        layout (TreeLayout, optional): the forest's structure, from the
            loader (``batch.layout``) or :func:`~hsa_graph.tree_layout`.
            With it, the call does no structure work and no host sync.

    Shapes:
        - **input:** query, key ``[N, H, C]``, value ``[N, H, Cv]``,
          edge_index ``[2, E]``, pos ``[N, P]`` or ``[N, H, P]``
        - **output:** ``[N, H, Cv]``: leaf rows hold :math:`y_i`, internal
          rows the mean of their leaves' outputs.

    Half-precision (float16, bfloat16) inputs are read in their dtype and
    every sum, logit and mass is computed in float32 (level tensors
    included); the output has the inputs' dtype.
    """
    _check_inputs(query, key, value, pos)
    layout = _resolve_layout(query, edge_index, num_nodes, layout)
    dtype = _compute_dtype(query, key, value)
    scale = 1.0 / math.sqrt(query.size(-1))
    heads = query.size(1)
    p = None if pos is None else (pos.unsqueeze(1) if pos.dim() == 2
                                  else pos).to(dtype)       # (N, H|1, P)

    # 1. up: mean query, key and value of the leaves below every slot.
    rows = level_rows(layout, heads)   # node rows <-> level slots, per head
    leaf_q, leaf_k, leaf_v = (read_leaves(t, layout, dtype, rows)  # (H, S, C)
                              for t in (query, key, value))
    mean_q, mean_k, mean_v = (_means(subtree_sums(leaf, layout), layout)
                              for leaf in (leaf_q, leaf_k, leaf_v))
    pos_levels = None if p is None else read_nodes(
        p, layout, rows if p.size(1) == heads else None)

    # 2. families: sibling softmax (-eta) and sibling mixture (vt).
    log_sibling_mass, sibling_value = [], []
    for depth, level in enumerate(layout.levels):
        mass, mixed = _sibling_softmax(
            mean_q[depth], mean_k[depth], mean_v[depth],
            None if pos_levels is None else pos_levels[depth], level, scale)
        log_sibling_mass.append(mass)
        sibling_value.append(mixed)

    # 3. up: free energies -phi and logZ, then mu and 1 - mu per slot.
    self_logit = _self_logits(leaf_q, leaf_k, pos_levels, layout, scale) \
        if include_self else None
    log_inner_mass, log_partition = _free_energies(
        log_sibling_mass, self_logit, layout, heads, dtype)
    stay, leave = zip(*(_stick_breaking(*masses, level, include_self)
                        for masses, level in zip(
                            zip(log_inner_mass, log_sibling_mass,
                                log_partition), layout.levels)))

    # 4. down: out(A) = out(pa) + reach(pa) * (1 - mu(A)) * vt(A), with
    # reach(A) = reach(pa) * mu(A) the mass that reaches A from the root.
    out_levels: List[Tensor] = []
    reach = out = None
    for depth, level in enumerate(layout.levels):
        size = level.node.size(0)
        if depth == 0:                            # roots: no siblings
            reach = mean_q[0].new_ones(heads, size, 1)
            out = mean_v[0].new_zeros(heads, size, mean_v[0].size(-1))
        else:
            reach_parent = from_parents(reach, level)         # (H, F, 1, 1)
            out_parent = from_parents(out, level)             # (H, F, 1, Cv)
            if stay[depth] is None:               # only children: pass on
                reach = reach_parent.expand(-1, -1, level.family_size, -1)
                out = out_parent.expand(-1, -1, level.family_size, -1)
            else:
                reach = reach_parent * _families(stay[depth], level)
                out = torch.addcmul(
                    out_parent, reach_parent * _families(leave[depth], level),
                    _families(sibling_value[depth], level))
            reach, out = reach.flatten(1, 2), out.flatten(1, 2)
        if include_self:                          # theta_ii = reach(i)
            out = torch.addcmul(out, reach, leaf_v[depth])   # 0 off leaves
        out_levels.append(out)

    # Leaves keep their output; internal rows get the mean over their leaves.
    out_levels = _means(subtree_sums(
        [o * slot_mask(level.leaf, o).to(o.dtype)
         for o, level in zip(out_levels, layout.levels)], layout), layout)
    return to_nodes(out_levels, layout, rows).to(value.dtype)


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
    dtype = _compute_dtype(query, key)
    scale = 1.0 / math.sqrt(query.size(-1))
    p = None if pos is None else (pos.unsqueeze(1) if pos.dim() == 2
                                  else pos).to(dtype)
    leaf_q, leaf_k = (read_leaves(t, layout, dtype) for t in (query, key))
    mean_q, mean_k = (_means(subtree_sums(leaf, layout), layout)
                      for leaf in (leaf_q, leaf_k))
    pos_levels = None if p is None else read_nodes(p, layout)
    log_sibling_mass = [
        _sibling_softmax(mean_q[d], mean_k[d], None,
                         None if pos_levels is None else pos_levels[d],
                         level, scale)[0]
        for d, level in enumerate(layout.levels)]
    self_logit = _self_logits(leaf_q, leaf_k, pos_levels, layout, scale) \
        if include_self else None
    inner, _ = _free_energies(log_sibling_mass, self_logit, layout,
                              query.size(1), dtype)
    if not include_self:
        inner = [torch.where(slot_mask(level.multi_leaf, t), t, -math.inf)
                 for t, level in zip(inner, layout.levels)]
    return to_nodes(inner, layout).to(query.dtype)


# -- the steps ---------------------------------------------------------------

def _means(sums: List[Tensor], layout: TreeLayout) -> List[Tensor]:
    r"""Subtree sums -> means (leaves and padding are left as they are)."""
    last = layout.num_levels - 1           # the deepest level: leaves only
    return [t / slot_mask(level.count, t).to(t.dtype) if depth < last
            else t for depth, (t, level) in enumerate(zip(sums,
                                                          layout.levels))]


def _sibling_softmax(mean_q: Tensor, mean_k: Tensor, mean_v: Optional[Tensor],
                     pos: Optional[Tensor], level: LevelLayout, scale: float
                     ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    r"""Step 2 for one level: ``[H, S]`` log sibling masses
    ``-eta(A) = logsumexp_C s(A->C) + log n(C)`` and ``[H, S, Cv]`` sibling
    mixtures ``vt(A)``; ``(None, None)`` for a level of only children."""
    num_families, size = level.num_families, level.family_size
    if size == 1:
        return None, None
    heads = mean_q.size(0)
    bias = level.key_bias.to(mean_q.dtype)             # (F, 1, B): log n(C)
    if pos is not None:                                # + eps_A . eps_C
        p = pos.reshape(-1, size, pos.size(-1))
        bias = bias + torch.bmm(p, p.transpose(1, 2)).view(
            -1, num_families, size, size)

    def families(t: Tensor) -> Tensor:                 # (H, F, B, C)
        return t.view(heads, num_families, size, t.size(-1))

    mass, mixed = _SiblingSoftmax.apply(
        families(mean_q), families(mean_k),
        None if mean_v is None else families(mean_v), bias, scale)
    return mass.flatten(1), None if mixed is None else mixed.flatten(1, 2)


def _sibling_logits(q: Tensor, k: Tensor, bias: Tensor,
                    scale: float) -> Tensor:
    r"""``[H, F, B, B]`` logits ``scale q.k + bias``, the diagonal masked."""
    heads, families, size, channels = q.shape
    bias = bias.expand(heads, families, -1, size).reshape(
        heads * families, -1, size)              # (H * F, 1 | B, B), small
    logits = torch.baddbmm(bias, q.reshape(-1, size, channels),
                           k.reshape(-1, size, channels).transpose(1, 2),
                           alpha=scale).view(heads, families, size, size)
    # A is no sibling of A. -1e30 is layout.MASKED, written out: a global
    # read inside an autograd.Function trips dynamo (torch 2.13).
    logits.diagonal(0, -2, -1).fill_(-1e30)
    return logits


class _SiblingSoftmax(torch.autograd.Function):
    r"""Masked softmax among siblings: ``(logsumexp, softmax @ v)``. It saves
    the ``[H, F, B, B]`` weights alone (written over the logits): autograd
    would also keep the logits, and logsumexp's and the bias's copies."""

    @staticmethod
    def forward(ctx, q, k, v, bias, scale):
        logits = _sibling_logits(q, k, bias, scale)
        top = logits.amax(-1, keepdim=True)
        weights = logits.sub_(top).exp_()                  # (H, F, B, B)
        total = weights.sum(-1, keepdim=True)
        weights.div_(total)
        mass = (top + total.log()).squeeze(-1)             # logsumexp
        mixed = None
        if v is not None:
            size = q.size(2)
            mixed = torch.bmm(weights.view(-1, size, size),
                              v.reshape(-1, size, v.size(-1))).view(v.shape)
        ctx.save_for_backward(q, k, v, weights)
        ctx.scale = scale
        ctx.bias_shape = bias.shape
        return mass, mixed

    @staticmethod
    @once_differentiable            # double backward raises a clear error
    def backward(ctx, grad_mass, grad_mixed):
        q, k, v, weights = ctx.saved_tensors
        size = q.size(2)
        flat = weights.view(-1, size, size)
        grad_v = grad_logits = None
        if grad_mixed is not None:
            g = grad_mixed.reshape(-1, size, grad_mixed.size(-1))
            grad_v = torch.bmm(flat.transpose(1, 2), g).view(v.shape)
            grad_weights = torch.bmm(g, v.reshape(-1, size, v.size(-1))
                                     .transpose(1, 2)).view(weights.shape)
            grad_logits = torch._softmax_backward_data(
                grad_weights, weights, -1, weights.dtype)
        if grad_mass is not None:                # d logsumexp = softmax
            grad_logits = weights * grad_mass.unsqueeze(-1) \
                if grad_logits is None else grad_logits.addcmul_(
                    weights, grad_mass.unsqueeze(-1))
        if grad_logits is None:
            return None, None, grad_v, None, None
        grad_bias = grad_logits.sum_to_size(ctx.bias_shape) \
            if ctx.needs_input_grad[3] else None
        grad_logits = grad_logits.view(-1, size, size)
        channels = q.size(-1)             # scaled after the bmm: B x C < B x B
        grad_q = torch.bmm(grad_logits, k.reshape(-1, size, channels))
        grad_k = torch.bmm(grad_logits.transpose(1, 2),
                           q.reshape(-1, size, channels))
        return (grad_q.mul_(ctx.scale).view(q.shape),
                grad_k.mul_(ctx.scale).view(k.shape), grad_v, grad_bias, None)


def _free_energies(log_sibling_mass: List[Optional[Tensor]],
                   self_logit: Optional[List[Tensor]],
                   layout: TreeLayout, heads: int, dtype: torch.dtype
                   ) -> Tuple[List[Tensor], List[Tensor]]:
    r"""Step 3, bottom-up, per level ``[H, S]``: ``-phi(A)`` (a leaf's self
    logit, an inner node's n-weighted sum of its children's ``logZ``) and
    ``logZ(A) = logaddexp(-phi(A), -eta(A))``.

    Structurally infinite masses (``-phi`` of a single-leaf subtree without
    self-attention, ``-eta`` of a node without siblings) are replaced by 0
    here (``-eta`` is about ``MASKED``) and masked where they are used
    (:func:`_stick_breaking`), so no arithmetic ever sees an infinity: no
    NaN, forward or backward. A parent sums a child whose ``logZ`` is such a
    stand-in only when its own ``-phi`` is infinite too."""
    inner: List[Optional[Tensor]] = [None] * layout.num_levels
    partition: List[Optional[Tensor]] = [None] * layout.num_levels
    for depth in range(layout.num_levels - 1, -1, -1):
        level = layout.levels[depth]
        # Leaves: their self logit (0 without self-attention); inner nodes:
        # sum_B n(B) logZ(B) / n(A) (a leaf's n is 1).
        log_inner = self_logit[depth] if self_logit is not None else \
            torch.zeros(heads, level.node.size(0), dtype=dtype,
                        device=level.node.device)
        if depth + 1 < layout.num_levels:
            below = layout.levels[depth + 1]
            log_inner = add_family_sums(
                log_inner, partition[depth + 1] * below.count.to(dtype),
                below) / level.count.to(dtype)
        log_z = log_inner
        mass = log_sibling_mass[depth]     # ~MASKED without siblings
        if mass is not None:
            both = torch.logaddexp(log_inner, mass)
            if self_logit is None:
                both = torch.where(level.multi_leaf, both, mass)
            log_z = torch.where(level.has_siblings, both, log_inner)
        inner[depth], partition[depth] = log_inner, log_z
    return inner, partition


def _stick_breaking(log_inner_mass: Tensor, log_sibling_mass: Optional[Tensor],
                    log_partition: Tensor, level: LevelLayout,
                    include_self: bool
                    ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    r"""``mu(A)`` (stay) and ``1 - mu(A)`` (leave) per slot, ``[H, S, 1]``;
    ``None`` for a level of only children (``mu = 1``)."""
    if log_sibling_mass is None:
        return None, None
    sib = level.has_siblings
    stay = torch.exp(log_inner_mass - log_partition)
    if not include_self:                 # -phi = -inf: nothing stays inside
        stay = stay.masked_fill(~level.multi_leaf, 0)
    stay = stay.masked_fill(~sib, 1)
    leave = torch.exp(log_sibling_mass - log_partition).masked_fill(~sib, 0)
    return stay.unsqueeze(-1), leave.unsqueeze(-1)


def _self_logits(leaf_q: List[Tensor],
                 leaf_k: List[Tensor],
                 pos: Optional[List[Tensor]], layout: TreeLayout,
                 scale: float) -> List[Tensor]:
    r"""``q_i . k_i / sqrt(d) + eps_i . eps_i`` per level, ``[H, S]``, 0 off
    the leaves."""
    logits = []
    for depth, (q, k) in enumerate(zip(leaf_q, leaf_k)):
        logit = (q * k).sum(-1) * scale
        if pos is not None:
            logit = logit + pos[depth].square().sum(-1).masked_fill(
                ~layout.levels[depth].leaf, 0)
        logits.append(logit)
    return logits


# -- helpers -----------------------------------------------------------------

def _families(t: Tensor, level: LevelLayout) -> Tensor:
    r"""``[H, S, *]`` -> ``[H, F, B, *]`` (a view)."""
    return t.unflatten(1, (level.num_families, level.family_size))


def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    # Half inputs: sums, logits and masses in float32 (a subtree's sum of
    # float16 values overflows past 65,504).
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) \
        else dtype


def _check_inputs(query: Tensor, key: Tensor, value: Optional[Tensor],
                  pos: Optional[Tensor]) -> None:
    named = [('query', query), ('key', key), ('value', value), ('pos', pos)]
    for name, t in named:
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f'{name} must be a tensor, got '
                            f'{type(t).__name__}')
        if not t.is_floating_point():
            raise TypeError(f'{name} must be a real floating-point tensor, '
                            f'got {t.dtype}')
    if query.dim() != 3 or key.dim() != 3:
        raise ValueError(f'query and key must be [N, H, C], got '
                         f'{list(query.shape)} and {list(key.shape)}')
    if query.shape != key.shape:
        raise ValueError(f'query and key must have the same shape, got '
                         f'{list(query.shape)} and {list(key.shape)}')
    if query.size(1) == 0 or query.size(2) == 0:
        raise ValueError(f'query and key need at least one head and one '
                         f'channel, got shape {list(query.shape)}')
    if value is not None and (value.dim() != 3 or
                              value.shape[:2] != query.shape[:2] or
                              value.size(2) == 0):
        raise ValueError(f'value must be [N, H, Cv] with the same N and H as '
                         f'query {list(query.shape)} and Cv > 0, got '
                         f'{list(value.shape)}')
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
    # Read off a tensor (not the int) so that dynamic shapes stay symbolic.
    if layout.node_slot.size(0) != query.size(0):
        raise ValueError(f'query has {query.size(0)} rows but the hierarchy '
                         f'has {layout.num_nodes} nodes')
    return layout
