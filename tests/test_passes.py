import torch

from hsa_graph import Hierarchy, tree_downward, tree_upward
from hsa_graph.testing import random_parent


def dense_ancestors(parent):
    n = parent.numel()
    anc = torch.eye(n, dtype=torch.bool)
    for i in range(n):
        j = int(parent[i])
        while j >= 0:
            anc[j, i] = True
            j = int(parent[j])
    return anc


def test_upward_and_downward_match_dense_ancestors():
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 30):
        parent = random_parent(n, gen)
        h = Hierarchy.from_parent(parent)
        anc = dense_ancestors(parent).double()
        src = torch.randn(n, 3, dtype=torch.float64, generator=gen)
        leaf = h.is_leaf.double()
        expected = anc @ (src * leaf[:, None])
        torch.testing.assert_close(tree_upward(src, h.edge_index), expected)
        counts = anc @ leaf
        torch.testing.assert_close(
            tree_upward(src, h.edge_index, reduce='mean'),
            expected / counts[:, None])
        torch.testing.assert_close(
            tree_upward(src, h.edge_index, leaves_only=False), anc @ src)
        torch.testing.assert_close(
            tree_upward(src, h.edge_index, leaves_only=False, reduce='mean'),
            (anc @ src) / anc.sum(1, keepdim=True))
        torch.testing.assert_close(tree_downward(src, h.edge_index),
                                   anc.T @ src)
        positive = src.abs() + 0.5
        torch.testing.assert_close(
            tree_downward(positive, h.edge_index, reduce='prod'),
            torch.exp(anc.T @ positive.log()))


def test_passes_are_differentiable():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 2])
    src = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda s: tree_upward(s, h.edge_index, reduce='mean'), (src, ))
    assert torch.autograd.gradcheck(
        lambda s: tree_downward(s, h.edge_index), (src, ))


def test_children_sum_of_ragged_level_saves_only_the_index():
    # autograd's index_add saves its source: a ragged level's q, k, v
    # copies stayed alive until backward through the parents' sums.
    from hsa_graph import tree_layout
    from hsa_graph.functional.passes import children_sum
    h = Hierarchy.from_parent([-1, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    layout = tree_layout(h.edge_index, h.num_nodes)
    level = 1
    assert not layout.levels[level].uniform_fanout
    rows = layout.levels[level + 1].node_ids.numel()
    child = torch.randn(3, rows, 4, dtype=torch.float64, requires_grad=True)
    out = children_sum(child, layout, level, dim=1)
    assert all(t.dtype == torch.long for t in out.grad_fn.saved_tensors)
    index = layout.levels[level + 1].parent_local
    want = torch.zeros(3, 3, 4, dtype=torch.float64).index_add(1, index, child)
    torch.testing.assert_close(out, want)
    assert torch.autograd.gradcheck(
        lambda c: children_sum(c, layout, level, dim=1), (child, ))
    assert torch.autograd.gradgradcheck(
        lambda c: children_sum(c, layout, level, dim=1), (child, ))
