r"""`hsa_attention`: the exact HSA dynamic program, read top to bottom.

The four steps of ../shared/spec/HSA.md section 4, level by level on a
:class:`~hsa_graph.layout.TreeLayout` (``layout.py``):

1. up:       mean query, key and value of the leaves below every node;
2. families: masked softmax among siblings, one ``[B, B]`` block per family;
3. up:       free energies, then the stick-breaking factors;
4. down:     the stick-breaking mixture, root to leaves.

Per-level tensors are head-major ``[H, S, C]``; the sibling softmax is two
``bmm`` per family block ``[H * F, B, C]``: a free view of a padded level, a
gather per size class of a packed one. Every step is the same plain tensor
code on every device, eager or compiled, with no host synchronisation.

Spec names -> code names: ``-eta`` -> ``log_sibling_mass``, ``-phi`` ->
``log_inner_mass``, ``logZ`` -> ``log_partition``, ``mu`` -> ``stay``,
``1 - mu`` -> ``leave``, ``prod mu`` -> ``reach``, ``vt`` -> ``sibling_value``.
"""
from __future__ import annotations

import math
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ..layout import (NO_KEY, FamilyBlock, LevelLayout, TreeLayout,
                      attention_dtype, tree_layout)
from ._levels import (GatherPieces, add_to_parents, as_families, as_slots,
                      families_to_nodes, from_parents, per_slot, read_levels,
                      subtree_sums, to_nodes)

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
    dtype = _compute_dtype(query, key, value)
    layout = _resolve_layout(query, edge_index, num_nodes, layout, dtype)
    heads = query.size(1)
    leaf_qkv, sibling_value, _, stay, leave = _up(
        query, key, value, pos, layout, dtype, include_self, top=1)

    # 4. down: out(A) = out(pa) + reach(pa) * (1 - mu(A)) * vt(A), with
    # reach(A) = reach(pa) * mu(A) the mass that reaches A from the root;
    # None stands for the roots' reach 1 and out 0.
    out_levels: List[Optional[Tensor]] = []
    reach = out = None
    for depth, level in enumerate(layout.levels):
        if depth > 0:
            reach, out = _descend(
                reach, out, stay[depth], leave[depth], sibling_value[depth],
                level, include_self or depth + 1 < layout.num_levels)
        if include_self:                          # theta_ii = reach(i)
            own = leaf_qkv[depth][2 * heads:]                # 0 off leaves
            own = own if reach is None else own * reach
            out = own if out is None else out + own
        out_levels.append(out)

    # Leaves keep their output; internal rows get the mean over their leaves.
    leaf_out = [None if o is None else o * per_slot(level.leaf, o)
                for o, level in zip(out_levels, layout.levels)]
    if leaf_out[-1] is None:                   # one level, nothing to attend
        leaf_out[-1] = torch.zeros_like(leaf_qkv[-1][2 * heads:])
    out = families_to_nodes(_means(subtree_sums(leaf_out, layout), layout),
                            layout)
    return out[..., :value.size(-1)].to(value.dtype)


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
    dtype = _compute_dtype(query, key)
    layout = _resolve_layout(query, edge_index, num_nodes, layout, dtype)
    inner = _up(query, key, None, pos, layout, dtype, include_self, top=0)[2]
    inner = to_nodes(inner, layout).to(query.dtype)
    if include_self:
        return inner
    # -phi of a one-leaf subtree is NO_INNER here: minus infinity.
    return inner.masked_fill(layout.leaf_count.unsqueeze(1) < 2, -math.inf)


# -- the steps ---------------------------------------------------------------

def _up(query: Tensor, key: Tensor, value: Optional[Tensor],
        pos: Optional[Tensor], layout: TreeLayout, dtype: torch.dtype,
        include_self: bool, top: int):
    r"""Steps 1 to 3 (shared by :func:`hsa_attention` and
    :func:`hsa_log_partition`): the leaf reads ``[2H | 3H, S, C]``, and per
    level the sibling mixtures, ``-phi`` (down to level :obj:`top`), ``mu``
    and ``1 - mu``."""
    heads, scale = query.size(1), 1.0 / math.sqrt(query.size(-1))

    # 1. up: mean query, key and value of the leaves below every slot, read
    # as 3H heads of one [N, 3H, C] tensor (one gather, one sum per level).
    leaves = read_levels(_parts(query, key, value, dtype), layout)
    # (Not at the roots: they have no siblings.)
    means = _means(subtree_sums(leaves, layout, top=1), layout)
    pos_levels = _read_pos(pos, layout, dtype)

    # 2. families: sibling softmax (-eta) and sibling mixture (vt).
    log_sibling_mass, sibling_value = zip(*(
        _sibling_softmax(mean, p, level, heads, scale)
        for mean, p, level in zip(means, pos_levels, layout.levels)))

    # 3. up: free energies -phi and logZ, then mu and 1 - mu per slot.
    base = _self_logits(leaves, pos_levels, layout, heads, scale) \
        if include_self else None
    inner, stay, leave = _free_energies(base, log_sibling_mass, layout,
                                        heads, dtype, top)
    return leaves, sibling_value, inner, stay, leave


def _parts(query: Tensor, key: Tensor, value: Optional[Tensor],
           dtype: torch.dtype) -> List[Tensor]:
    r"""Query, key (and value) in :obj:`dtype`, read as ``2H | 3H`` heads of
    one tensor, each ``[H, S, C']`` plane contiguous for ``bmm``. Zero
    channels pad the narrower of query/key and value to a common width
    ``C'`` (exact: they add nothing to a dot product, and the output's extra
    channels are dropped)."""
    parts = [query, key] + ([] if value is None else [value])
    width = max(t.size(-1) for t in parts)
    return [(t if t.size(-1) == width else torch.nn.functional.pad(
        t, (0, width - t.size(-1)))).to(dtype) for t in parts]


def _means(sums: List[Optional[Tensor]],
           layout: TreeLayout) -> List[Optional[Tensor]]:
    r"""Subtree sums -> means, both in the levels' :func:`as_families` form
    (the deepest level holds only leaves)."""
    last = layout.num_levels - 1
    return [t / per_slot(level.count, t, level)
            if depth < last and t is not None else t
            for depth, (t, level) in enumerate(zip(sums, layout.levels))]


def _read_pos(pos: Optional[Tensor], layout: TreeLayout,
              dtype: torch.dtype) -> List[Optional[Tensor]]:
    r"""Per level ``[H | 1, S, P]`` sibling positions (every node's row),
    or :obj:`None` per level without positions."""
    if pos is None:
        return [None] * layout.num_levels
    pos = pos.unsqueeze(1) if pos.dim() == 2 else pos       # (N, H | 1, P)
    return read_levels([pos.to(dtype)], layout, leaves_only=False)


def _sibling_softmax(mean: Tensor, pos: Optional[Tensor], level: LevelLayout,
                     heads: int, scale: float
                     ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    r"""Step 2 for one level, from its mean query, key (and value), ``[2H |
    3H, S, C]`` in :func:`as_families` form: ``[H, S]`` log sibling masses
    ``-eta(A) = logsumexp_C s(A->C) + log n(C)`` and ``[H, S, C]`` sibling
    mixtures ``vt(A)`` (:obj:`None` without values); ``(None, None)`` for a
    level where no node has a sibling. Each size class of families is one
    block; a node without siblings gets ``-eta = NO_KEY`` and ``vt = 0``
    (the filler row)."""
    if not level.blocks:
        return None, None
    means, pos = [mean], [pos]
    if not level.padded:                      # each size class gathered
        sizes = [b.num_families * b.family_size for b in level.blocks]
        means = GatherPieces.apply(mean, 1, level.block_slot, sizes)
        pos = pos * len(sizes) if pos[0] is None else \
            GatherPieces.apply(pos[0], 1, level.block_slot, sizes)
    results = [_block_softmax(m, p, block, heads, scale)
               for m, p, block in zip(means, pos, level.blocks)]
    if level.unpad is None:              # one block: the level in order
        return results[0]
    # Blocks flattened and laid end to end (so that their gradients come back
    # as contiguous chunks for bmm), then each slot's row, head by head.
    position, start, size = level.unpad
    rows = torch.addcmul(torch.add(position, start, alpha=heads - 1),
                         torch.arange(heads, device=position.device
                                      ).unsqueeze(1), size).flatten()
    mass, mixed = zip(*results)
    mass = torch.cat([m.flatten() for m in mass] + [
        mass[0].new_full((1, ), NO_KEY)]).index_select(0, rows)
    if mixed[0] is None:                                  # no values
        return mass.view(heads, -1), None
    mixed = torch.cat([m.flatten(0, 1) for m in mixed] + [
        mixed[0].new_zeros((1, mixed[0].size(-1)))]).index_select(0, rows)
    return mass.view(heads, -1), mixed.view(heads, -1, mixed.size(-1))


def _block_softmax(mean: Tensor, pos: Optional[Tensor], block: FamilyBlock,
                   heads: int, scale: float
                   ) -> Tuple[Tensor, Optional[Tensor]]:
    r"""The sibling softmax of one block of families, from its mean query,
    key (, value) and positions: ``[H, F * B]`` masses and ``[H, F * B,
    C]`` mixtures (padding rows are dropped later)."""
    size = block.family_size
    bias = block.key_bias.to(mean.dtype)               # (F, 1, B): log n(C)
    if pos is not None:                                # + eps_A . eps_C
        p = pos.reshape(-1, size, pos.size(-1))
        bias = bias + torch.bmm(p, p.transpose(1, 2)).view(
            -1, block.num_families, size, size)
    mass, mixed = _SiblingSoftmax.apply(mean, bias, scale, heads,
                                        block.num_families, size)
    return mass.flatten(1), None if mixed is None else mixed.flatten(1, 2)


class _SiblingSoftmax(torch.autograd.Function):
    r"""Masked softmax among siblings, from a block's mean query, key (,
    value) (``[2H | 3H, F * B, C]``, or a padded level's ``[2H | 3H, F, B,
    C]`` family view: taken as it is and viewed inside, so that its gradient
    is a tensor autograd can add into, not a view): ``(logsumexp, softmax @
    v)``. It saves the ``[H, F, B, B]`` weights alone (written over the
    logits): autograd would also keep the logits, and logsumexp's and the
    bias's copies."""

    @staticmethod
    def forward(ctx, mean, bias, scale, heads, families, size):
        qkv = mean.view(-1, heads, families, size, mean.size(-1))
        channels = qkv.size(-1)
        q, k = (t.reshape(-1, size, channels) for t in qkv[:2])
        logits = torch.baddbmm(
            bias.expand(heads, families, -1, size).contiguous().view(
                heads * families, -1, size),     # (H * F, 1 | B, B), small
            q, k.transpose(1, 2), alpha=scale)
        # A is no sibling of A. -1e32 is layout.NO_KEY, written out: a global
        # read inside an autograd.Function trips dynamo (torch 2.13).
        logits.diagonal(0, -2, -1).fill_(-1e32)
        top = logits.amax(-1, keepdim=True)
        weights = logits.sub_(top).exp_()                  # (H * F, B, B)
        total = weights.sum(-1, keepdim=True)
        weights.div_(total)
        mass = total.log_().add_(top)                      # logsumexp
        mixed = None
        if qkv.size(0) == 3:
            mixed = torch.bmm(weights, qkv[2].reshape(-1, size, channels))
            mixed = mixed.view(heads, families, size, channels)
        ctx.save_for_backward(mean, weights)
        ctx.scale, ctx.bias_shape = scale, bias.shape
        ctx.blocks = qkv.shape
        return mass.view(heads, families, size), mixed

    @staticmethod
    @once_differentiable            # double backward raises a clear error
    def backward(ctx, grad_mass, grad_mixed):
        mean, weights = ctx.saved_tensors
        qkv = mean.view(ctx.blocks)
        size, channels = qkv.size(3), qkv.size(4)
        parts = [t.reshape(-1, size, channels) for t in qkv.unbind(0)]
        q, k, v = parts[0], parts[1], parts[2] if len(parts) == 3 else None
        # Each part's gradient is written into its plane (no concatenation)
        # of one tensor shaped as the input, returned as it is.
        grad_mean = mean.new_empty(mean.shape)
        grad = grad_mean.view(ctx.blocks)      # contiguous planes
        grad_q, grad_k = (t.view(-1, size, channels) for t in grad[:2])
        grad_logits = None
        if v is not None:
            grad_v = grad[2].view(-1, size, channels)
            if grad_mixed is None:
                grad_v.zero_()
            else:
                g = grad_mixed.reshape(-1, size, channels)
                torch.bmm(weights.transpose(1, 2), g, out=grad_v)
                grad_logits = torch._softmax_backward_data(
                    torch.bmm(g, v.transpose(1, 2)), weights, -1,
                    weights.dtype)
        if grad_mass is not None:                # d logsumexp = softmax
            grad_mass = grad_mass.reshape(-1, size, 1)
            grad_logits = weights * grad_mass if grad_logits is None \
                else grad_logits.addcmul_(weights, grad_mass)
        if grad_logits is None:
            grad_logits = torch.zeros_like(weights)
        grad_bias = None
        if ctx.needs_input_grad[1]:           # positions: bias = eps . eps
            grad_bias = grad_logits.view(qkv.shape[1:3] + (size, size)) \
                .sum_to_size(ctx.bias_shape)
        # scale * (grad_logits @ k), into the (uninitialised: beta=0) plane.
        grad_q.baddbmm_(grad_logits, k, beta=0, alpha=ctx.scale)
        grad_k.baddbmm_(grad_logits.transpose(1, 2), q, beta=0,
                        alpha=ctx.scale)
        return grad_mean, grad_bias, None, None, None, None


def _free_energies(base: Optional[List[Tensor]],
                   log_sibling_mass: List[Optional[Tensor]],
                   layout: TreeLayout, heads: int, dtype: torch.dtype,
                   top: int) -> Tuple[List[Tensor], List[Optional[Tensor]],
                              List[Optional[Tensor]]]:
    r"""Step 3, bottom-up from the deepest level to level :obj:`top`, per
    level ``[H, S]``: ``-phi(A)`` (:obj:`base`, the leaves' self logits, or
    the layout's ``inner_base`` without self-attention, plus an inner node's
    sum of its children's ``n(B) / n(A) logZ(B)``), ``logZ(A) =
    logaddexp(-phi(A), -eta(A))``, and the stick-breaking factors
    ``mu(A) = exp(-phi - logZ)`` (stay) and ``1 - mu(A) = exp(-eta - logZ)``
    (leave) as ``[H, S, 1]`` (:obj:`None` on a level of only children:
    ``mu = 1``).

    No masks: the layout's stand-ins for minus infinity (``NO_INNER`` for
    the ``-phi`` of a one-leaf subtree without self-attention, ``NO_KEY``
    for a missing key, so that ``-eta`` of a node without siblings is about
    ``NO_KEY``) make ``mu`` and ``1 - mu`` come out exactly 0 or 1 where the
    paper's are, with no infinity anywhere (no NaN, forward or backward)."""
    levels = layout.levels
    inner: List[Optional[Tensor]] = [None] * layout.num_levels
    stay: List[Optional[Tensor]] = [None] * layout.num_levels
    leave: List[Optional[Tensor]] = [None] * layout.num_levels
    log_z = None
    for depth in range(layout.num_levels - 1, top - 1, -1):
        level = levels[depth]
        phi = base[depth] if base is not None else \
            level.inner_base.to(dtype).expand(heads, -1)
        if log_z is not None:                    # + the children's logZ
            below = levels[depth + 1]
            # (contiguous: inductor gets index_add on an expanded tensor
            # wrong, torch 2.13)
            log_z = as_families(log_z, below)
            phi = add_to_parents(phi.contiguous(), log_z * per_slot(
                below.child_weight, log_z, below), below)
        mass = log_sibling_mass[depth]
        log_z = phi
        if mass is not None:
            log_z, mu, one_minus_mu = _StickBreaking.apply(phi, mass)
            stay[depth] = mu.unsqueeze(-1)
            leave[depth] = one_minus_mu.unsqueeze(-1)
        inner[depth] = phi
    return inner, stay, leave


class _StickBreaking(torch.autograd.Function):
    r"""``logZ = logaddexp(-phi, -eta)``, ``mu = exp(-phi - logZ)`` and
    ``1 - mu``, from ``[H, S]`` ``-phi`` and ``-eta``. It saves ``mu`` and
    ``1 - mu`` alone: autograd would keep ``-phi``, ``-eta`` and ``logZ``
    too (and take about 16 operations to differentiate, here 5)."""

    @staticmethod
    def forward(ctx, phi, mass):
        log_z = torch.logaddexp(phi, mass)
        stay = (phi - log_z).exp_()
        leave = 1 - stay        # exact where it matters: 0 and 1 stay so
        ctx.save_for_backward(stay, leave)
        ctx.set_materialize_grads(False)
        return log_z, stay, leave

    @staticmethod
    @once_differentiable            # double backward raises a clear error
    def backward(ctx, grad_log_z, grad_stay, grad_leave):
        # d logZ = mu d(-phi) + (1 - mu) d(-eta);
        # d mu = -d(1 - mu) = mu (1 - mu) (d(-phi) - d(-eta)).
        # The two gradients sum to grad logZ (mu + 1 - mu = 1).
        stay, leave = ctx.saved_tensors
        grad_phi = None
        if grad_stay is not None or grad_leave is not None:
            grad = grad_leave.neg() if grad_stay is None else grad_stay \
                if grad_leave is None else grad_stay - grad_leave
            grad_phi = grad * stay * leave
        if grad_log_z is None:
            return grad_phi, None if grad_phi is None else grad_phi.neg()
        grad_phi = grad_log_z * stay if grad_phi is None else \
            torch.addcmul(grad_phi, grad_log_z, stay)
        return grad_phi, grad_log_z - grad_phi


def _descend(reach: Optional[Tensor], out: Optional[Tensor],
             stay: Optional[Tensor], leave: Optional[Tensor],
             mixed: Optional[Tensor], level: LevelLayout, need_reach: bool
             ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    r"""Step 4 for one level: its slots' ``[H, S, 1]`` reach (if
    :obj:`need_reach`) and ``[H, S, Cv]`` output from their parents'
    (:obj:`None`: reach 1, out 0, not materialised)."""
    reach_parent = None if reach is None else from_parents(reach, level)
    out_parent = None if out is None else from_parents(out, level)
    if stay is None:                             # only children: pass on
        return tuple(None if t is None else as_slots(t, level)
                     for t in (reach_parent, out_parent))
    stay, leave, mixed = (as_families(t, level) for t in (stay, leave, mixed))
    reach = stay if need_reach else None
    if reach_parent is not None:
        leave = reach_parent * leave
        reach = None if reach is None else reach_parent * reach
    out = leave * mixed if out_parent is None else \
        torch.addcmul(out_parent, leave, mixed)
    return None if reach is None else as_slots(reach, level), \
        as_slots(out, level)


def _self_logits(leaf_qk: List[Tensor], pos: List[Optional[Tensor]],
                 layout: TreeLayout, heads: int, scale: float) -> List[Tensor]:
    r"""``q_i . k_i / sqrt(d) + eps_i . eps_i`` per level, ``[H, S]``, 0 off
    the leaves (their query and key rows are zeros), from the ``[2H | 3H, S,
    C]`` leaf reads."""
    logits = []
    for t, p, level in zip(leaf_qk, pos, layout.levels):
        q, k = t[:heads], t[heads:2 * heads]
        logit = (q * k).sum(-1) * scale
        if p is not None:
            logit = logit + p.square().sum(-1) * per_slot(level.leaf, logit)
        logits.append(logit)
    return logits


# -- helpers -----------------------------------------------------------------

def _compute_dtype(*tensors: Tensor) -> torch.dtype:
    dtype = tensors[0].dtype
    for t in tensors[1:]:      # (promote_types is an ATen call: only if needed)
        dtype = dtype if t.dtype == dtype else torch.promote_types(dtype,
                                                                    t.dtype)
    return attention_dtype(dtype)


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
                    num_nodes: Optional[int], layout: Optional[TreeLayout],
                    dtype: torch.dtype) -> TreeLayout:
    if layout is None:
        if edge_index is None:
            raise ValueError('Pass either edge_index or layout')
        if num_nodes is None:
            num_nodes = query.size(0)
        layout = tree_layout(edge_index, num_nodes, device=query.device,
                             dtype=dtype)
    if torch.finfo(layout.dtype).eps > torch.finfo(dtype).eps:
        warnings.warn(f'The layout stores its weights in {layout.dtype} but '
                      f'the attention computes in {dtype}: log n(C) and '
                      f'n(B)/n(A) enter in {layout.dtype} precision. Build it '
                      f'with tree_layout(..., dtype={dtype}) or '
                      f'DataLoader(..., layout_dtype={dtype}).')
    # Read off a tensor (not the int) so that dynamic shapes stay symbolic.
    if layout.node_slot.size(0) != query.size(0):
        raise ValueError(f'query has {query.size(0)} rows but the hierarchy '
                         f'has {layout.num_nodes} nodes')
    return layout
