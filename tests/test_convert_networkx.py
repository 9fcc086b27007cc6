import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch

from hsa_graph import Hierarchy, from_networkx, to_networkx


def test_digraph_exact_tree_and_ids():
    graph = nx.DiGraph([('doc', 's1'), ('doc', 's2'), ('s1', 'w1'),
                        ('s1', 'w2')])
    h = from_networkx(graph)
    assert h.source_node == ['doc', 's1', 's2', 'w1', 'w2']
    assert h.parent.tolist() == [-1, 0, 0, 1, 1]
    assert h.source_id.tolist() == [0, 1, 2, 3, 4]


def test_child_to_parent_digraph_and_undirected_tree_agree():
    down = nx.DiGraph([(0, 1), (0, 2), (2, 3)])
    up = nx.DiGraph()
    up.add_nodes_from(range(4))  # node order fixes the ids
    up.add_edges_from([(1, 0), (2, 0), (3, 2)])
    undirected = nx.Graph([(0, 1), (0, 2), (2, 3)])
    expected = [-1, 0, 0, 2]
    assert from_networkx(down).parent.tolist() == expected
    assert from_networkx(up).parent.tolist() == expected
    assert from_networkx(undirected, root=0).parent.tolist() == expected
    # another root of the same undirected tree
    assert from_networkx(undirected, root=3).parent.tolist() == [2, 0, 3, -1]


def test_attributes_and_round_trip():
    graph = nx.DiGraph()
    graph.add_node('r', x=[0., 0.], pos=0., node_type=0)
    graph.add_node('a', x=[1., 2.], pos=0., node_type=1)
    graph.add_node('b', x=[3., 4.], pos=1., node_type=1)
    graph.add_edges_from([('r', 'a'), ('r', 'b')])
    h = from_networkx(graph)
    assert h.x.tolist() == [[0, 0], [1, 2], [3, 4]]
    assert h.pos.tolist() == [[0], [0], [1]]
    assert h.node_type.tolist() == [0, 1, 1]
    back = to_networkx(h)
    assert list(back.nodes) == ['r', 'a', 'b']
    assert set(back.edges) == set(graph.edges)
    assert back.nodes['b'] == {'x': [3., 4.], 'pos': [1.], 'node_type': 1}
    again = from_networkx(back)
    for name in ('x', 'pos', 'node_type', 'edge_index'):
        assert torch.equal(again[name], h[name])


def test_round_trip_of_a_built_hierarchy():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 2], x=torch.arange(6.)[:, None])
    back = from_networkx(to_networkx(h))
    assert torch.equal(back.edge_index, h.edge_index)
    assert torch.equal(back.x, h.x)
    assert set(to_networkx(h, child_to_parent=True).edges) == {
        (1, 0), (2, 0), (3, 1), (4, 1), (5, 2)}


def test_forest_to_networkx():
    batch = Batch.from_data_list([Hierarchy.from_parent([-1, 0, 0]),
                                  Hierarchy.from_parent([-1, 0])])
    graph = to_networkx(batch)
    assert nx.number_weakly_connected_components(graph) == 2
    assert set(graph.edges) == {(0, 1), (0, 2), (3, 4)}


@pytest.mark.parametrize('graph, root, message', [
    (nx.Graph(), None, 'empty'),
    (nx.cycle_graph(4), 0, 'cycle'),
    (nx.Graph([(0, 1), (2, 3)]), 0, 'components'),
    (nx.Graph([(0, 1), (1, 1)]), 0, 'self-loop'),
    (nx.MultiGraph([(0, 1), (0, 1), (1, 2)]), 0, 'parallel edges'),
    # A diamond is acyclic: node 3 has two parents (it used to be reported
    # as 'a cycle').
    (nx.DiGraph([(0, 1), (0, 2), (1, 3), (2, 3)]), None,
     r'acyclic graph in which node 3 has several parents \[1, 2\]'),
    (nx.DiGraph([(0, 1), (1, 2), (2, 0)]), None, r'directed cycle through'),
    (nx.DiGraph([(0, 1), (2, 1), (2, 3), (4, 3)]), None, 'several parents'),
    (nx.path_graph(3), None, 'needs a root'),
    (nx.path_graph(3), 7, 'not a node'),
    (nx.DiGraph([(0, 1)]), 1, 'root is 0'),
])
def test_bad_trees(graph, root, message):
    with pytest.raises(ValueError, match=message):
        from_networkx(graph, root=root)


def test_not_a_tree_points_to_clustering():
    with pytest.raises(ValueError, match='hierarchy_from_graph'):
        from_networkx(nx.complete_graph(4), root=0)


def test_partial_attribute():
    graph = nx.DiGraph([(0, 1), (0, 2)])
    graph.nodes[1]['x'] = [1.0]
    with pytest.raises(ValueError, match='1 of 3 nodes'):
        from_networkx(graph)


def test_attribute_of_unequal_shapes_or_not_numeric():
    graph = nx.DiGraph([(0, 1), (0, 2)])
    for node, value in zip(graph.nodes, ([1.0, 2.0], [1.0], [3.0, 4.0])):
        graph.nodes[node]['x'] = value
    with pytest.raises(ValueError, match=r"'x' has shape \[2\] on node 0 "
                       r'but \[1\] on node 1'):
        from_networkx(graph)
    for node in graph.nodes:
        graph.nodes[node]['x'] = 'abc'
    with pytest.raises(ValueError, match="'x' on node 0 is not a real"):
        from_networkx(graph)
    # Mixed int and float values are fine (promoted).
    for node, value in zip(graph.nodes, (1, 2.5, 3)):
        graph.nodes[node]['x'] = value
    assert from_networkx(graph).x.tolist() == [1.0, 2.5, 3.0]


@settings(max_examples=40, deadline=None)
@given(num_nodes=st.integers(1, 60), seed=st.integers(0, 10**6))
def test_random_trees_round_trip(num_nodes, seed):
    tree = nx.random_labeled_tree(num_nodes, seed=seed) if num_nodes > 1 \
        else nx.empty_graph(1)
    root = seed % num_nodes
    h = from_networkx(tree, root=root)
    assert h.validate() and h.num_nodes == num_nodes
    assert int(h.root_index[0]) == root
    assert set(map(frozenset, to_networkx(h).to_undirected().edges)) == set(
        map(frozenset, tree.edges))
