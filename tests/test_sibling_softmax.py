import math

import pytest
import torch

from hsa_graph import Hierarchy, hsa_attention
from hsa_graph.functional.sibling_softmax import sibling_softmax


def reference(q, k, v, bias, scale, heads):
    size = q.size(1)
    logits = (q @ k.transpose(1, 2)).view(heads, -1, size, size) * scale
    logits = logits + bias
    mass = torch.logsumexp(logits, -1)
    if v is None:
        return mass, None
    weights = torch.softmax(logits, -1).view(-1, size, size)
    return mass, weights @ v


def inputs(heads=3, families=4, size=5, channels=6, bias_heads=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(heads * families, size, channels, generator=gen,
                           dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    bias = torch.randn(bias_heads, families, size, size, generator=gen,
                       dtype=torch.float64)
    eye = torch.eye(size, dtype=torch.bool)
    bias = bias.masked_fill(eye, -math.inf).requires_grad_()
    return q, k, v, bias


@pytest.mark.parametrize('bias_heads', [1, 3])
@pytest.mark.parametrize('with_value', [True, False])
def test_matches_plain_autograd(bias_heads, with_value):
    q, k, v, bias = inputs(bias_heads=bias_heads)
    v = v if with_value else None
    got = sibling_softmax(q, k, v, bias, 0.4, 3)[:2]
    want = reference(q, k, v, bias, 0.4, 3)
    torch.testing.assert_close(got[0], want[0])
    loss_got = got[0].sin().sum()
    loss_want = want[0].sin().sum()
    if with_value:
        torch.testing.assert_close(got[1], want[1])
        loss_got = loss_got + got[1].cos().sum()
        loss_want = loss_want + want[1].cos().sum()
    params = [t for t in (q, k, v, bias) if t is not None]
    for a, b in zip(torch.autograd.grad(loss_got, params),
                    torch.autograd.grad(loss_want, params)):
        # -inf bias entries get a zero gradient either way.
        torch.testing.assert_close(a, b)


def test_gradcheck_and_double_backward():
    q, k, v, _ = inputs(heads=2, families=2, size=3, channels=2)
    bias = torch.randn(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)

    def fn(q, k, v, bias):
        mass, mixed = sibling_softmax(q, k, v, bias, 0.7, 2)[:2]
        return mass.sum() + (mixed ** 2).sum()

    assert torch.autograd.gradcheck(fn, (q, k, v, bias))
    assert torch.autograd.gradgradcheck(fn, (q, k, v, bias))


def test_hsa_attention_supports_double_backward():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 1, 2, 2, 2, 6, 6])
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(h.num_nodes, 2, 3, generator=gen,
                           dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    assert torch.autograd.gradgradcheck(
        lambda q, k, v: hsa_attention(q, k, v, h.edge_index), (q, k, v))


def test_backward_saves_no_family_by_family_tensor():
    # Families of 32: a [H, F, B, B] tensor is as large as q itself. Only
    # the inputs' blocks and the [H, F, B] masses may be saved.
    heads, families, size, channels = 2, 8, 32, 4
    q, k, v, bias = inputs(heads, families, size, channels)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t.shape) or t, lambda t: t):
        sibling_softmax(q, k, v, bias.detach(), 0.5, heads)
    assert torch.Size([heads, families, size, size]) not in saved
    assert torch.Size([heads * families, size, size]) not in saved


def test_family_sums_and_their_gradient():
    q, k, v, bias = inputs()
    bias = bias.detach()
    _, _, q_sum, k_sum, v_sum = sibling_softmax(q, k, v, bias, 0.4, 3,
                                                family_sums=True)
    for total, rows in ((q_sum, q), (k_sum, k), (v_sum, v)):
        torch.testing.assert_close(total, rows.sum(1))

    def fused(q, k, v, sums_only=False):
        mass, mixed, qs, ks, vs = sibling_softmax(q, k, v, bias, 0.4, 3,
                                                  family_sums=True)
        extra = (qs * ks).sum() + vs.square().sum()
        return extra if sums_only else mass.sum() + mixed.sum() + extra

    def plain(q, k, v, sums_only=False):
        mass, mixed = reference(q, k, v, bias, 0.4, 3)
        extra = (q.sum(1) * k.sum(1)).sum() + v.sum(1).square().sum()
        return extra if sums_only else mass.sum() + mixed.sum() + extra

    for sums_only in (False, True):
        for a, b in zip(torch.autograd.grad(fused(q, k, v, sums_only),
                                            (q, k, v)),
                        torch.autograd.grad(plain(q, k, v, sums_only),
                                            (q, k, v))):
            torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(fused, (q, k, v))
