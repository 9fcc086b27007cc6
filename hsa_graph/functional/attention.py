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
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from ..layout import FamilyBucket, TreeLayout, tree_layout
from .passes import children_sum
from .sibling_softmax import sibling_softmax

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
    # Sizes are read off the layout's tensors (not its ints) so that
    # torch.compile(dynamic=True) keeps them symbolic across trees.
    if layout.order.size(0) != query.size(0):
        raise ValueError(f'query has {query.size(0)} rows but the hierarchy '
                         f'has {layout.num_nodes} nodes')
    return layout


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    # Log-sum-exps and long sums need more than 8 mantissa bits.
    return torch.float32 if dtype in _LOW_PRECISION else dtype


# Every per-level tensor is head-major: values (H, n, C), scalars (H, n).
# A level's families then read as (H * F, B, C) views, so the sibling
# softmax is two bmm calls with no transposing copies.
Levels = List[Tensor]


def _to_levels(t: Tensor, layout: TreeLayout, dtype: torch.dtype) -> Levels:
    r"""``[N, H, C]`` -> per level ``[H, n, C]`` contiguous, in level order
    (one gather per level)."""
    head_major = t.to(dtype).transpose(0, 1)
    if layout.identity_order:
        return [piece.contiguous() for piece in
                torch.split(head_major, _level_sizes(layout), dim=1)]
    return [head_major.index_select(1, level.node_ids)
            for level in layout.levels]


def _level_sizes(layout: TreeLayout) -> List[int]:
    return [level.node_ids.size(0) for level in layout.levels]


def _from_levels(pieces: Levels, layout: TreeLayout) -> Tensor:
    r"""Per level ``[H, n, *]`` -> ``[N, H, *]`` in node order."""
    # One pass: cat writes the transposed views straight into node-major rows.
    out = torch.cat([piece.transpose(0, 1) for piece in pieces], dim=0)
    return out if layout.identity_order else out.index_select(0, layout.rank)


def _node_vector(values: Tensor, like: Tensor) -> Tensor:
    r"""A per-node ``[n]`` vector shaped to broadcast against ``like``."""
    shape = [1] * like.dim()
    shape[1] = -1
    return values.to(like.dtype).view(shape)


def _leaf_means_levels(values: Levels, layout: TreeLayout,
                       bottom_totals: Optional[Tensor] = None) -> Levels:
    r"""Step 1: mean of the leaf rows of :obj:`values` below every node.
    :obj:`bottom_totals`, when given, are the children totals of the
    next-to-last level, already summed by the fused leaf-level softmax."""
    sums: Levels = [None] * layout.num_levels
    means: Levels = [None] * layout.num_levels
    for depth in range(layout.num_levels - 1, -1, -1):
        level = layout.levels[depth]
        if level.leaf_kind == 'all':      # leaves: the mean is the row itself
            sums[depth] = means[depth] = values[depth]
            continue
        if bottom_totals is not None and depth == layout.num_levels - 2:
            total = bottom_totals
        else:
            total = children_sum(sums[depth + 1], layout, depth, dim=1)
        if level.leaf_kind == 'mixed':
            total = total + values[depth] * _node_vector(level.is_leaf, total)
        sums[depth] = total
        means[depth] = total / _node_vector(level.leaf_count, total)
    return means


def _level_positions(pos: Optional[Tensor], layout: TreeLayout,
                     dtype: torch.dtype) -> Optional[Levels]:
    if pos is None:
        return None
    if pos.dim() == 2:
        pos = pos.unsqueeze(1)                    # (N, 1, P)
    return _to_levels(pos, layout, dtype)         # per level (H|1, n, P)


def _gather_members(rows: Tensor, bucket: FamilyBucket) -> Tensor:
    r"""``[H, n, C]`` level rows -> ``[H * F, B, C]`` family blocks."""
    num_families, size = bucket.member_index.shape
    if bucket.contiguous_start is not None:
        start = bucket.contiguous_start
        block = rows[:, start:start + num_families * size]
    else:
        block = rows.index_select(1, bucket.member_index.flatten())
    return block.reshape(-1, size, rows.size(-1))


def _bucket_softmax(query: Tensor, key: Tensor, value: Optional[Tensor],
                    pos: Optional[Tensor], bucket: FamilyBucket, scale: float,
                    family_sums: bool = False) -> Tuple:
    r"""The sibling softmax of one bucket's families, from ``[H, n, *]``
    level rows: ``[H, F * B]`` masses, ``[H, F * B, Cv]`` mixtures, and with
    :obj:`family_sums` the ``[H, F, C]`` member sums of q, k and v."""
    heads = query.size(0)
    num_families, size = bucket.member_index.shape
    q = _gather_members(query, bucket)                  # (H*F, B, C)
    k = _gather_members(key, bucket)
    bias = bucket.sibling_mask.to(q.dtype).view(1, num_families, size, size)
    if pos is not None:
        p = _gather_members(pos, bucket)                # (H|1*F, B, P)
        bias = bias + torch.bmm(p, p.transpose(1, 2)).view(
            -1, num_families, size, size)
    v = None if value is None else _gather_members(value, bucket)
    mass, mixed, *sums = sibling_softmax(q, k, v, bias, scale, heads,
                                         family_sums)
    mass = mass.reshape(heads, -1)
    if mixed is not None:
        mixed = mixed.view(heads, -1, v.size(-1))
    sums = [None if t is None else t.view(heads, num_families, -1)
            for t in sums]
    return (mass, mixed, *sums)


def _fusable_bottom(layout: TreeLayout) -> bool:
    r"""Whether the deepest level is all leaves in one contiguous bucket
    whose families are exactly the children of the level above, in order:
    then the sibling softmax also sums the parents' totals (step 1)."""
    if layout.num_levels < 2:
        return False
    level, above = layout.levels[-1], layout.levels[-2]
    return (level.leaf_kind == 'all' and len(level.buckets) == 1 and
            level.family_slot is None and above.uniform_fanout)


def _family_softmax(mean_query: Levels, mean_key: Levels,
                    mean_value: Optional[Levels], pos: Optional[Levels],
                    layout: TreeLayout, scale: float,
                    bottom: Optional[Tuple[Tensor, Tensor]] = None
                    ) -> Tuple[Levels, Optional[Levels]]:
    r"""Step 2: for every node A with siblings,
    ``log_sibling_mass(A) = logsumexp_C s(A->C) + log n(C)`` and the
    softmax-weighted mean value of its siblings, per level: ``[H, n]``
    (``-inf`` without siblings) and ``[H, n, Cv]`` (``None`` for a level
    without siblings, zero rows for nodes without siblings)."""
    heads = mean_query[0].size(0)
    masses: Levels = []
    values: Optional[Levels] = [] if mean_value is not None else None
    for depth, level in enumerate(layout.levels):
        if bottom is not None and depth == layout.num_levels - 1:
            masses.append(bottom[0])       # computed by the fused leaf pass
            values.append(bottom[1])
            continue
        if not level.buckets:
            masses.append(mean_query[depth].new_full(
                (heads, level.node_ids.size(0)), -math.inf))
            if values is not None:
                values.append(None)
            continue
        level_masses, level_values = [], []
        for bucket in level.buckets:
            mass, mixed = _bucket_softmax(
                mean_query[depth], mean_key[depth],
                None if values is None else mean_value[depth],
                None if pos is None else pos[depth], bucket, scale)[:2]
            level_masses.append(mass)
            if values is not None:
                level_values.append(mixed)
        if level.family_slot is None:    # one contiguous bucket = the level
            masses.append(level_masses[0])
            if values is not None:
                values.append(level_values[0])
            continue
        level_masses.append(level_masses[0].new_full((heads, 1), -math.inf))
        masses.append(torch.cat(level_masses, dim=1).index_select(
            1, level.family_slot))
        if values is not None:
            first = level_values[0]
            level_values.append(first.new_zeros(heads, 1, first.size(-1)))
            values.append(torch.cat(level_values, dim=1).index_select(
                1, level.family_slot))
    return masses, values


def _free_energies(self_logit: Optional[Levels], log_sibling_mass: Levels,
                   layout: TreeLayout, include_self: bool
                   ) -> Tuple[Levels, Levels, Levels]:
    r"""Step 3, bottom-up: ``log_inner_mass(A) = -phi(A)`` and
    ``log_partition(A) = logaddexp(-phi(A), -eta(A))``.

    Infinite values are structural (a node whose subtree holds one leaf has
    ``-phi = -inf`` without self-attention; a node without siblings has
    ``-eta = -inf``), so they are handled with masks known from the layout
    and the arithmetic only ever sees finite numbers: no NaN, forward or
    backward. Returns per level ``[H, n]``: the masked ``-phi``, the masked
    ``-eta`` and ``logZ`` (zeros where infinite)."""
    inner_levels: Levels = [None] * layout.num_levels
    partition_levels: Levels = [None] * layout.num_levels
    sibling_levels: Levels = [None] * layout.num_levels
    for depth in range(layout.num_levels - 1, -1, -1):
        level = layout.levels[depth]
        mass = log_sibling_mass[depth]
        sib = level.has_siblings[None, :]
        mass = torch.where(sib, mass, torch.zeros_like(mass))
        if depth + 1 < layout.num_levels:
            below = layout.levels[depth + 1]
            weighted = partition_levels[depth + 1] * below.parent_weight.to(
                mass.dtype)[None, :]
            inner = children_sum(weighted, layout, depth, dim=1)
        else:
            inner = torch.zeros_like(mass)
        if self_logit is not None and level.leaf_kind != 'none':
            inner = torch.where(level.is_leaf[None, :], self_logit[depth],
                                inner)
        finite = _inner_finite(level, include_self)[None, :]
        inner = torch.where(finite, inner, torch.zeros_like(inner))
        partition = torch.where(finite & sib, torch.logaddexp(inner, mass),
                                torch.where(finite, inner, mass))
        # Where both masses are empty logZ = -inf; a parent only ever sums
        # such a child when its own -phi is -inf too, so 0 is a safe stand-in.
        partition = torch.where(finite | sib, partition,
                                torch.zeros_like(partition))
        inner_levels[depth], partition_levels[depth] = inner, partition
        sibling_levels[depth] = mass
    return inner_levels, sibling_levels, partition_levels


def _inner_finite(level, include_self: bool) -> Tensor:
    if include_self:
        return torch.ones_like(level.has_siblings)
    return level.leaf_count > 1


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


def _accumulate(out: Optional[Tensor], weight: Tensor, value: Tensor,
                owned: bool) -> Tensor:
    r"""``out + weight * value``, in place when :obj:`out` is owned."""
    if out is None:
        return weight * value
    if owned:
        return out.addcmul_(weight, value)
    return torch.addcmul(out, weight, value)


def _mixture_down(log_inner_mass: Levels, sibling_mass: Levels,
                  log_partition: Levels, sibling_value: Levels,
                  value_levels: Levels, layout: TreeLayout,
                  include_self: bool) -> Levels:
    r"""Step 4, top-down: ``u(A) = u(pa(A)) + log mu(A)`` and
    ``out(A) = out(pa(A)) + exp(u(pa(A)) + log(1 - mu(A))) * vt(A)``
    (plus ``exp(u(i)) * v_i`` for a leaf under :obj:`include_self`).
    Returns per level ``[H, n, Cv]``."""
    out_levels: Levels = []
    reach, out = None, None                  # u and out of the level above
    for depth, level in enumerate(layout.levels):
        partition = log_partition[depth]                      # (H, n)
        sib = level.has_siblings[None, :]
        minus_inf = torch.full_like(partition, -math.inf)
        finite = _inner_finite(level, include_self)[None, :]
        log_stay = torch.where(          # log mu(A); 0 without siblings
            sib, torch.where(finite, log_inner_mass[depth] - partition,
                             minus_inf), torch.zeros_like(partition))
        group = _as_is
        if depth == 0:
            reach_parent, out_parent = torch.zeros_like(partition), None
            owned = False
        elif layout.levels[depth - 1].uniform_fanout:
            # Work on [H, parents, fan-out, *] views: a parent's row is a
            # broadcast, so the largest level is written once, by the
            # accumulation itself, with no gathered copy (and a sum, not a
            # scatter, in backward).
            group = _family_blocks(reach.size(1))
            reach_parent = reach.unsqueeze(2)
            out_parent = None if out is None else out.unsqueeze(2)
            owned = False
        else:
            # A gathered parent row is a fresh tensor that nothing else
            # reads, so it is accumulated in place.
            reach_parent = reach.index_select(1, level.parent_local)
            out_parent = None if out is None else out.index_select(
                1, level.parent_local)
            owned = True
        reach = reach_parent + group(log_stay)
        out = out_parent
        if sibling_value[depth] is not None:
            log_leave = torch.where(sib, sibling_mass[depth] - partition,
                                    minus_inf)  # log(1 - mu(A))
            weight = torch.exp(reach_parent + group(log_leave)).unsqueeze(-1)
            out = _accumulate(out, weight, group(sibling_value[depth]), owned)
            owned = True
        if include_self and level.leaf_kind != 'none':
            weight = torch.exp(reach)
            if level.leaf_kind == 'mixed':
                weight = weight * group(level.is_leaf[None, :].to(
                    weight.dtype))
            out = _accumulate(out, weight.unsqueeze(-1),
                              group(value_levels[depth]), owned)
        shape = value_levels[depth].shape
        reach = reach.reshape(partition.shape)
        if out is None:
            out = value_levels[depth].new_zeros(shape)
        else:   # only-child levels leave the parents' rows as they are
            out = out.expand(group(value_levels[depth]).shape).reshape(shape)
        out_levels.append(out)
    return out_levels


def _as_is(t: Tensor) -> Tensor:
    return t


def _family_blocks(num_parents: int):
    r"""``[H, n, *]`` -> ``[H, parents, fan-out, *]`` views."""
    def group(t: Tensor) -> Tensor:
        return t.unflatten(1, (num_parents, -1))
    return group


def _self_logits(query: Levels, key: Levels, pos: Optional[Levels],
                 scale: float) -> Levels:
    r"""``q_i . k_i / sqrt(d) + eps_i . eps_i`` per level, ``[H, n]``."""
    logits = [(q * k).sum(-1) * scale for q, k in zip(query, key)]
    if pos is not None:
        logits = [logit + (p * p).sum(-1) for logit, p in zip(logits, pos)]
    return logits


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
    query_levels = _to_levels(query, layout, dtype)   # per level (n, H, C)
    key_levels = _to_levels(key, layout, dtype)
    value_levels = _to_levels(value, layout, dtype)   # per level (n, H, Cv)
    pos_levels = _level_positions(pos, layout, dtype)

    # The deepest level first when its families are the children of the
    # level above: its softmax node then also sums the parents' totals, so
    # the largest level's gradient is written once, not once per pass.
    bottom, totals = None, (None, None, None)
    if _fusable_bottom(layout):
        mass, mixed, *totals = _bucket_softmax(
            query_levels[-1], key_levels[-1], value_levels[-1],
            None if pos_levels is None else pos_levels[-1],
            layout.levels[-1].buckets[0], scale, family_sums=True)
        bottom = (mass, mixed)

    # 1. up: mean query, key and value of the leaves below every node.
    mean_query = _leaf_means_levels(query_levels, layout, totals[0])
    mean_key = _leaf_means_levels(key_levels, layout, totals[1])
    mean_value = _leaf_means_levels(value_levels, layout, totals[2])

    # 2. families: sibling softmax (-eta) and the sibling mixture (vt).
    log_sibling_mass, sibling_value = _family_softmax(
        mean_query, mean_key, mean_value, pos_levels, layout, scale, bottom)

    # 3. up: free energies -phi and logZ, level by level.
    self_logit = _self_logits(query_levels, key_levels, pos_levels, scale) \
        if include_self else None
    log_inner_mass, sibling_mass, log_partition = _free_energies(
        self_logit, log_sibling_mass, layout, include_self)

    # 4. down: the stick-breaking mixture, root to leaves.
    out_levels = _mixture_down(log_inner_mass, sibling_mass, log_partition,
                               sibling_value, value_levels, layout,
                               include_self)

    # Leaves keep their output; internal rows get the mean over their leaves.
    out_levels = _leaf_means_levels(out_levels, layout)
    return _from_levels(out_levels, layout).to(value.dtype)
