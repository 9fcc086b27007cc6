r"""The leaf level's down step as one autograd node: the sibling mixture and
the stick-breaking accumulation of step 4, fused.

When the deepest level is all leaves in families of one size that are the
children of the level above (balanced trees, full octree levels), step 4
there reads, for a leaf ``i`` of family ``F`` with parent ``P``:

.. math::
    \mathrm{out}_i = \mathrm{out}_P + \sum_{j \in F} M_{ij} v_j, \qquad
    M_{ij} = \mathrm{leave}_i \, w_{ij} + \delta_{ij} \, \mathrm{self}_i,

with ``w`` the sibling softmax, ``leave_i = exp(u(P) + log(1 - mu_i))`` and
``self_i = exp(u(i))`` (only with self-attention). ``M`` is a ``B x B``
matrix per family, so the whole level is one batched matmul that writes the
output once. Plain autograd would materialise the ``[H, n, C]`` mixture, the
product and the sum, and in backward as many gradients of that size; here
forward writes one such tensor and backward three (``d v`` and, through the
logit channel of :func:`~hsa_graph.functional.sibling_softmax.
sibling_softmax`, ``d q`` and ``d k`` once each). Every ``B x B`` tensor is
recomputed in backward rather than saved.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from .precision import bmm_buffered, bmm_stat
from .sibling_softmax import _logits

__all__ = ['family_mixture']


def _softmax_weights(query: Tensor, key: Tensor, bias: Tensor, mass: Tensor,
                     scale: float, heads: int) -> Tensor:
    r"""The sibling softmax ``(H, F, B, B)`` from the saved log masses."""
    return _logits(query, key, bias, scale, heads).sub_(
        mass.unsqueeze(-1)).exp_()


def _mixing(weights: Tensor, leave: Tensor,
            self_weight: Optional[Tensor]) -> Tensor:
    r"""``M = diag(leave) w + diag(self)``, ``(H, F, B, B)``."""
    mix = weights * leave.unsqueeze(-1)
    if self_weight is not None:
        mix.diagonal(dim1=-2, dim2=-1).add_(self_weight)
    return mix


class _FamilyMixture(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Tensor, bias: Tensor,
                mass: Tensor, channel: Tensor, leave: Tensor,
                self_weight: Optional[Tensor], parent_out: Optional[Tensor],
                scale: float, heads: int):
        size = query.size(1)
        mix = _mixing(_softmax_weights(query, key, bias, mass, scale, heads),
                      leave, self_weight).view(-1, size, size)
        mix_low = mix.to(value.dtype)    # see precision.py
        out = bmm_buffered(   # the parents' rows broadcast as the input
            mix_low, value, None if parent_out is None else
            parent_out.reshape(-1, 1, value.size(-1)))
        # The family totals of out (the parents' output sums), from B x B
        # numbers: sum_i out_i = B out_P + (1^T M) v.
        sums = torch.bmm(mix.sum(1, keepdim=True).to(value.dtype),
                         value).squeeze(1)
        if parent_out is not None:
            sums = sums.add_(parent_out.reshape(sums.shape), alpha=size)
        ctx.scale, ctx.heads = scale, heads
        ctx.has_self = self_weight is not None
        ctx.has_parent = parent_out is not None
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(query, key, value, bias, mass, leave,
                              self_weight)
        return out, sums

    @staticmethod
    def backward(ctx, grad_out: Optional[Tensor],
                 grad_sums: Optional[Tensor]):
        query, key, value, bias, mass, leave, self_weight = ctx.saved_tensors
        scale, heads = ctx.scale, ctx.heads
        nothing = (None,) * 11
        if grad_out is None and grad_sums is None:
            return nothing
        size = query.size(1)
        weights = _softmax_weights(query, key, bias, mass, scale, heads)
        mix = _mixing(weights, leave, self_weight).view(-1, size, size)
        value_t = value.transpose(1, 2)
        # out_i + its share of the family sum: dL/d out_i = g_i + s
        # (s = grad_sums), applied as rank-one updates, never materialised.
        grad_mix = grad_value = grad_parent = None
        if grad_out is not None:
            grad_mix = bmm_stat(grad_out, value_t, 1.0)          # (HF, B, B)
            grad_value = bmm_buffered(mix.transpose(1, 2).to(value.dtype),
                                      grad_out)
            grad_parent = grad_out.sum(1)
        if grad_sums is not None:
            row = bmm_stat(grad_sums.unsqueeze(1), value_t, 1.0)  # HF, 1, B
            grad_mix = row.expand(mix.shape) if grad_mix is None else \
                grad_mix.add_(row)
            column = mix.sum(1).unsqueeze(-1).to(value.dtype)    # (HF, B, 1)
            if grad_value is None:
                grad_value = torch.bmm(column, grad_sums.unsqueeze(1))
            else:
                grad_value = grad_value.baddbmm_(column,
                                                 grad_sums.unsqueeze(1))
            grad_parent = grad_sums * size if grad_parent is None else \
                grad_parent.add_(grad_sums, alpha=size)
        del mix       # B x B float32 tensors are a third of a level tensor
        grad_mix = grad_mix.reshape(weights.shape)               # (H, F, B, B)
        grad_leave = (grad_mix * weights).sum(-1)
        grad_self = grad_mix.diagonal(dim1=-2, dim2=-1) if ctx.has_self \
            else None
        # Back through the softmax: d logits = w * (d w - sum_j w d w).
        if torch.is_grad_enabled() or not grad_mix.is_contiguous():
            # double backward keeps every input; a broadcast row stays as is
            grad_weights = grad_mix * leave.unsqueeze(-1)
            centre = (grad_weights * weights).sum(-1, keepdim=True)
            grad_logits = weights * (grad_weights - centre)
        else:   # in place: one B x B tensor less alive per step
            if grad_self is not None:
                grad_self = grad_self.clone()
            grad_weights = grad_mix.mul_(leave.unsqueeze(-1))
            centre = (grad_weights * weights).sum(-1, keepdim=True)
            grad_logits = grad_weights.sub_(centre).mul_(weights)
        if ctx.has_parent:
            grad_parent = grad_parent.view(leave.shape[:2] + (-1, ))
        else:
            grad_parent = None
        return (None, None, grad_value, None, None, grad_logits, grad_leave,
                grad_self, grad_parent, None, None)


def family_mixture(query: Tensor, key: Tensor, value: Tensor, bias: Tensor,
                   mass: Tensor, channel: Tensor, leave: Tensor,
                   self_weight: Optional[Tensor],
                   parent_out: Optional[Tensor], scale: float,
                   heads: int) -> Tuple[Tensor, Tensor]:
    r"""Step 4 on a level whose families are its parents' children.

    Args:
        query, key: ``(H * F, B, C)`` family blocks (as given to
            :func:`~hsa_graph.functional.sibling_softmax.sibling_softmax`).
        value: ``(H * F, B, Cv)``.
        bias: ``(H | 1, F, B, B)`` the same additive logits.
        mass: ``(H, F, B)`` log sibling masses from that softmax, used as
            a cache: the weights' dependence on the logits is differentiated
            in full here and returned through :obj:`channel`, so no gradient
            is returned for them. (They stay tracked so that double
            backward sees the backward formula's dependence on them.)
        channel: the softmax's logit channel.
        leave: ``(H, F, B)`` weight of the sibling mixture per member.
        self_weight: ``(H, F, B)`` weight of a member's own value, or
            :obj:`None` without self-attention.
        parent_out: ``(H, F, Cv)`` the parents' outputs, or :obj:`None`
            (zero).
        scale, heads: as for the softmax.

    Returns:
        ``(H * F, B, Cv)`` outputs and ``(H * F, Cv)`` their family sums.
    """
    return _FamilyMixture.apply(query, key, value, bias, mass,
                                channel, leave, self_weight, parent_out,
                                scale, heads)
