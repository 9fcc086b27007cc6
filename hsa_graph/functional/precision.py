r"""Which dtype each kind of tensor of the dynamic program is kept in.

With float16 or bfloat16 inputs, the ``[H, n, C]`` level tensors (queries,
keys, values, their means, the mixtures and the outputs, and all their
gradients) stay in the input dtype: they are nearly all of the memory and
the traffic, and a half-precision matmul accumulates in float32 inside the
kernel, as in any attention layer. Everything that a rounding to 8 mantissa
bits would spoil is float32 (the *statistics* dtype): the logits after the
``bmm`` that forms them (so the ``log n(C)`` and position biases are added
exactly), the softmax, its log-sum-exps, the free energies and the
stick-breaking weights, all of them ``[H, n]`` or ``[H, F, B, B]``, a
fraction of a level tensor. A ``B x B`` weight matrix is rounded to the
value dtype only to multiply the values, as FlashAttention does with its
probabilities. Other dtypes are computed as they come.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..allocator import new_buffer

LOW_PRECISION = (torch.float16, torch.bfloat16)


def stat_dtype(dtype: torch.dtype) -> torch.dtype:
    r"""The dtype of logits, log masses and weights for level tensors of
    :obj:`dtype`."""
    return torch.float32 if dtype in LOW_PRECISION else dtype


# Half-precision operands per chunk of a float32 bmm without out_dtype:
# their float32 copies stay below 8 MiB whatever the level's size.
_CHUNK_ELEMENTS = 1 << 21
_OUT_DTYPE_WORKS: dict = {}


def _bmm_out_dtype_works(device: torch.device, dtype: torch.dtype) -> bool:
    r"""Whether ``torch.bmm(..., out_dtype=torch.float32)`` runs for
    :obj:`dtype` on :obj:`device` (CUDA in torch 2.13), tried once."""
    key = (device.type, dtype)
    if key not in _OUT_DTYPE_WORKS:
        try:
            probe = torch.ones(1, 1, 1, dtype=dtype, device=device)
            out = torch.bmm(probe, probe, out_dtype=torch.float32)
            _OUT_DTYPE_WORKS[key] = out.dtype == torch.float32
        except (RuntimeError, NotImplementedError, TypeError):
            _OUT_DTYPE_WORKS[key] = False
    return _OUT_DTYPE_WORKS[key]


def scaled_bmm(left: torch.Tensor, right: torch.Tensor,
               scale: float) -> torch.Tensor:
    r"""``scale * (left @ right)`` in one kernel (beta=0 ignores the
    input), in place: out-of-place baddbmm would allocate a second
    output."""
    if torch.compiler.is_compiling():   # Inductor plans its own buffers
        out = torch.bmm(left, right)
        return out if scale == 1.0 else out * scale
    out = new_buffer(left, (left.size(0), left.size(1), right.size(2)))
    return out.baddbmm_(left, right, beta=0.0, alpha=scale)


def bmm_buffered(left: torch.Tensor, right: torch.Tensor,
                 input: Optional[torch.Tensor] = None) -> torch.Tensor:
    r"""``left @ right`` (plus the broadcast :obj:`input`) written into a
    :func:`~hsa_graph.allocator.new_buffer`; plain ops where ``out=`` does
    not fit: while building a graph (``out=`` is not differentiable: double
    backward) and under ``torch.compile`` (Inductor plans buffers)."""
    out = {}
    if not torch.is_grad_enabled() and not torch.compiler.is_compiling():
        out = dict(out=new_buffer(
            right, (left.size(0), left.size(1), right.size(2))))
    if input is None:
        return torch.bmm(left, right, **out)
    return torch.baddbmm(input, left, right, **out)


def bmm_stat(left: torch.Tensor, right: torch.Tensor,
             scale: float) -> torch.Tensor:
    r"""``scale * (left @ right)`` in the statistics dtype: for half inputs
    the matmul's float32 accumulator is kept, not rounded to 8 mantissa
    bits (a logit of 10 would be off by up to 0.03, the softmax weight by
    3%). Used for the ``B x B`` products of level tensors: logits and their
    gradients. (:obj:`scale` has no default: under ``torch.compile``, a
    default float argument of a function called in an autograd.Function's
    backward failed to trace in torch 2.13.)"""
    dtype = stat_dtype(left.dtype)
    if dtype == left.dtype:
        return scaled_bmm(left, right, scale)
    if torch.compiler.is_compiling():
        return torch.bmm(left.to(dtype), right.to(dtype)) * scale
    if _bmm_out_dtype_works(left.device, left.dtype):
        out = torch.bmm(left, right, out_dtype=dtype)
        return out if scale == 1.0 else out.mul_(scale)
    # (sizes read only here: a traced backward must not see unused ones)
    batch, rows, cols = left.size(0), left.size(1), right.size(2)
    out = new_buffer(left, (batch, rows, cols), dtype)
    per_block = left[0].numel() + right[0].numel()
    step = max(1, _CHUNK_ELEMENTS // max(per_block, 1))
    for start in range(0, batch, step):
        chunk = slice(start, start + step)
        out[chunk].baddbmm_(left[chunk].to(dtype), right[chunk].to(dtype),
                            beta=0.0, alpha=scale)
    return out
