r"""The per-family sibling softmax as one autograd node that saves no
``b x b`` tensor.

For families stacked as ``(H * F, B, C)`` blocks it returns the log sibling
mass ``logsumexp_j (s_ij + bias_ij)`` and, given values, the softmax mixture
``sum_j w_ij v_j``. Plain autograd would keep the logits, the weights and
their intermediates (several ``[H, F, B, B]`` tensors per level) alive until
backward; here backward recomputes the logits from the saved ``q`` and ``k``
(one small ``bmm``), so the saved state is the inputs and the ``[H, F, B]``
masses: memory stays linear in the number of nodes whatever the family size.
Backward is written in differentiable torch ops, so double backward works.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ['sibling_softmax']


def _logits(query: Tensor, key: Tensor, bias: Tensor, scale: float,
            heads: int) -> Tensor:
    size = query.size(1)
    logits = _scaled_bmm(query, key.transpose(1, 2), scale)
    return logits.view(heads, -1, size, size).add_(bias)   # (H, F, B, B)


def _scaled_bmm(left: Tensor, right: Tensor, scale: float) -> Tensor:
    # scale * (left @ right) in one kernel (beta=0 ignores the input).
    out = left.new_empty(left.size(0), left.size(1), right.size(2))
    return torch.baddbmm(out, left, right, beta=0.0, alpha=scale)


def _plus_broadcast(out: Optional[Tensor], family_grad: Optional[Tensor],
                    like: Tensor) -> Optional[Tensor]:
    r"""``out + family_grad`` broadcast over each family's members."""
    if family_grad is None:
        return out
    family_grad = family_grad.unsqueeze(1)              # (H*F, 1, C)
    if out is None:
        return family_grad.expand(like.shape)
    return out.add_(family_grad)


class _SiblingSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Optional[Tensor],
                bias: Tensor, scale: float, heads: int, family_sums: bool):
        logits = _logits(query, key, bias, scale, heads)
        mass = torch.logsumexp(logits, dim=-1)           # (H, F, B)
        ctx.scale, ctx.heads = scale, heads
        ctx.save_for_backward(query, key, value, bias, mass)
        sums = (None, None, None)
        if family_sums:
            sums = tuple(None if t is None else t.sum(1)
                         for t in (query, key, value))
        if value is None:
            return (mass, None) + sums
        weights = logits.sub_(mass.unsqueeze(-1)).exp_()
        size = query.size(1)
        mixed = torch.bmm(weights.view(-1, size, size), value)
        return (mass, mixed) + sums

    @staticmethod
    def backward(ctx, grad_mass: Optional[Tensor],
                 grad_mixed: Optional[Tensor], grad_query_sum: Optional[Tensor],
                 grad_key_sum: Optional[Tensor],
                 grad_value_sum: Optional[Tensor]):
        query, key, value, bias, mass = ctx.saved_tensors
        scale, heads = ctx.scale, ctx.heads
        size = query.size(1)
        # d logits = w * (d mass + d w - sum_j w d w): the logsumexp and the
        # softmax share one weighted term.
        grad_value, row_term, grad_logits = None, None, None
        if grad_mass is not None:
            row_term = grad_mass.unsqueeze(-1)
        if grad_mass is not None or (value is not None and
                                     grad_mixed is not None):
            weights = torch.exp(_logits(query, key, bias, scale, heads) -
                                mass.unsqueeze(-1))      # (H, F, B, B)
        if value is not None and grad_mixed is not None:
            flat_weights = weights.view(-1, size, size).transpose(1, 2)
            if grad_value_sum is None:
                grad_value = torch.bmm(flat_weights, grad_mixed)
            else:   # the family sums' gradient, added in the same kernel
                grad_value = torch.baddbmm(grad_value_sum.unsqueeze(1),
                                           flat_weights, grad_mixed)
                grad_value_sum = None
            grad_weights = torch.bmm(grad_mixed, value.transpose(1, 2)).view(
                weights.shape)
            centre = (grad_weights * weights).sum(-1, keepdim=True)
            row_term = -centre if row_term is None else row_term - centre
            grad_logits = weights * (grad_weights + row_term)
        elif row_term is not None:
            grad_logits = weights * row_term
        grad_query = grad_key = grad_bias = None
        if grad_logits is not None:
            flat = grad_logits.view(-1, size, size)
            grad_query = _scaled_bmm(flat, key, scale)
            grad_key = _scaled_bmm(flat.transpose(1, 2), query, scale)
            if ctx.needs_input_grad[3]:
                grad_bias = grad_logits
                if bias.size(0) == 1 and heads > 1:
                    grad_bias = grad_bias.sum(0, keepdim=True)
        grad_query = _plus_broadcast(grad_query, grad_query_sum, query)
        grad_key = _plus_broadcast(grad_key, grad_key_sum, key)
        if value is not None:
            grad_value = _plus_broadcast(grad_value, grad_value_sum, value)
        return grad_query, grad_key, grad_value, grad_bias, None, None, None


def sibling_softmax(query: Tensor, key: Tensor, value: Optional[Tensor],
                    bias: Tensor, scale: float, heads: int,
                    family_sums: bool = False) -> Tuple:
    r"""Masked softmax inside every family.

    Args:
        query, key: ``(H * F, B, C)`` family blocks.
        value: ``(H * F, B, Cv)`` or :obj:`None` (masses only).
        bias: ``(H | 1, F, B, B)`` additive logits (the sibling mask with
            ``log n(C)`` and ``-inf``, plus any position bias).
        scale: multiplies ``q . k``.
        heads: ``H``.
        family_sums: also return the per-family sums of ``query``, ``key``
            and ``value`` (``(H * F, C)``). When the families are exactly
            the children of the level above, these are the parents' totals;
            their gradient is then added inside this node's backward, in the
            same kernels, instead of as separate broadcast copies.

    Returns:
        ``(mass, mixed, query_sum, key_sum, value_sum)``: ``(H, F, B)`` log
        masses, ``(H * F, B, Cv)`` mixtures (or :obj:`None`), and the sums
        (or :obj:`None` without :obj:`family_sums`).
    """
    return _SiblingSoftmax.apply(query, key, value, bias, scale, heads,
                                 family_sums)
