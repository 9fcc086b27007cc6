import pytest
import torch

from hsa_graph import Hierarchy
from hsa_graph.nn import HSAConv
from hsa_graph.testing import (assert_batch_invariant, assert_no_graph_breaks,
                               random_hierarchy)


def test_repr_and_shapes():
    conv = HSAConv(16, 32, heads=4)
    assert repr(conv) == 'HSAConv(16, 32, heads=4)'
    h = random_hierarchy(20, channels=16, generator=torch.Generator()
                         .manual_seed(0))
    assert conv(h.x, h.edge_index).shape == (20, 128)
    conv = HSAConv(-1, 8, heads=2, concat=False, root_weight=False)
    assert conv(h.x, h.edge_index).shape == (20, 8)
    assert repr(conv) == 'HSAConv(-1, 8, heads=2)'


def test_output_matches_dense_attention():
    torch.manual_seed(0)
    h = random_hierarchy(25, channels=6)
    pos = torch.randn(25, 3)
    for include_self in (False, True):
        conv = HSAConv(6, 5, heads=3, include_self=include_self,
                       pos_channels=3, root_weight=False, bias=False).double()
        x, pos64 = h.x.double(), pos.double()
        out, weights = conv(x, h.edge_index, pos=pos64,
                            return_attention_weights=True)
        theta = weights.dense()
        _, _, value, _ = conv.project(x, pos64)
        expected = torch.einsum('hij,jhc->ihc', theta, value).reshape(25, 15)
        leaf = h.is_leaf
        torch.testing.assert_close(out[leaf], expected[leaf])
        assert theta.shape == (3, 25, 25)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    h = random_hierarchy(30, channels=4)
    conv = HSAConv(4, 4, heads=2, pos_channels=2)
    out = conv(h.x, h.edge_index, pos=torch.randn(30, 2))
    out.square().sum().backward()
    for name, param in conv.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_batch_invariance():
    gen = torch.Generator().manual_seed(0)
    hierarchies = [random_hierarchy(n, channels=4, generator=gen)
                   for n in (3, 11, 6)]
    conv = HSAConv(4, 3, heads=2).eval()
    assert_batch_invariant(hierarchies, conv)


def test_reset_parameters_and_dropout():
    conv = HSAConv(4, 4, heads=2, dropout=0.5)
    before = conv.lin_query.weight.clone()
    conv.reset_parameters()
    assert not torch.equal(before, conv.lin_query.weight)
    h = random_hierarchy(10, channels=4)
    conv.eval()
    torch.testing.assert_close(conv(h.x, h.edge_index),
                               conv(h.x, h.edge_index))


def test_bad_inputs():
    conv = HSAConv(4, 4)
    h = random_hierarchy(5, channels=4)
    with pytest.raises(ValueError, match=r'\[N, F\]'):
        conv(h.x[0], h.edge_index)
    with pytest.raises(ValueError, match='pos'):
        conv(h.x, h.edge_index, pos=torch.randn(3, 2))
    with pytest.raises(ValueError, match='pos_channels'):   # pos ignored
        conv(h.x, h.edge_index, pos=torch.randn(5, 2))
    with_pos = HSAConv(4, 4, pos_channels=3)
    with pytest.raises(ValueError, match='pos_channels'):   # pos missing
        with_pos(h.x, h.edge_index)
    with pytest.raises(ValueError, match=r'\[5, 3\]'):
        with_pos(h.x, h.edge_index, pos=torch.randn(5, 2))
    for bad in (dict(heads=0), dict(out_channels=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            HSAConv(**{'in_channels': 4, 'out_channels': 4, **bad})
    with pytest.raises(TypeError):        # a MessagePassing argument: refused
        HSAConv(4, 4, aggr='mean')


def test_is_a_plain_module_and_uses_the_loader_layout():
    from hsa_graph.datasets.fake import FakeHierarchyDataset
    from hsa_graph.loader import DataLoader
    from torch_geometric.nn import MessagePassing
    conv = HSAConv(16, 4, heads=2).eval()
    assert not isinstance(conv, MessagePassing)
    batch = next(iter(DataLoader(FakeHierarchyDataset(6), batch_size=3)))
    torch.testing.assert_close(
        conv(batch.x, batch.edge_index, layout=batch.layout),
        conv(batch.x, batch.edge_index))


def test_compiles_without_graph_breaks():
    from hsa_graph.datasets import ragged_parent
    torch.manual_seed(0)
    parent = ragged_parent(48, 4, torch.Generator().manual_seed(0))
    h = Hierarchy.from_parent(parent, x=torch.randn(parent.numel(), 8))
    layout = h.layout
    conv = HSAConv(8, 4, heads=2)

    def run(x):
        return conv(x, h.edge_index, layout=layout)

    assert_no_graph_breaks(run, h.x)
    compiled = torch.compile(run)
    torch.testing.assert_close(compiled(h.x), run(h.x), atol=1e-5, rtol=1e-4)
