r"""Half-precision inputs: read in their dtype; sums, logits and masses in
float32."""
import pytest
import torch

from hsa_graph import Hierarchy, hsa_attention
from hsa_graph.datasets.fake import balanced_parent
from hsa_graph.testing import random_parent

HALF = [torch.bfloat16, torch.float16]


def relative_error(out, ref):
    out, ref = out.detach().double(), ref.detach()
    return float((out - ref).abs().max() / ref.abs().max())


@pytest.mark.parametrize('dtype', HALF)
def test_half_inputs_keep_float32_logits(dtype):
    # Families of 32 with logits of standard deviation ~4: rounding the
    # logits to the input dtype (as a plain half bmm does) gave relative
    # errors of 0.018 (bfloat16) and 0.0027 (float16) here; float32 logits
    # 0.004 and 0.0005. The reference is float64 on the same rounded inputs.
    bound = {torch.bfloat16: 8e-3, torch.float16: 1e-3}[dtype]
    parent = [-1] + [0] * 4 + [1 + i // 32 for i in range(128)]
    h = Hierarchy.from_parent(parent)
    for seed in range(4):
        gen = torch.Generator().manual_seed(seed)
        q, k = (2 * torch.randn(h.num_nodes, 2, 32, generator=gen)
                for _ in range(2))
        v = torch.randn(h.num_nodes, 2, 32, generator=gen)
        q, k, v = (t.to(dtype) for t in (q, k, v))
        for include_self in (False, True):
            out = hsa_attention(q, k, v, h.edge_index,
                                include_self=include_self)
            assert out.dtype == dtype
            ref = hsa_attention(q.double(), k.double(), v.double(),
                                h.edge_index, include_self=include_self)
            assert relative_error(out, ref) < bound


@pytest.mark.parametrize('dtype', HALF)
def test_half_gradients_on_ragged_trees(dtype):
    gen = torch.Generator().manual_seed(3)
    for trial in range(3):
        h = Hierarchy.from_parent(random_parent(40 + 20 * trial, gen))
        q, k, v = (torch.randn(h.num_nodes, 2, 8, generator=gen).to(dtype)
                   for _ in range(3))
        pos = torch.randn(h.num_nodes, 3, generator=gen).to(dtype)
        grad = torch.randn(h.num_nodes, 2, 8, generator=gen).to(dtype)
        for include_self in (False, True):
            def grads(*inputs):
                inputs = [t.detach().requires_grad_() for t in inputs]
                out = hsa_attention(*inputs[:3], h.edge_index, pos=inputs[3],
                                    include_self=include_self)
                out.backward(grad.to(out.dtype))
                return out, [t.grad for t in inputs]
            out, low = grads(q, k, v, pos)
            ref_out, ref = grads(*(t.double() for t in (q, k, v, pos)))
            assert relative_error(out, ref_out) < 2e-2
            for g, r in zip(low, ref):
                assert g.dtype == dtype and torch.isfinite(g).all()
                assert relative_error(g, r) < 5e-2


@pytest.mark.parametrize('dtype', HALF)
def test_half_subtree_sums_do_not_overflow(dtype):
    # 2,500 leaves of value 30 under one node: their float16 sum (75,000)
    # passes 65,504. Sums run in float32, so every output is 30.
    h = Hierarchy.from_parent([-1, 0, 0] + [1] * 2500 + [2] * 2500)
    q, k = torch.randn(2, h.num_nodes, 1, 8).to(dtype)
    v = torch.full((h.num_nodes, 1, 8), 30.).to(dtype)
    for include_self in (False, True):
        out = hsa_attention(q, k, v, h.edge_index, include_self=include_self)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), torch.full_like(
            out.float(), 30.), atol=0.1, rtol=0)


@pytest.mark.parametrize('dtype', HALF)
def test_half_is_within_two_percent_of_float32_on_large_subtrees(dtype):
    parent = balanced_parent(4096, 16)
    h = Hierarchy.from_parent(parent)
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(h.num_nodes, 2, 16, generator=gen)
               for _ in range(3))
    ref = hsa_attention(q, k, v, h.edge_index)
    out = hsa_attention(*(t.to(dtype) for t in (q, k, v)), h.edge_index)
    assert relative_error(out, ref.double()) < 0.02
