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

from .precision import bmm_buffered, bmm_stat, scaled_bmm

__all__ = ['sibling_softmax']


def _logits(query: Tensor, key: Tensor, bias: Tensor, scale: float,
            heads: int) -> Tensor:
    size = query.size(1)
    # float32 for half-precision q, k (precision.py), like the bias.
    logits = bmm_stat(query, key.transpose(1, 2), scale)
    return logits.view(heads, -1, size, size).add_(bias)   # (H, F, B, B)


def _plus_broadcast(out: Optional[Tensor], family_grad: Optional[Tensor],
                    shape: torch.Size) -> Optional[Tensor]:
    r"""``out + family_grad`` broadcast over each family's members."""
    if family_grad is None:
        return out
    family_grad = family_grad.unsqueeze(1)              # (H*F, 1, C)
    if out is None:
        return family_grad.expand(shape)
    if torch.is_grad_enabled() or not out.is_contiguous():
        # double backward keeps the graph intact; a strided view stays as is
        return out + family_grad
    return out.add_(family_grad)


class _SiblingSoftmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, query: Tensor, key: Tensor, value: Optional[Tensor],
                bias: Tensor, scale: float, heads: int, family_sums: bool,
                mixture: bool, logit_channel: bool):
        logits = _logits(query, key, bias, scale, heads)
        mass = torch.logsumexp(logits, dim=-1)           # (H, F, B)
        ctx.scale, ctx.heads = scale, heads
        ctx.value_shape = None if value is None else value.shape
        ctx.passes_value = value is not None and not mixture
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(query, key, value if mixture else None, bias,
                              mass)
        sums = (None, None, None)
        if family_sums:
            sums = tuple(None if t is None else t.sum(1)
                         for t in (query, key, value))
        # A zero-stride stand-in for the logits: a later node that reuses
        # these logits returns their gradient through it (see
        # family_mixture.py), so q and k get one gradient write, not two.
        channel = mass.new_zeros(()).expand(logits.shape) \
            if logit_channel else None
        if value is None or not mixture:
            # Without a mixture here, the value is passed on for the node
            # that mixes it: then v has one consumer, this node, which adds
            # its family-sum gradient into the mixer's gradient in place
            # (two consumers would make autograd allocate their sum).
            passed = None if value is None else value.detach()
            return (mass, passed) + sums + (channel, )
        weights = logits.sub_(mass.unsqueeze(-1)).exp_()
        size = query.size(1)
        mixed = bmm_buffered(weights.view(-1, size, size).to(value.dtype),
                             value)
        return (mass, mixed) + sums + (channel, )

    @staticmethod
    def backward(ctx, grad_mass: Optional[Tensor],
                 grad_mixed: Optional[Tensor], grad_query_sum: Optional[Tensor],
                 grad_key_sum: Optional[Tensor],
                 grad_value_sum: Optional[Tensor],
                 grad_channel: Optional[Tensor]):
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
        if ctx.passes_value:
            grad_value, grad_mixed = grad_mixed, None
        if value is not None and grad_mixed is not None:
            flat_weights = weights.view(-1, size, size).transpose(1, 2).to(
                value.dtype)
            # with the family sums' gradient added in the same kernel
            grad_value = bmm_buffered(
                flat_weights, grad_mixed, None if grad_value_sum is None
                else grad_value_sum.unsqueeze(1))
            grad_value_sum = None
            grad_weights = bmm_stat(grad_mixed, value.transpose(1, 2),
                                    1.0).view(weights.shape)
            centre = (grad_weights * weights).sum(-1, keepdim=True)
            row_term = -centre if row_term is None else row_term - centre
            grad_logits = weights * (grad_weights + row_term)
        elif row_term is not None:
            grad_logits = weights * row_term
        if grad_channel is not None:
            grad_logits = grad_channel if grad_logits is None else \
                grad_logits.add_(grad_channel)
        grad_query = grad_key = grad_bias = None
        if grad_logits is not None:
            flat = grad_logits.reshape(-1, size, size).to(query.dtype)
            grad_query = scaled_bmm(flat, key, scale)
            grad_key = scaled_bmm(flat.transpose(1, 2), query, scale)
            if ctx.needs_input_grad[3]:
                grad_bias = grad_logits
                if bias.size(0) == 1 and heads > 1:
                    grad_bias = grad_bias.sum(0, keepdim=True)
        grad_query = _plus_broadcast(grad_query, grad_query_sum, query.shape)
        grad_key = _plus_broadcast(grad_key, grad_key_sum, key.shape)
        if ctx.value_shape is not None:
            grad_value = _plus_broadcast(grad_value, grad_value_sum,
                                         ctx.value_shape)
        return (grad_query, grad_key, grad_value, grad_bias) + (None,) * 5


def sibling_softmax(query: Tensor, key: Tensor, value: Optional[Tensor],
                    bias: Tensor, scale: float, heads: int,
                    family_sums: bool = False, mixture: bool = True,
                    logit_channel: bool = False) -> Tuple:
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
        mixture: compute the softmax mixture of :obj:`value` (otherwise
            :obj:`value` is only summed, for :obj:`family_sums`).
        logit_channel: also return a zero-stride ``(H, F, B, B)`` tensor
            through which a later node that reuses these logits (the fused
            leaf mixture) returns the logits' gradient.

    Returns:
        ``(mass, mixed, query_sum, key_sum, value_sum)``: ``(H, F, B)`` log
        masses, ``(H * F, B, Cv)`` mixtures (or :obj:`None`) and the sums
        (or :obj:`None` without :obj:`family_sums`); with
        :obj:`logit_channel` the channel follows.
    """
    outputs = _SiblingSoftmax.apply(query, key, value, bias, scale, heads,
                                    family_sums, mixture, logit_channel)
    return outputs if logit_channel else outputs[:5]
