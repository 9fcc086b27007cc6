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


class _SiblingSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Optional[Tensor],
                bias: Tensor, scale: float, heads: int):
        logits = _logits(query, key, bias, scale, heads)
        mass = torch.logsumexp(logits, dim=-1)           # (H, F, B)
        ctx.scale, ctx.heads = scale, heads
        ctx.save_for_backward(query, key, value, bias, mass)
        if value is None:
            return mass, None
        weights = logits.sub_(mass.unsqueeze(-1)).exp_()
        size = query.size(1)
        mixed = torch.bmm(weights.view(-1, size, size), value)
        return mass, mixed

    @staticmethod
    def backward(ctx, grad_mass: Optional[Tensor],
                 grad_mixed: Optional[Tensor]):
        query, key, value, bias, mass = ctx.saved_tensors
        scale, heads = ctx.scale, ctx.heads
        size = query.size(1)
        weights = torch.exp(_logits(query, key, bias, scale, heads) -
                            mass.unsqueeze(-1))          # (H, F, B, B)
        # d logits = w * (d mass + d w - sum_j w d w): the logsumexp and the
        # softmax share one weighted term.
        grad_value, row_term = None, None
        if grad_mass is not None:
            row_term = grad_mass.unsqueeze(-1)
        if value is not None and grad_mixed is not None:
            flat_weights = weights.view(-1, size, size)
            grad_value = torch.bmm(flat_weights.transpose(1, 2), grad_mixed)
            grad_weights = torch.bmm(grad_mixed, value.transpose(1, 2)).view(
                weights.shape)
            centre = (grad_weights * weights).sum(-1, keepdim=True)
            row_term = -centre if row_term is None else row_term - centre
            grad_logits = weights * (grad_weights + row_term)
        elif row_term is not None:
            grad_logits = weights * row_term
        else:
            return None, None, None, None, None, None
        flat = grad_logits.view(-1, size, size)
        grad_query = _scaled_bmm(flat, key, scale)
        grad_key = _scaled_bmm(flat.transpose(1, 2), query, scale)
        grad_bias = None
        if ctx.needs_input_grad[3]:
            grad_bias = grad_logits
            if bias.size(0) == 1 and heads > 1:
                grad_bias = grad_bias.sum(0, keepdim=True)
        return grad_query, grad_key, grad_value, grad_bias, None, None


def sibling_softmax(query: Tensor, key: Tensor, value: Optional[Tensor],
                    bias: Tensor, scale: float, heads: int
                    ) -> Tuple[Tensor, Optional[Tensor]]:
    r"""Masked softmax inside every family.

    Args:
        query, key: ``(H * F, B, C)`` family blocks.
        value: ``(H * F, B, Cv)`` or :obj:`None` (masses only).
        bias: ``(H | 1, F, B, B)`` additive logits (the sibling mask with
            ``log n(C)`` and ``-inf``, plus any position bias).
        scale: multiplies ``q . k``.
        heads: ``H``.

    Returns:
        ``(H, F, B)`` log masses and ``(H * F, B, Cv)`` mixtures (or
        :obj:`None`).
    """
    return _SiblingSoftmax.apply(query, key, value, bias, scale, heads)
