import networkx as nx
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Data
from torch_geometric.utils import from_networkx as pyg_from_networkx

from _convert_checks import check_conversion
from hsa_graph import hierarchy_from_graph

try:
    import igraph  # noqa: F401
    ENGINES = ['networkx', 'igraph']
except ImportError:
    ENGINES = ['networkx']


def leaf_sets(h):
    r"""Set of leaves below every internal node."""
    parent, n = h.parent.tolist(), h.num_leaves
    below = {}
    for leaf in range(n):
        node = parent[leaf]
        while node >= 0:
            below.setdefault(node, set()).add(leaf)
            node = parent[node]
    return below


@pytest.mark.parametrize('engine', ENGINES)
def test_barbell_splits_at_the_bridge(engine):
    h = hierarchy_from_graph(nx.barbell_graph(4, 0), branching=4,
                             engine=engine)
    check_conversion(h, 8, leaf_bound=4, internal_bound=4)
    root = int(h.root_index[0])
    clusters = sorted(sorted(s) for node, s in leaf_sets(h).items()
                      if node != root)
    assert clusters == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert h.source_node == list(range(8))


def test_spectral_on_a_path_gives_contiguous_chunks():
    h = hierarchy_from_graph(nx.path_graph(16), method='spectral',
                             leaf_size=4, branching=2)
    check_conversion(h, 16, leaf_bound=4, internal_bound=2)
    bottom = sorted(sorted(s) for s in leaf_sets(h).values() if len(s) == 4)
    assert bottom == [list(range(i, i + 4)) for i in range(0, 16, 4)]


@pytest.mark.parametrize('method', ['louvain', 'spectral'])
@pytest.mark.parametrize('engine', ENGINES)
def test_disconnected_components_never_mix(method, engine):
    graph = nx.disjoint_union_all([nx.complete_graph(5), nx.cycle_graph(6),
                                   nx.empty_graph(2)])
    component = {v: i for i, c in enumerate(nx.connected_components(graph))
                 for v in c}
    h = hierarchy_from_graph(graph, branching=3, leaf_size=3, method=method,
                             engine=engine)
    check_conversion(h, 13, leaf_bound=3, internal_bound=3)
    for node, leaves in leaf_sets(h).items():
        kinds = {component[v] for v in leaves}
        # a cluster lies inside one component unless it groups whole ones
        whole = all(all(component[u] != k for u in set(range(13)) - leaves)
                    for k in kinds)
        assert len(kinds) == 1 or whole, (node, leaves)


def test_self_loops_and_parallel_edges_are_cleaned():
    simple = nx.barbell_graph(5, 2)
    messy = nx.MultiGraph(simple)
    messy.add_edges_from([(0, 0), (3, 3), (0, 1), (0, 1), (7, 6)])
    clean = hierarchy_from_graph(simple)
    # parallel edges are merged with summed weight: the tree may shift, but
    # the same nodes are leaves and the result is valid
    h = hierarchy_from_graph(messy)
    check_conversion(h, simple.number_of_nodes(), leaf_bound=8,
                     internal_bound=8)
    only_loops = nx.Graph(simple)
    only_loops.add_edges_from([(0, 0), (4, 4)])
    assert torch.equal(hierarchy_from_graph(only_loops).parent, clean.parent)


def test_pyg_input_matches_networkx_input():
    graph = nx.convert_node_labels_to_integers(
        nx.Graph(nx.karate_club_graph().edges))  # unweighted
    data = pyg_from_networkx(graph)
    data.x = torch.randn(34, 3)
    a = hierarchy_from_graph(graph, branching=4)
    b = hierarchy_from_graph(data, branching=4)
    check_conversion(b, 34, leaf_bound=4, internal_bound=4)
    assert torch.equal(a.parent, b.parent)
    assert a.num_nodes < 34 * 2
    assert torch.equal(b.x[:34], data.x)


@pytest.mark.parametrize('engine', ENGINES)
def test_clusters_are_connected_on_a_grid(engine):
    graph = nx.convert_node_labels_to_integers(nx.grid_2d_graph(20, 20))
    h = hierarchy_from_graph(graph, engine=engine)
    sets = leaf_sets(h)
    connected = [nx.is_connected(graph.subgraph(s)) for s in sets.values()]
    assert sum(connected) / len(connected) >= 0.9


def test_coordinates_give_relative_positions():
    graph = nx.random_geometric_graph(60, 0.3, seed=1)
    pos = torch.tensor([graph.nodes[v]['pos'] for v in graph.nodes])
    h = hierarchy_from_graph(graph)  # picks up the 'pos' node attribute
    check_conversion(h, 60, leaf_bound=8, internal_bound=8, pos_dims=2)
    assert torch.allclose(h.centroid[:60], pos.to(h.centroid.dtype))


def test_bad_graphs():
    with pytest.raises(ValueError, match='empty'):
        hierarchy_from_graph(nx.Graph())
    with pytest.raises(ValueError, match='refers to node 5'):
        hierarchy_from_graph(Data(edge_index=torch.tensor([[0], [5]]),
                                  num_nodes=3))
    with pytest.raises(ValueError, match='positive'):
        hierarchy_from_graph(Data(edge_index=torch.tensor([[0], [1]]),
                                  edge_weight=torch.tensor([-1.]),
                                  num_nodes=2))
    with pytest.raises(ValueError, match='method'):
        hierarchy_from_graph(nx.path_graph(3), method='metis')
    with pytest.raises(ValueError, match='branching'):
        hierarchy_from_graph(nx.path_graph(3), branching=1)
    with pytest.raises(ValueError, match='engine'):
        hierarchy_from_graph(nx.path_graph(3), engine='cugraph')
    with pytest.raises(ValueError, match='rows'):
        hierarchy_from_graph(nx.path_graph(3), x=torch.zeros(2, 1))
    graph = nx.path_graph(3)
    graph.nodes[0]['x'] = [1.0]
    with pytest.raises(ValueError, match='1 of 3 nodes'):
        hierarchy_from_graph(graph)


def test_single_node():
    h = hierarchy_from_graph(nx.empty_graph(1))
    assert h.parent.tolist() == [1, -1]


@settings(max_examples=40, deadline=None)
@given(num_nodes=st.integers(1, 40), p=st.floats(0.0, 0.4),
       branching=st.integers(2, 6), leaf_size=st.integers(2, 6),
       method=st.sampled_from(['louvain', 'spectral']),
       engine=st.sampled_from(ENGINES), seed=st.integers(0, 1000))
def test_graph_properties(num_nodes, p, branching, leaf_size, method, engine,
                          seed):
    graph = nx.gnp_random_graph(num_nodes, p, seed=seed)
    h = hierarchy_from_graph(graph, branching=branching, leaf_size=leaf_size,
                             method=method, seed=seed, engine=engine)
    check_conversion(h, num_nodes, leaf_bound=leaf_size,
                     internal_bound=branching)
    assert [h.source_node[i] for i in range(num_nodes)] == list(graph.nodes)
