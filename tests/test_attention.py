import math

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch_geometric.data import Batch

from hsa_graph import (Hierarchy, hsa_attention, hsa_attention_matrix,
                       hsa_log_partition)
from hsa_graph.layout import tree_layout
from hsa_graph.testing import (assert_batch_invariant,
                               assert_flat_tree_equals_softmax,
                               assert_matches_dense_reference, random_parent)

DTYPES = [torch.float64, torch.float32]


@st.composite
def ragged_trees(draw, max_nodes=24):
    num_nodes = draw(st.integers(1, max_nodes))
    parent = [-1] + [draw(st.integers(0, i - 1)) for i in range(1, num_nodes)]
    return torch.tensor(parent)


def qkv(num_nodes, heads=2, channels=3, value_channels=4,
        dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    make = lambda c: torch.randn(num_nodes, heads, c, generator=gen,  # noqa
                                 dtype=dtype)
    return make(channels), make(channels), make(value_channels)


@settings(max_examples=60, deadline=None)
@given(parent=ragged_trees(), include_self=st.booleans(),
       use_pos=st.sampled_from([None, '2d', '3d']), seed=st.integers(0, 99),
       size_classes=st.sampled_from([1, 2, 3]))
def test_matches_dense_reference_on_ragged_trees(parent, include_self,
                                                 use_pos, seed, size_classes):
    h = Hierarchy.from_parent(parent)
    layout = tree_layout(h.edge_index, h.num_nodes, cache=False,
                         size_classes=size_classes)
    q, k, v = qkv(h.num_nodes, seed=seed)
    pos = None
    if use_pos == '2d':
        pos = torch.randn(h.num_nodes, 2, dtype=torch.float64)
    elif use_pos == '3d':
        pos = torch.randn(h.num_nodes, 2, 3, dtype=torch.float64)
    assert_matches_dense_reference(
        q, k, v, h.edge_index, pos=pos, include_self=include_self,
        attention=lambda q, k, v, edge_index, **kw: hsa_attention(
            q, k, v, layout=layout, **kw))


@settings(max_examples=30, deadline=None)
@given(parent=ragged_trees(), include_self=st.booleans())
def test_theta_properties(parent, include_self):
    h = Hierarchy.from_parent(parent)
    q, k, _ = qkv(h.num_nodes)
    theta = hsa_attention_matrix(q, k, h.edge_index,
                                 include_self=include_self)
    leaf = h.is_leaf
    # Internal rows and columns are empty.
    assert (theta[:, ~leaf] == 0).all()
    assert (theta[:, :, ~leaf] == 0).all()
    rows = theta.sum(-1)[:, leaf]
    if include_self or h.num_leaves > 1:
        torch.testing.assert_close(rows, torch.ones_like(rows))
    else:
        assert rows.abs().max() == 0
    if not include_self:
        assert theta.diagonal(dim1=1, dim2=2).abs().max() == 0
    assert (theta >= 0).all()


def test_theta_is_block_constant():
    # root -> {a, b}; a -> 3 leaves; b -> {c, leaf}; c -> 2 leaves.
    parent = torch.tensor([-1, 0, 0, 1, 1, 1, 2, 2, 6, 6])
    h = Hierarchy.from_parent(parent)
    q, k, _ = qkv(h.num_nodes)
    theta = hsa_attention_matrix(q, k, h.edge_index)
    a_leaves, b_leaves = [3, 4, 5], [7, 8, 9]
    block = theta[:, a_leaves][:, :, b_leaves]   # queries in a, keys in b
    torch.testing.assert_close(block, block[:, :1, :1].expand_as(block))
    # Inside b, leaf 7 sees c's leaves 8, 9 as one block.
    torch.testing.assert_close(theta[:, 7, 8], theta[:, 7, 9])
    # But leaves in a see their own siblings individually.
    assert not torch.allclose(theta[:, 3, 4], theta[:, 3, 5])


@pytest.mark.parametrize('dtype', DTYPES)
def test_flat_tree_equals_softmax(dtype):
    assert_flat_tree_equals_softmax(num_leaves=9, dtype=dtype)


def test_flat_tree_with_positions_is_biased_softmax():
    num_leaves, heads, channels = 6, 2, 4
    parent = torch.tensor([-1] + [0] * num_leaves)
    h = Hierarchy.from_parent(parent)
    q, k, v = qkv(h.num_nodes, heads, channels, channels)
    pos = torch.randn(h.num_nodes, 3, dtype=torch.float64)
    out = hsa_attention(q, k, v, h.edge_index, pos=pos, include_self=True)
    bias = pos[1:] @ pos[1:].T
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(t[1:].transpose(0, 1) for t in (q, k, v)), attn_mask=bias)
    torch.testing.assert_close(out[1:], expected.transpose(0, 1))


def test_two_level_tree_by_hand():
    # root -> {A = {1, 2}, leaf 3}; one head, 1-d channels.
    parent = torch.tensor([-1, 0, 0, 1, 1])
    h = Hierarchy.from_parent(parent)   # leaves 2, 3, 4
    q = torch.tensor([0., 0., 0.3, -0.5, 1.2], dtype=torch.float64)
    k = torch.tensor([0., 0., 0.7, 0.2, -0.4], dtype=torch.float64)
    v = torch.tensor([0., 0., 5.0, 1.0, -2.0], dtype=torch.float64)
    out = hsa_attention(q.view(-1, 1, 1), k.view(-1, 1, 1), v.view(-1, 1, 1),
                        h.edge_index)
    # Leaf 2 only has sibling A (nodes 3, 4): y_2 = mean v over A.
    assert math.isclose(out[2].item(), (1.0 - 2.0) / 2, abs_tol=1e-12)
    # Leaf 3 sits in A = node 1 with sibling leaf 2: logZ(3) = q3 k4,
    # logZ(4) = q4 k3, -phi(A) = their mean, s(A -> 2) = mean(q3, q4) k2, and
    # mu(A) = sigmoid(-phi(A) - s(A -> 2)). A leaf keeps no mass (mu = 0), so
    # leaf 3 sends 1 - mu(A) to leaf 2 and mu(A) to its sibling leaf 4.
    qa = (q[3] + q[4]) / 2
    log_inner_a = 0.5 * (q[3] * k[4]) + 0.5 * (q[4] * k[3])
    mu_a = torch.sigmoid(log_inner_a - qa * k[2])
    expected_3 = (1 - mu_a) * v[2] + mu_a * v[4]
    theta = hsa_attention_matrix(q.view(-1, 1, 1), k.view(-1, 1, 1),
                                 h.edge_index)[0]
    assert math.isclose(theta[3, 2].item(), (1 - mu_a).item(), abs_tol=1e-12)
    assert math.isclose(theta[3, 4].item(), mu_a.item(), abs_tol=1e-12)
    assert math.isclose(out[3].item(), expected_3.item(), abs_tol=1e-12)


def test_energy_gradient_identity():
    # sum_j theta_ij k_j = n(root) sqrt(d) d(-phi(root)) / d q_i: an oracle
    # independent of the closed form.
    gen = torch.Generator().manual_seed(3)
    for trial in range(8):
        parent = random_parent(6 + 2 * trial, gen)
        h = Hierarchy.from_parent(parent)
        channels = 3
        q, k, _ = qkv(h.num_nodes, channels=channels, seed=trial)
        pos = torch.randn(h.num_nodes, 2, 2, dtype=torch.float64,
                          generator=gen)
        for include_self in (False, True):
            q_grad = q.clone().requires_grad_()
            log_partition = hsa_log_partition(q_grad, k, h.edge_index,
                                              pos=pos,
                                              include_self=include_self)
            grad = torch.autograd.grad(log_partition[0].sum(), q_grad)[0]
            theta = hsa_attention_matrix(q, k, h.edge_index, pos=pos,
                                         include_self=include_self)
            lhs = torch.einsum('hij,jhc->ihc', theta, k)
            rhs = float(h.num_leaves) * math.sqrt(channels) * grad
            leaf = h.is_leaf
            torch.testing.assert_close(lhs[leaf], rhs[leaf])


def _two_class_parent():
    # Level 2: families of 2, 2, 6, 6 and 1 child (packed: 30 padded slots
    # for 17 nodes): two size classes (2 and 6 wide, two families each) and
    # a node without siblings (the filler).
    parent = [-1, 0, 0, 0, 0, 0]
    for p, size in zip(range(1, 6), [2, 6, 2, 6, 1]):
        parent += [p] * size
    return parent


@pytest.mark.parametrize('parent', [[-1, 0, 0, 1, 1, 1, 2, 6, 6, 0],
                                    _two_class_parent()])
def test_gradcheck(parent):
    h = Hierarchy.from_parent(parent)
    q, k, v = (t.requires_grad_() for t in qkv(h.num_nodes, 2, 2, 2))
    pos = torch.randn(h.num_nodes, 2, dtype=torch.float64,
                      requires_grad=True)
    for include_self in (False, True):
        assert torch.autograd.gradcheck(
            lambda q, k, v, p: hsa_attention(q, k, v, h.edge_index, pos=p,
                                             include_self=include_self),
            (q, k, v, pos))


@pytest.mark.parametrize('include_self', [False, True])
def test_size_classes_match_dense_reference(include_self):
    h = Hierarchy.from_parent(_two_class_parent())
    assert [(b.num_families, b.family_size)
            for b in h.layout.levels[2].blocks] == [(2, 2), (2, 6)]
    q, k, v = qkv(h.num_nodes, seed=3)
    pos = torch.randn(h.num_nodes, 2, 3, dtype=torch.float64)
    assert_matches_dense_reference(q, k, v, h.edge_index, pos=pos,
                                   include_self=include_self)


def test_batches_never_leak():
    gen = torch.Generator().manual_seed(0)
    hierarchies = []
    for n in (1, 2, 5, 9, 14):
        parent = random_parent(n, gen)
        hierarchies.append(Hierarchy.from_parent(
            parent, x=torch.randn(n, 6, dtype=torch.float64, generator=gen)))

    def run(x, edge_index):
        q, k, v = (x[:, :4].view(-1, 2, 2), x[:, 1:5].view(-1, 2, 2),
                   x[:, 2:6].view(-1, 2, 2))
        return hsa_attention(q, k, v, edge_index)

    assert_batch_invariant(hierarchies, run)
    batch = Batch.from_data_list(hierarchies)
    q = batch.x[:, :4].view(-1, 2, 2)
    theta = hsa_attention_matrix(q, q, batch.edge_index)
    same_tree = batch.batch[:, None] == batch.batch[None, :]
    assert theta[:, ~same_tree].abs().max() == 0


def test_relabelling_permutes_output():
    gen = torch.Generator().manual_seed(1)
    parent = random_parent(15, gen)
    h = Hierarchy.from_parent(parent)
    q, k, v = qkv(15)
    perm = torch.randperm(15, generator=gen)      # new id of old node i
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(15)
    new_parent = torch.full_like(parent, -1)
    has_parent = parent >= 0
    new_parent[perm[has_parent]] = perm[parent[has_parent]]
    h2 = Hierarchy.from_parent(new_parent)
    out = hsa_attention(q, k, v, h.edge_index)
    out2 = hsa_attention(q[inverse], k[inverse], v[inverse], h2.edge_index)
    torch.testing.assert_close(out2, out[inverse])


@pytest.mark.parametrize('include_self', [False, True])
def test_degenerate_trees_are_finite(include_self):
    cases = {
        'one leaf': [-1],
        'chain': [-1, 0, 1, 2],
        'chain over a family': [-1, 0, 1, 2, 2, 2],
        'family over chains': [-1, 0, 0, 1, 2, 3],
        'leaf and deep chain': [-1, 0, 0, 2, 3, 4],
    }
    for name, parent in cases.items():
        h = Hierarchy.from_parent(parent)
        q, k, v = (t.requires_grad_() for t in qkv(h.num_nodes))
        out = hsa_attention(q, k, v, h.edge_index, include_self=include_self)
        assert torch.isfinite(out).all(), name
        if out.requires_grad:   # a lone leaf's output is a constant zero
            out.sum().backward()
        for t in (q, k, v):
            assert t.grad is None or torch.isfinite(t.grad).all(), name
        assert_matches_dense_reference(q.detach(), k.detach(), v.detach(),
                                       h.edge_index,
                                       include_self=include_self)


@pytest.mark.parametrize('include_self', [False, True])
@pytest.mark.parametrize('parent', [
    # uniform fan-out on every level (reshape passes throughout)
    [-1, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6],
    # labels against the level order (still reshape passes: level order
    # follows the parents' order)
    [-1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 11, 1, 12, 12, 13],
    # unequal fan-outs (gather and scatter passes)
    [-1, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7],
    # uniform root, chains below, then a family
    [-1, 0, 0, 1, 2, 3, 3, 4, 4],
])
def test_reshape_and_gather_passes_agree_with_reference(parent, include_self):
    # The first tree also takes the fused leaf level (the sibling softmax
    # sums the parents' totals); positions make its bias per family.
    h = Hierarchy.from_parent(parent)
    q, k, v = (t.requires_grad_() for t in qkv(h.num_nodes, seed=3))
    pos = torch.randn(h.num_nodes, 2, dtype=torch.float64, requires_grad=True)
    assert_matches_dense_reference(q.detach(), k.detach(), v.detach(),
                                   h.edge_index, include_self=include_self)
    assert_matches_dense_reference(q.detach(), k.detach(), v.detach(),
                                   h.edge_index, pos=pos.detach(),
                                   include_self=include_self)
    assert torch.autograd.gradcheck(
        lambda q, k, v, pos: hsa_attention(q, k, v, h.edge_index, pos=pos,
                                           include_self=include_self),
        (q, k, v, pos))


def test_single_leaf_gets_zero_or_itself():
    h = Hierarchy.from_parent([-1, 0, 1])
    q, k, v = qkv(3)
    assert hsa_attention(q, k, v, h.edge_index).abs().max() == 0
    out = hsa_attention(q, k, v, h.edge_index, include_self=True)
    torch.testing.assert_close(out[2], v[2])


def test_huge_logits_float32_and_bfloat16():
    gen = torch.Generator().manual_seed(0)
    parent = random_parent(40, gen)
    h = Hierarchy.from_parent(parent)
    q, k, v = qkv(40, dtype=torch.float32)
    q = q * 1e2          # logits ~ 1e4
    k = k * 1e2
    for include_self in (False, True):
        out = hsa_attention(q, k, v, h.edge_index, include_self=include_self)
        assert torch.isfinite(out).all()
        ref = hsa_attention(q.double(), k.double(), v.double(), h.edge_index,
                            include_self=include_self)
        torch.testing.assert_close(out.double(), ref, atol=1e-3, rtol=1e-3)
        out_bf16 = hsa_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(),
                                 h.edge_index, include_self=include_self)
        assert out_bf16.dtype == torch.bfloat16
        assert torch.isfinite(out_bf16).all()
    q, k, v = qkv(40, dtype=torch.float32, seed=5)
    ref = hsa_attention(q, k, v, h.edge_index)
    low = hsa_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), h.edge_index)
    torch.testing.assert_close(low.float(), ref, atol=5e-2, rtol=5e-2)


def test_mixed_depth_multimodal_like_tree_matches_reference():
    # A keyed root: a title (flat tokens) and an image (2-level quad-tree).
    parent = [-1, 0, 0] + [1] * 4 + [2] * 4 + [7] * 4 + [8] * 4 + [9] * 4
    h = Hierarchy.from_parent(parent)
    q, k, v = qkv(h.num_nodes)
    pos = torch.randn(h.num_nodes, 3, dtype=torch.float64)
    assert_matches_dense_reference(q, k, v, h.edge_index, pos=pos)
    assert_matches_dense_reference(q, k, v, h.edge_index, pos=pos,
                                   include_self=True)


def test_bad_inputs_raise():
    h = Hierarchy.from_parent([-1, 0, 0])
    q, k, v = qkv(3)
    with pytest.raises(ValueError, match='same shape'):
        hsa_attention(q, k[:, :, :2], v, h.edge_index)
    with pytest.raises(ValueError, match=r'\[N, H, C\]'):
        hsa_attention(q[0], k, v, h.edge_index)
    with pytest.raises(ValueError, match='value'):
        hsa_attention(q, k, v[:2], h.edge_index)
    with pytest.raises(ValueError, match='pos'):
        hsa_attention(q, k, v, h.edge_index, pos=torch.randn(2, 3))
    with pytest.raises(ValueError, match='nodes'):
        hsa_attention(q, k, v, h.edge_index, num_nodes=2)
    with pytest.raises(ValueError, match='cycle'):
        hsa_attention(q, k, v, torch.tensor([[1, 2], [2, 1]]))
    with pytest.raises(ValueError, match='2 parents'):
        hsa_attention(q, k, v, torch.tensor([[1, 1], [0, 2]]))


def test_deterministic_mode_runs_and_repeats_bitwise():
    # Sums into parents are index_add (deterministic on CPU; on CUDA, under
    # this mode, PyTorch's sorted implementation) and moves are gathers:
    # deterministic mode has every operation it asks for and two runs agree
    # bit for bit (on CPU here; a lent GPU would check CUDA, issue 17).
    h = Hierarchy.from_parent(random_parent(60, torch.Generator()
                                            .manual_seed(1)))
    q, k, v = (t.requires_grad_() for t in qkv(h.num_nodes,
                                               dtype=torch.float32))
    pos = torch.randn(h.num_nodes, 3, requires_grad=True)
    torch.use_deterministic_algorithms(True)
    try:
        runs = []
        for _ in range(2):
            out = hsa_attention(q, k, v, h.edge_index, pos=pos)
            runs.append([out] + list(torch.autograd.grad(
                out.square().sum(), (q, k, v, pos))))
    finally:
        torch.use_deterministic_algorithms(False)
    for first, second in zip(*runs):
        assert torch.equal(first, second)


@pytest.mark.parametrize('include_self', [False, True])
def test_internal_rows_are_never_read(include_self):
    # NaN and inf in internal rows of q, k, v (leaves at mixed depths) change
    # no leaf output and no gradient: internal rows are not read at all (a
    # multiply by zero would have let NaN through).
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 1, 2, 3, 3])
    q, k, v = qkv(h.num_nodes)
    clean = hsa_attention(q, k, v, h.edge_index, include_self=include_self)
    inner = ~h.is_leaf
    dirty = [t.clone().requires_grad_() for t in (q, k, v)]
    with torch.no_grad():
        dirty[0][inner] = float('nan')
        dirty[1][inner] = float('inf')
        dirty[2][inner] = float('-inf')
    out = hsa_attention(*dirty, h.edge_index, include_self=include_self)
    torch.testing.assert_close(out[h.is_leaf], clean[h.is_leaf])
    out[h.is_leaf].sum().backward()
    for t in dirty:
        assert torch.isfinite(t.grad).all() and (t.grad[inner] == 0).all()


def test_nan_in_a_leaf_stays_in_its_tree():
    # Like SDPA, NaN in a leaf reaches the leaves that attend to it: those of
    # its own tree, never another tree of the batch.
    from torch_geometric.data import Batch
    trees = [Hierarchy.from_parent(random_parent(n, torch.Generator()
                                                 .manual_seed(n)))
             for n in (9, 12)]
    batch = Batch.from_data_list(trees)
    q, k, v = qkv(batch.num_nodes)
    leaf = batch.is_leaf.nonzero().flatten()
    v[leaf[0]] = float('nan')                    # a leaf of the first tree
    out = hsa_attention(q, k, v, batch.edge_index)
    assert torch.isfinite(out[batch.batch == 1]).all()
