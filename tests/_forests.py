r"""Forests and inputs shared by the tests of the level machinery."""
import torch

from hsa_graph import Hierarchy


def forest_of(parents, relabel_seed=None):
    r"""A forest from per-tree parent vectors (each stored root first, level
    by level, as PyG batches them); with :obj:`relabel_seed` the node ids
    are shuffled."""
    pieces, offset = [], 0
    for parent in parents:
        pieces.append(torch.where(parent >= 0, parent + offset, parent))
        offset += parent.numel()
    parent = torch.cat(pieces)
    if relabel_seed is not None:
        gen = torch.Generator().manual_seed(relabel_seed)
        perm = torch.randperm(parent.numel(), generator=gen)  # old -> new
        relabelled = torch.full_like(parent, -1)
        has = parent >= 0
        relabelled[perm[has]] = perm[parent[has]]
        parent = relabelled
    return Hierarchy.from_parent(parent, validate=False)   # a forest


def qkv(num_nodes, heads=2, channels=3, value_channels=4, seed=0):
    r"""Float64 ``[N, H, C]`` queries and keys, ``[N, H, Cv]`` values."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(num_nodes, heads, c, generator=gen,
                        dtype=torch.float64)
            for c in (channels, channels, value_channels)]


def assert_level_moves_match_plain_indexing(layout, num_nodes):
    r"""Moving a node tensor into levels and back (and both gradients) equals
    plain indexing; stand-in nodes of an aligned layout (ids from
    :obj:`num_nodes` on) read zero rows and their rows are dropped."""
    from hsa_graph.functional.level_order import _from_levels, _to_levels
    x = torch.randn(num_nodes, 2, 5, dtype=torch.float64, requires_grad=True)
    stand_ins = layout.num_nodes - num_nodes

    def padded(t):
        return torch.cat([t, t.new_zeros((stand_ins, ) + t.shape[1:])])
    levels = _to_levels(x, layout, torch.float64)
    expected = [padded(x).transpose(0, 1)[:, level.node_ids]
                for level in layout.levels]
    for got, want in zip(levels, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # gradients, with some levels unused (their rows get zeros)
    weights = [torch.randn_like(piece) for piece in levels]
    loss = sum((piece * w).sum() for piece, w in
               list(zip(levels, weights))[::2])
    plain = sum((piece * w).sum() for piece, w in
                list(zip(expected, weights))[::2])
    torch.testing.assert_close(torch.autograd.grad(loss, x)[0],
                               torch.autograd.grad(plain, x)[0])
    # and back: the inverse permutation, and its gradient
    pieces = [piece.detach().requires_grad_() for piece in expected]
    back = _from_levels(pieces, layout)
    torch.testing.assert_close(back, x.detach(), rtol=0, atol=0)
    # (with create_graph, as in double backward, the gather is plain,
    # differentiable indexing)
    for create_graph in (False, True):
        grad = torch.randn_like(back).requires_grad_(create_graph)
        for g, level in zip(torch.autograd.grad(back, pieces, grad,
                                                retain_graph=True,
                                                create_graph=create_graph),
                            layout.levels):
            torch.testing.assert_close(
                g, padded(grad).transpose(0, 1)[:, level.node_ids],
                rtol=0, atol=0)


def assert_forest_matches_reference(h, include_self, seed):
    r"""The dynamic program on :obj:`h` against the dense reference, with
    and without sibling positions."""
    from hsa_graph.testing import assert_matches_dense_reference
    q, k, v = qkv(h.num_nodes, seed=seed)
    pos = torch.randn(h.num_nodes, 2, dtype=torch.float64)
    assert_matches_dense_reference(q, k, v, h.edge_index,
                                   include_self=include_self)
    assert_matches_dense_reference(q, k, v, h.edge_index, pos=pos,
                                   include_self=include_self)


def assert_forest_gradients(h, include_self, seed=4):
    r"""gradcheck and gradgradcheck of the attention on :obj:`h` in q, k, v
    and the positions."""
    from hsa_graph import hsa_attention
    q, k, v = (t.requires_grad_() for t in qkv(h.num_nodes, seed=seed))
    pos = torch.randn(h.num_nodes, 2, dtype=torch.float64,
                      requires_grad=True)

    def fn(q, k, v, pos):
        return hsa_attention(q, k, v, h.edge_index, pos=pos,
                             include_self=include_self)
    assert torch.autograd.gradcheck(fn, (q, k, v, pos))
    assert torch.autograd.gradgradcheck(fn, (q, k, v, pos))
