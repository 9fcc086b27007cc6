r"""Steps 2-4 of the HSA dynamic program (see ``attention.py``): the
sibling softmax per family bucket, the free energies bottom-up, and the
stick-breaking mixture top-down."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ..layout import FamilyBucket, TreeLayout
from .family_mixture import family_mixture
from .levels import Levels, _gather_level_members, _gather_members
from .passes import children_sum
from .precision import bmm_stat, stat_dtype
from .sibling_softmax import sibling_softmax


class LeafFamilies(NamedTuple):
    r"""What the fused leaf mixture (step 4 on the deepest level) reuses
    from that level's sibling softmax (step 2)."""
    query: Tensor           # (H * F, B, C)
    key: Tensor
    value: Tensor           # (H * F, B, Cv)
    bias: Tensor            # (H | 1, F, B, B)
    mass: Tensor            # (H, F, B)
    channel: Tensor         # the softmax's logit channel
    scale: float


def _bucket_softmax(query: Tensor, key: Tensor, value: Optional[Tensor],
                    pos: Optional[Tensor], bucket: FamilyBucket, scale: float,
                    family_sums: bool = False, fused_down: bool = False,
                    gathered: bool = False) -> Tuple:
    r"""The sibling softmax of one bucket's families, from ``[H, n, *]``
    level rows (or, with :obj:`gathered`, their ``[H * F, B, *]`` family
    blocks): ``[H, F * B]`` masses, ``[H, F * B, Cv]`` mixtures, and with
    :obj:`family_sums` the ``[H, F, C]`` member sums of q, k and v. With
    :obj:`fused_down` the mixture is left to :func:`family_mixture` (step
    4) and a :class:`LeafFamilies` is returned last."""
    num_families, size = bucket.member_index.shape
    if not gathered:
        query, key, value, pos = (
            None if t is None else _gather_members(t, bucket)
            for t in (query, key, value, pos))
    q, k, v, p = query, key, value, pos                 # (H*F, B, *)
    heads = q.size(0) // num_families
    bias = bucket.sibling_mask.to(stat_dtype(q.dtype)).view(
        1, num_families, size, size)
    if p is not None:
        bias = bias + torch.bmm(p, p.transpose(1, 2)).view(
            -1, num_families, size, size)
    mass, mixed, *sums = sibling_softmax(
        q, k, v, bias, scale, heads, family_sums, mixture=not fused_down,
        logit_channel=fused_down)
    leaf = None
    if fused_down:   # the mixer reads v through the softmax (see there)
        leaf = LeafFamilies(q, k, mixed, bias, mass, sums.pop(), scale)
        mixed = None
    flat_mass = mass.reshape(heads, -1)
    if mixed is not None:
        mixed = mixed.view(heads, -1, v.size(-1))
    sums = [None if t is None else t.view(heads, num_families, -1)
            for t in sums]
    return (flat_mass, mixed, *sums) + ((leaf, ) if fused_down else ())


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
                    bottom_mass: Optional[Tensor] = None
                    ) -> Tuple[Levels, Optional[Levels]]:
    r"""Step 2: for every node A with siblings,
    ``log_sibling_mass(A) = logsumexp_C s(A->C) + log n(C)`` and the
    softmax-weighted mean value of its siblings, per level: ``[H, n]``
    (``-inf`` without siblings) and ``[H, n, Cv]`` (``None`` for a level
    without siblings, zero rows for nodes without siblings).
    :obj:`bottom_mass` is the fused deepest level's mass (its mixture is
    left to step 4's :func:`family_mixture`: value ``None``)."""
    heads = mean_query[0].size(0)
    masses: Levels = []
    values: Optional[Levels] = [] if mean_value is not None else None
    for depth, level in enumerate(layout.levels):
        if bottom_mass is not None and depth == layout.num_levels - 1:
            masses.append(bottom_mass)     # computed by the fused leaf pass
            values.append(None)
            continue
        if not level.buckets:
            masses.append(mean_query[depth].new_full(
                (heads, level.node_ids.size(0)), -math.inf,
                dtype=stat_dtype(mean_query[depth].dtype)))
            if values is not None:
                values.append(None)
            continue
        level_masses, level_values = [], []
        blocks = zip(*(_gather_level_members(rows, level.buckets) for rows in (
            mean_query[depth], mean_key[depth],
            None if values is None else mean_value[depth],
            None if pos is None else pos[depth])))
        for bucket, (q, k, v, p) in zip(level.buckets, blocks):
            mass, mixed = _bucket_softmax(q, k, v, p, bucket, scale,
                                          gathered=True)[:2]
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


def _accumulate(out: Optional[Tensor], weight: Tensor, value: Tensor,
                owned: bool) -> Tensor:
    r"""``out + weight * value`` (``weight`` ends in a size-1 channel
    dimension), in place when :obj:`out` is owned."""
    weight = weight.to(value.dtype)  # a float32 weight would promote the sum
    if out is None:
        return weight * value
    if torch.compiler.is_compiling():     # Inductor fuses the plain ops
        return out.addcmul_(weight, value) if owned else \
            torch.addcmul(out, weight, value)
    return _AddWeighted.apply(out, weight, value, owned)


class _AddWeighted(torch.autograd.Function):
    r"""``out + weight * value`` whose backward writes one value-sized
    tensor (``d value``): ``addcmul``'s backward also materialises
    ``value * 1`` and ``grad * value`` before reducing the weight's
    gradient, two more level-sized tensors; here that reduction is a
    batched dot product."""
    @staticmethod
    def forward(ctx, out: Tensor, weight: Tensor, value: Tensor,
                inplace: bool):
        ctx.save_for_backward(weight, value)
        ctx.out_shape = out.shape
        if inplace:
            ctx.mark_dirty(out)
            return out.addcmul_(weight, value)
        return torch.addcmul(out, weight, value)

    @staticmethod
    def backward(ctx, grad: Tensor):
        weight, value = ctx.saved_tensors
        grad_out = grad_weight = grad_value = None
        if ctx.needs_input_grad[0]:
            grad_out = grad.sum_to_size(ctx.out_shape)
        if ctx.needs_input_grad[1]:
            channels = value.size(-1)
            full = torch.broadcast_shapes(grad.shape, value.shape)
            dots = torch.bmm(grad.expand(full).reshape(-1, 1, channels),
                             value.expand(full).reshape(-1, channels, 1))
            grad_weight = dots.view(full[:-1] + (1, )).sum_to_size(
                weight.shape)
        if ctx.needs_input_grad[2]:
            grad_value = (grad * weight).sum_to_size(value.shape)
        return grad_out, grad_weight, grad_value, None


def _mixture_down(log_inner_mass: Levels, sibling_mass: Levels,
                  log_partition: Levels, sibling_value: Levels,
                  value_levels: Levels, layout: TreeLayout,
                  include_self: bool,
                  leaf: Optional[LeafFamilies] = None
                  ) -> Tuple[Levels, Optional[Tensor]]:
    r"""Step 4, top-down: ``u(A) = u(pa(A)) + log mu(A)`` and
    ``out(A) = out(pa(A)) + exp(u(pa(A)) + log(1 - mu(A))) * vt(A)``
    (plus ``exp(u(i)) * v_i`` for a leaf under :obj:`include_self`).
    Returns per level ``[H, n, Cv]`` and, when :obj:`leaf` fuses the
    deepest level, the ``[H, P, Cv]`` sums of its outputs per parent."""
    out_levels: Levels = []
    reach, out = None, None                  # u and out of the level above
    for depth, level in enumerate(layout.levels):
        if leaf is not None and depth == layout.num_levels - 1:
            out, totals = _leaf_mixture_down(
                leaf, reach, out, log_inner_mass[depth], sibling_mass[depth],
                log_partition[depth], include_self)
            out_levels.append(out)
            return out_levels, totals
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
        elif layout.levels[depth - 1].uniform_fanout or \
                layout.levels[depth - 1].node_ids.size(0) == 1:
            # Work on [H, parents, fan-out, *] views: a parent's row is a
            # broadcast, so the largest level is written once, by the
            # accumulation itself, with no gathered copy (and a sum, not a
            # scatter, in backward). A lone parent (one tree's root) is
            # such a level too; its gather's backward, a scatter into one
            # row, is what Inductor's CPU backend fails to generate.
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
    return out_levels, None


def _leaf_mixture_down(leaf: LeafFamilies, reach: Tensor,
                       out: Optional[Tensor], log_inner_mass: Tensor,
                       sibling_mass: Tensor, partition: Tensor,
                       include_self: bool) -> Tuple[Tensor, Tensor]:
    r"""Step 4 on a fusable deepest level (every node a leaf with siblings,
    families = the children of the level above): the stick-breaking
    weights per member, then one :func:`family_mixture` node."""
    heads, num_parents = reach.shape
    group = _family_blocks(num_parents)
    reach_parent = reach.unsqueeze(2)                        # (H, P, 1)
    leave = torch.exp(reach_parent + group(sibling_mass - partition))
    self_weight = None
    if include_self:   # log mu = -phi - logZ (every leaf has siblings)
        self_weight = torch.exp(reach_parent +
                                group(log_inner_mass - partition))
    mixed, totals = family_mixture(
        leaf.query, leaf.key, leaf.value, leaf.bias, leaf.mass, leaf.channel,
        leave, self_weight, out, leaf.scale, heads)
    return (mixed.view(heads, -1, mixed.size(-1)),
            totals.view(heads, num_parents, -1))


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
    def logit(q: Tensor, k: Tensor) -> Tensor:
        if stat_dtype(q.dtype) == q.dtype:
            return (q * k).sum(-1) * scale
        # half precision: float32 dot products (precision.py)
        return bmm_stat(q.reshape(-1, 1, q.size(-1)),
                        k.reshape(-1, k.size(-1), 1), scale).view(q.shape[:2])
    logits = [logit(q, k) for q, k in zip(query, key)]
    if pos is not None:
        logits = [logit + (p * p).sum(-1) for logit, p in zip(logits, pos)]
    return logits
