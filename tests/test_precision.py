r"""Half-precision inputs (functional/precision.py): level tensors stay in
the input dtype, logits and masses are float32."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hsa_graph.functional.precision as precision
from hsa_graph import Hierarchy, hsa_attention
from hsa_graph.datasets.fake import balanced_parent
from hsa_graph.functional.precision import bmm_stat, stat_dtype
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


class _Float32Allocations(TorchDispatchMode):
    r"""The largest float32 tensor (in elements) written by any op."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


TREES = {
    'balanced': lambda: Hierarchy.from_parent(balanced_parent(512, 8)),
    'ragged': lambda: Hierarchy.from_parent(
        random_parent(600, torch.Generator().manual_seed(0), max_children=9)),
}


@pytest.mark.parametrize('tree', TREES)
@pytest.mark.parametrize('include_self', [False, True])
def test_half_inputs_write_no_float32_level_tensor(tree, include_self,
                                                   monkeypatch):
    # Level tensors are [H, n, C]; the float32 logits of families of B <= 9
    # are [H, F, B, B], at most 9 / 64 of a level tensor of C = 64. A
    # float32 weight multiplied with a half value (promotion) or an upcast
    # level would write a float32 tensor of a level's size.
    monkeypatch.setattr(precision, '_CHUNK_ELEMENTS', 4096)
    h = TREES[tree]()
    heads, channels = 2, 64
    leaves = int(h.is_leaf.sum())
    q, k, v = (torch.randn(h.num_nodes, heads, channels,
                           dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    pos = torch.randn(h.num_nodes, 3, dtype=torch.bfloat16)
    grad = torch.randn(h.num_nodes, heads, channels, dtype=torch.bfloat16)
    counter = _Float32Allocations()
    with counter:
        out = hsa_attention(q, k, v, h.edge_index, pos=pos,
                            include_self=include_self)
        out.backward(grad)
    assert out.dtype == torch.bfloat16
    assert 0 < counter.largest < heads * leaves * channels // 4


def test_bmm_stat_chunks_equal_one_float32_bmm(monkeypatch):
    monkeypatch.setattr(precision, '_CHUNK_ELEMENTS', 100)  # 3 blocks each
    gen = torch.Generator().manual_seed(0)
    left = torch.randn(10, 4, 8, generator=gen).bfloat16()
    right = torch.randn(10, 8, 5, generator=gen).bfloat16()
    out = bmm_stat(left, right, 0.5)
    assert out.dtype == torch.float32
    torch.testing.assert_close(
        out, 0.5 * torch.bmm(left.float(), right.float()), rtol=1e-6,
        atol=1e-6)
    assert stat_dtype(torch.float64) == torch.float64
    same = bmm_stat(left.double(), right.double(), 0.5)
    assert same.dtype == torch.float64
