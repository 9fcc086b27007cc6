import pytest
import torch
from torch_geometric.data import Data

from hsa_graph import hsa_attention_matrix
from hsa_graph.loader import DataLoader
from hsa_graph.nn import HSAGlobalAttention, HSAGPSConv
from hsa_graph.transforms import AddHierarchy


def graph(num_nodes, num_edges, seed, channels=8):
    gen = torch.Generator().manual_seed(seed)
    edge_index = torch.randint(num_nodes, (2, num_edges), generator=gen)
    return Data(x=torch.randn(num_nodes, channels, generator=gen,
                              dtype=torch.float64),
                edge_index=edge_index,
                edge_attr=torch.randn(num_edges, channels, generator=gen,
                                      dtype=torch.float64))


def graphs():
    # ragged sizes, isolated nodes (7 nodes, 3 edges), a one-node graph
    return [AddHierarchy(branching=3)(g) for g in (
        graph(12, 30, 0), graph(7, 3, 1), graph(1, 0, 2), graph(20, 40, 3))]


def test_add_hierarchy_keeps_the_graph_and_puts_its_nodes_at_the_leaves():
    data = graph(12, 30, 0)
    edges = data.edge_index.clone()
    out = AddHierarchy(branching=3)(data)
    assert torch.equal(out.edge_index, edges)
    tree = out.hierarchy
    assert torch.equal(tree.node_index, torch.arange(12))
    assert tree.is_leaf[:12].all() and not tree.is_leaf[12:].any()
    assert tree.num_nodes > 12


def test_global_attention_matches_the_dense_reference():
    torch.manual_seed(0)
    batch = next(iter(DataLoader(graphs(), batch_size=4)))
    attention = HSAGlobalAttention(8, heads=2).double().eval()
    with torch.no_grad():       # look at theta @ v, before the output map
        attention.lin_out.weight.copy_(torch.eye(8))
        attention.lin_out.bias.zero_()
    out = attention(batch.x, batch.hierarchy)
    tree = batch.hierarchy
    q, k, v = attention.lin_qkv(batch.x).view(-1, 3, 2, 4).unbind(1)
    q, k = attention.norm_query(q), attention.norm_key(k)
    rows = [t.new_zeros(tree.num_nodes, 2, 4).index_copy(0, tree.node_index,
                                                         t)
            for t in (q, k, v)]
    theta = hsa_attention_matrix(rows[0], rows[1], tree.edge_index,
                                 include_self=True)
    expected = torch.einsum('hij,jhc->ihc', theta, rows[2])
    torch.testing.assert_close(
        out, expected[tree.node_index].reshape(-1, 8).detach())


def test_graphs_never_attend_to_each_other():
    torch.manual_seed(0)
    data = graphs()
    layer = HSAGPSConv(8, conv=None, heads=2, norm=None).double().eval()
    batch = next(iter(DataLoader(data, batch_size=4)))
    together = layer(batch.x, batch.edge_index, hierarchy=batch.hierarchy)
    alone = torch.cat([layer(g.x, g.edge_index, hierarchy=g.hierarchy)
                       for g in data])
    torch.testing.assert_close(together, alone)


def test_gps_layer_with_a_local_conv_and_both_loaders():
    from torch_geometric.loader import DataLoader as PyGLoader
    from torch_geometric.nn import GINEConv
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
    layer = HSAGPSConv(8, conv=GINEConv(mlp), heads=2, dropout=0.1).double()
    batch = next(iter(DataLoader(graphs(), batch_size=4)))
    out = layer(batch.x, batch.edge_index, hierarchy=batch.hierarchy,
                edge_attr=batch.edge_attr, batch=batch.batch)
    assert out.shape == (batch.num_nodes, 8)
    out.square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None, name
    layer.eval()
    plain = next(iter(PyGLoader(graphs(), batch_size=4)))  # trees: a list
    assert isinstance(plain.hierarchy, list)
    torch.testing.assert_close(
        layer(plain.x, plain.edge_index, hierarchy=plain.hierarchy,
              edge_attr=plain.edge_attr, batch=plain.batch),
        layer(batch.x, batch.edge_index, hierarchy=batch.hierarchy,
              edge_attr=batch.edge_attr, batch=batch.batch))
    assert repr(HSAGlobalAttention(8, heads=2)) == \
        'HSAGlobalAttention(8, heads=2)'


def test_bad_input_raises_clear_errors():
    data = graphs()
    attention = HSAGlobalAttention(8, heads=2).double()
    with pytest.raises(ValueError, match='another batch'):
        attention(data[0].x, data[1].hierarchy)
    with pytest.raises(TypeError, match='AddHierarchy'):
        attention(data[0].x, data[0])
    with pytest.raises(ValueError, match='multiple of heads'):
        HSAGlobalAttention(8, heads=3)
    with pytest.raises(ValueError, match=r'\[N, 8\]'):
        attention(data[0].x[:, :4], data[0].hierarchy)
    with pytest.raises(ValueError, match='node'):
        AddHierarchy()(Data(edge_index=torch.empty(2, 0, dtype=torch.long),
                            num_nodes=0))
    with pytest.raises(ValueError):         # edge index out of range
        AddHierarchy()(Data(edge_index=torch.tensor([[0], [5]]),
                            num_nodes=3))
