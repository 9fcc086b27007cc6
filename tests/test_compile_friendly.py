import torch
from hypothesis import given, settings, strategies as st
from torch_geometric.data import Batch

import hsa_graph.layout as layout_module
from hsa_graph import Hierarchy, hsa_attention, tree_layout
from hsa_graph.datasets import ragged_parent
from hsa_graph.testing import (assert_matches_dense_reference,
                               compiled_graph_counts, random_parent)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), num_nodes=st.integers(1, 40),
       include_self=st.booleans(), use_pos=st.booleans())
def test_compile_friendly_layout_matches_dense_reference(seed, num_nodes,
                                                         include_self,
                                                         use_pos):
    gen = torch.Generator().manual_seed(seed)
    h = Hierarchy.from_parent(random_parent(num_nodes, gen))
    q, k, v = (torch.randn(h.num_nodes, 2, 3, generator=gen,
                           dtype=torch.float64) for _ in range(3))
    pos = torch.randn(h.num_nodes, 2, generator=gen,
                      dtype=torch.float64) if use_pos else None
    layout = tree_layout(h.edge_index, h.num_nodes, cache=False,
                         compile_friendly=True)

    def friendly(q, k, v, edge_index, **kwargs):
        return hsa_attention(q, k, v, layout=layout, **kwargs)

    assert_matches_dense_reference(q, k, v, h.edge_index, pos=pos,
                                   include_self=include_self,
                                   attention=friendly)


def test_compile_friendly_layout_has_one_code_path():
    parent = ragged_parent(200, 6, torch.Generator().manual_seed(0))
    layout = tree_layout(Hierarchy.from_parent(parent).edge_index,
                         parent.numel(), cache=False, compile_friendly=True)
    assert not layout.identity_order
    for depth, level in enumerate(layout.levels):
        assert len(level.buckets) <= 1 and not level.uniform_fanout
        if level.buckets:
            assert level.family_slot is not None
            assert level.buckets[0].contiguous_start is None
            size = level.buckets[0].size
            assert size & (size - 1) == 0          # a power of two
        if depth < layout.num_levels - 1:
            assert level.leaf_kind == 'mixed'
    # cached separately from the default layout of the same tensor
    h = Hierarchy.from_parent(parent)
    assert h.layout(compile_friendly=True) is not h.layout()
    assert h.layout(compile_friendly=True) is h.layout(compile_friendly=True)


def test_compile_friendly_batches_reuse_graphs(monkeypatch):
    # Ragged batches of one depth: with the default layout each batch's
    # bucket pattern is new; with compile_friendly=True they share graphs.
    # The bucketing of CUDA layouts (up to 8 exact sizes per level), which
    # varies most: CPU layouts group these small trees' sizes more coarsely.
    monkeypatch.setitem(layout_module._BUCKETING, 'cpu',
                        layout_module.Bucketing())
    gen = torch.Generator().manual_seed(0)
    trees = [Hierarchy.from_parent(ragged_parent(64, 4, gen))
             for _ in range(60)]
    heights = [h.height for h in trees]
    depth = max(set(heights), key=heights.count)
    trees = [h for h in trees if h.height == depth]
    batches = [Batch.from_data_list(trees[i:i + 4])
               for i in range(0, len(trees) - 3, 4)][:6]
    assert len(batches) >= 4

    def graphs(compile_friendly):
        return compiled_graph_counts(batches, compile_friendly)[-1]

    # At most: the static graph, the dynamic one, and one split of two sizes
    # that happened to be equal in the first batch (dynamo's duck sizing).
    friendly, default = graphs(True), graphs(False)
    assert friendly <= 3, friendly
    assert default >= friendly + 2, (default, friendly)


def test_inductor_compiles_backward_of_a_single_tree():
    # One tree: its root is a lone parent. Gathering the root's row for its
    # children made a one-row scatter in backward, which Inductor's CPU
    # backend failed to generate (InductorError); the lone parent is now
    # broadcast like a uniform fan-out.
    import torch._dynamo
    from hsa_graph.datasets import balanced_parent
    torch._dynamo.reset()
    h = Hierarchy.from_parent(balanced_parent(64, 4))
    layout = tree_layout(h.edge_index, h.num_nodes, compile_friendly=True)
    q, k, v = (torch.randn(h.num_nodes, 2, 8, requires_grad=True)
               for _ in range(3))

    def step(fn):
        out = fn(q, k, v)
        return (out, *torch.autograd.grad(out.square().sum(), (q, k, v)))
    attend = lambda q, k, v: hsa_attention(q, k, v, layout=layout)  # noqa
    for got, want in zip(step(torch.compile(attend)), step(attend)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_dynamic_compile_traces_ragged_backward():
    # Dynamo traces an autograd.Function's backward when its inputs need
    # gradients; a helper called there with a default float argument
    # (bmm_stat's scale) failed to trace in torch 2.13 ("lift_tracked_
    # freevar_to_input should not be called on root SubgraphTracer") on
    # ragged levels, where the sibling softmax mixes values itself.
    import torch._dynamo
    from hsa_graph.datasets.fake import ragged_parent
    from hsa_graph.nn import HSAConv
    torch._dynamo.reset()
    conv = HSAConv(16, 8, heads=2)
    compiled = torch.compile(conv, dynamic=True)
    parent = ragged_parent(120, 6, torch.Generator().manual_seed(1))
    h = Hierarchy.from_parent(parent, x=torch.randn(parent.numel(), 16))
    layout = h.layout(compile_friendly=True)
    x = h.x.requires_grad_()

    def step(fn):
        out = fn(x, h.edge_index, layout=layout)
        return (out, *torch.autograd.grad(out.square().sum(), x))
    for got, want in zip(step(compiled), step(conv)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
