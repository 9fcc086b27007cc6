r"""The memory-lean paths of the dynamic program: moving rows between node
and level order (three plans), and the fused leaf level (sibling softmax +
stick-breaking mixture as two autograd nodes joined by a logit channel)."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import hsa_graph.layout as layout_module
from hsa_graph import Hierarchy, hsa_attention, tree_layout
from hsa_graph.datasets.fake import balanced_parent
from hsa_graph.functional.dp_steps import _fusable_bottom
from hsa_graph.functional.family_mixture import family_mixture
from hsa_graph.functional.level_order import _level_index
from hsa_graph.testing import assert_matches_dense_reference

from _forests import (assert_forest_gradients,
                      assert_forest_matches_reference,
                      assert_level_moves_match_plain_indexing, forest_of,
                      qkv)


def forest(*trees, relabel_seed=None):
    r"""A forest of balanced trees ``(leaves, branching)``, each stored
    root first, level by level (as PyG batches them); with
    :obj:`relabel_seed` the node ids are shuffled."""
    return forest_of([balanced_parent(leaves, branching)
                      for leaves, branching in trees], relabel_seed)


def plan_kind(layout):
    plan = _level_index(layout)
    if plan.ids is not None:
        return 'ids'
    return 'identity' if layout.identity_order else 'segments'


# Trees of equal depth, so the deepest level is every tree's leaves and its
# families are the children of the level above (the fused leaf level).
PLANS = {
    'identity': lambda: forest((512, 8)),
    'segments': lambda: forest((512, 8), (256, 8)),
    'ids': lambda: forest((512, 8), (256, 8), relabel_seed=1),
}


@pytest.mark.parametrize('kind', PLANS)
def test_level_moves_match_plain_indexing(kind):
    h = PLANS[kind]()
    layout = tree_layout(h.edge_index, h.num_nodes)
    assert plan_kind(layout) == kind
    assert_level_moves_match_plain_indexing(layout, h.num_nodes)


@pytest.mark.parametrize('include_self', [False, True])
@pytest.mark.parametrize('kind', PLANS)
def test_fused_leaf_level_matches_dense_reference(kind, include_self):
    h = PLANS[kind]()
    layout = tree_layout(h.edge_index, h.num_nodes)
    assert _fusable_bottom(layout)
    assert_forest_matches_reference(h, include_self, seed=2)


@pytest.mark.parametrize('include_self', [False, True])
@pytest.mark.parametrize('relabel', [None, 3])
def test_fused_leaf_level_gradients(include_self, relabel):
    # small enough for gradcheck; two trees of different shapes
    h = forest((8, 4), (12, 4), relabel_seed=relabel)
    layout = tree_layout(h.edge_index, h.num_nodes)
    assert _fusable_bottom(layout)    # whatever the node labels
    assert_forest_gradients(h, include_self)


def _plain_mixture(q, k, v, bias, leave, self_weight, parent_out, scale,
                   heads):
    size = q.size(1)
    logits = (q @ k.transpose(1, 2) * scale).view(heads, -1, size, size)
    weights = torch.softmax(logits + bias, dim=-1)
    mix = weights * leave.unsqueeze(-1)
    if self_weight is not None:
        mix = mix + torch.diag_embed(self_weight)
    out = mix.view(-1, size, size) @ v
    if parent_out is not None:
        out = out + parent_out.reshape(-1, 1, v.size(-1))
    return out, out.sum(1)


@pytest.mark.parametrize('use', ['out', 'sums', 'both'])
@pytest.mark.parametrize('with_self', [False, True])
def test_family_mixture_against_plain_autograd(use, with_self):
    from hsa_graph.functional.sibling_softmax import sibling_softmax
    heads, families, size = 2, 3, 4
    gen = torch.Generator().manual_seed(5)

    def make(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64,
                           requires_grad=True)
    q, k = make(heads * families, size, 3), make(heads * families, size, 3)
    v = make(heads * families, size, 2)
    leave = make(heads, families, size)
    self_weight = make(heads, families, size) if with_self else None
    parent_out = make(heads, families, 2)
    bias = torch.zeros(1, families, size, size, dtype=torch.float64)
    bias[..., torch.arange(size), torch.arange(size)] = -torch.inf
    mass, passed, *_, channel = sibling_softmax(
        q, k, v, bias, 0.7, heads, family_sums=True, mixture=False,
        logit_channel=True)
    got = family_mixture(q, k, passed, bias, mass, channel, leave,
                         self_weight, parent_out, 0.7, heads)
    want = _plain_mixture(q, k, v, bias, leave, self_weight, parent_out,
                          0.7, heads)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)
    pick = {'out': [0], 'sums': [1], 'both': [0, 1]}[use]
    inputs = [t for t in (q, k, v, leave, self_weight, parent_out)
              if t is not None]
    grads = [torch.randn_like(want[i]) for i in pick]
    got_grads = torch.autograd.grad([got[i] for i in pick], inputs, grads)
    want_grads = torch.autograd.grad([want[i] for i in pick], inputs, grads)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w)


class _LargeAllocations(TorchDispatchMode):
    r"""Counts op outputs with a fresh storage of at least ``min_bytes``."""

    def __init__(self, min_bytes):
        super().__init__()
        self.min_bytes, self.count = min_bytes, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in
                  torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        for t in torch.utils._pytree.tree_leaves(out):
            if (isinstance(t, torch.Tensor) and
                    t.untyped_storage().nbytes() >= self.min_bytes and
                    t.untyped_storage().data_ptr() not in inputs):
                self.count += 1
        return out


@pytest.mark.parametrize('kind', PLANS)
def test_leaf_sized_tensors_per_step(kind):
    # The largest tensors of a step are [H, leaves, C]. A forward+backward
    # writes: forward q, k, v in level order, the leaf output, the output
    # in node order; backward the output's gradient in level order, d v,
    # d q, d k in families, and d q, d k, d v in node order: 12. Plain
    # autograd and index_select wrote 26 at this point of the code's
    # history (with the relabelled forest's node ids, 40).
    h = PLANS[kind]()
    layout = tree_layout(h.edge_index, h.num_nodes)
    heads, channels = 2, 32     # > family size: B x B tensors are smaller
    q, k, v = (torch.randn(h.num_nodes, heads, channels, requires_grad=True)
               for _ in range(3))
    leaves = int(h.is_leaf.sum())
    grad = torch.randn(h.num_nodes, heads, channels)
    hsa_attention(q, k, v, layout=layout).backward(grad)   # warm caches
    counter = _LargeAllocations(leaves * heads * channels * 4)
    with counter:
        hsa_attention(q, k, v, layout=layout).backward(grad)
    assert counter.count <= 12, counter.count


def test_padded_buckets_gathered_in_one_node(monkeypatch):
    # Ten family sizes (2..11) under one root: under CUDA's rule more than
    # the exact-bucket limit, so families are padded to 2, 4, 8 and 16
    # (padding repeats a member) and the level's gathered buckets are
    # gathered in one node.
    monkeypatch.setitem(layout_module._BUCKETING, 'cpu',
                        layout_module.Bucketing())
    parent = [-1] + [0] * 10
    for i, size in enumerate(range(2, 12)):
        parent += [1 + i] * size
    h = Hierarchy.from_parent(parent)
    layout = tree_layout(h.edge_index, h.num_nodes)
    buckets = layout.levels[2].buckets
    assert sum(b.contiguous_start is None for b in buckets) >= 2
    q, k, v = (t.requires_grad_() for t in qkv(h.num_nodes, seed=6))
    pos = torch.randn(h.num_nodes, 2, dtype=torch.float64,
                      requires_grad=True)
    for include_self in (False, True):
        assert_matches_dense_reference(q.detach(), k.detach(), v.detach(),
                                       h.edge_index, pos=pos.detach(),
                                       include_self=include_self)
        assert torch.autograd.gradcheck(
            lambda q, k, v, pos: hsa_attention(
                q, k, v, h.edge_index, pos=pos, include_self=include_self),
            (q, k, v, pos))


def test_contiguous_buckets_split_in_one_node(monkeypatch):
    # Families of 3, 3, 5, 5 and 2 children in that order: under exact
    # buckets each bucket is a contiguous run of the level, and the three
    # are read as one split (in backward: one concatenation, not a
    # level-sized zero fill per bucket).
    monkeypatch.setitem(layout_module._BUCKETING, 'cpu',
                        layout_module.Bucketing())
    sizes = [3, 3, 5, 5, 2]
    parent = [-1] + [0] * (len(sizes) + 2)
    for i, size in enumerate(sizes):
        parent += [1 + i] * size
    h = Hierarchy.from_parent(parent)
    layout = tree_layout(h.edge_index, h.num_nodes)
    buckets = layout.levels[2].buckets
    assert len(buckets) == 3
    assert all(b.contiguous_start is not None for b in buckets)
    # the split's blocks and their gradients equal plain slicing
    from hsa_graph.functional.levels import _gather_level_members
    rows = torch.randn(2, layout.levels[2].size, 3, dtype=torch.float64,
                       requires_grad=True)
    blocks = _gather_level_members(rows, buckets)
    plain = [rows[:, b.member_index.flatten()].reshape(-1, b.size, 3)
             for b in buckets]
    weights = [torch.randn_like(block) for block in plain]
    for got, want in zip(blocks, plain):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(
        torch.autograd.grad(sum((b * w).sum() for b, w in
                                zip(blocks, weights)), rows)[0],
        torch.autograd.grad(sum((b * w).sum() for b, w in
                                zip(plain, weights)), rows)[0])
    q, k, v = (t.requires_grad_() for t in qkv(h.num_nodes, seed=7))
    for include_self in (False, True):
        assert_matches_dense_reference(q.detach(), k.detach(), v.detach(),
                                       h.edge_index,
                                       include_self=include_self)
        assert torch.autograd.gradcheck(
            lambda q, k, v: hsa_attention(q, k, v, h.edge_index,
                                          include_self=include_self),
            (q, k, v))


@pytest.mark.parametrize('include_self', [False, True])
def test_ragged_levels_double_backward(include_self):
    # Ragged families (several buckets), leaves at two depths: the bucket
    # gather node, the forked leaf rows and the weighted accumulation, each
    # with a hand-written backward, under gradcheck and gradgradcheck.
    parent = [-1] + [0] * 4
    for i, size in enumerate(range(2, 6)):
        parent += [1 + i] * size
    parent += [5, 5, 6, 6, 6]
    h = Hierarchy.from_parent(parent)
    q, k, v = (t.requires_grad_() for t in qkv(h.num_nodes, seed=7))

    def fn(q, k, v):
        return hsa_attention(q, k, v, h.edge_index,
                             include_self=include_self)
    assert torch.autograd.gradcheck(fn, (q, k, v))
    assert torch.autograd.gradgradcheck(fn, (q, k, v))
