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
