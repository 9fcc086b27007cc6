import networkx as nx
import pytest
import torch
import torch_geometric.transforms as T
from torch_geometric.data import Batch, Data
from torch_geometric.loader import DataLoader
from torch_geometric.utils import from_networkx as pyg_from_networkx

import hsa_graph
from hsa_graph import Hierarchy
from hsa_graph.transforms import (GraphToHierarchy, ImageToHierarchy,
                                  MeshToHierarchy, PointCloudToHierarchy)


def test_point_cloud_transform_composes_and_keeps_label():
    transform = T.Compose([T.NormalizeScale(),
                           PointCloudToHierarchy(method='kdtree', leaf_size=4)])
    data = Data(pos=torch.rand(30, 3), x=torch.rand(30, 2), y=torch.tensor([3]))
    h = transform(data)
    assert isinstance(h, Hierarchy) and h.num_leaves == 30
    assert h.y.tolist() == [3]
    assert torch.equal(h.x[:30], data.x)
    assert 'leaf_size=4' in repr(transform.transforms[1])


def test_graph_mesh_image_transforms():
    data = pyg_from_networkx(nx.barbell_graph(4, 0))
    data.y = torch.tensor([1])
    h = GraphToHierarchy(branching=4)(data)
    assert h.num_leaves == 8 and h.y.tolist() == [1]
    pos = torch.tensor([[0., 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    face = torch.tensor([[0, 1, 2], [0, 2, 3]]).t()
    h = MeshToHierarchy(leaves='face')(Data(pos=pos, face=face))
    assert h.num_leaves == 2
    h = ImageToHierarchy(patch_size=2)(Data(image=torch.rand(3, 8, 8)))
    assert h.num_leaves == 16
    with pytest.raises(ValueError, match='needs data.image'):
        ImageToHierarchy()(Data(x=torch.rand(3, 8, 8)))


def test_batches_of_converted_hierarchies_are_forests():
    torch.manual_seed(0)
    clouds = [PointCloudToHierarchy(leaf_size=4)(
        Data(pos=torch.rand(n, 3), x=torch.rand(n, 5), y=torch.tensor([n])))
        for n in (7, 20, 33)]
    batch = Batch.from_data_list(clouds)
    assert batch.validate()
    assert batch.num_leaves == 60 and batch.root_index.numel() == 3
    assert batch.y.tolist() == [7, 20, 33]
    # each tree's leaves still map back to its own points
    offset = 0
    for h in clouds:
        leaves = batch.source_id[offset:offset + h.num_nodes]
        assert torch.equal(leaves, h.source_id)
        offset += h.num_nodes
    loader = DataLoader([hsa_graph.from_image(torch.rand(1, 8, 8), 2)
                         for _ in range(4)], batch_size=2)
    for forest in loader:
        assert forest.validate() and forest.root_index.numel() == 2


def test_attention_runs_on_a_batch_of_converted_trees():
    attention = getattr(hsa_graph, 'hsa_attention', None)
    if attention is None:
        pytest.skip('hsa_attention not available yet')
    torch.manual_seed(0)
    trees = [hsa_graph.from_point_cloud(torch.rand(12, 3), leaf_size=3),
             hsa_graph.from_image(torch.rand(1, 8, 8), patch_size=2),
             hsa_graph.hierarchy_from_graph(nx.barbell_graph(4, 1))]
    # one position width for the whole batch: pad 2-D and missing positions
    trees = [Hierarchy(edge_index=h.edge_index, num_nodes=h.num_nodes,
                       pos=torch.nn.functional.pad(
                           h.pos if 'pos' in h else torch.zeros(h.num_nodes, 0),
                           (0, 3 - (h.pos.size(1) if 'pos' in h else 0))))
             for h in trees]
    batch = Batch.from_data_list(trees)
    n = batch.num_nodes
    q, k, v = torch.randn(3, n, 2, 4).unbind(0)
    out = attention(q, k, v, batch.edge_index, pos=batch.pos, num_nodes=n)
    offset = 0
    for h in trees:
        part = slice(offset, offset + h.num_nodes)
        alone = attention(q[part], k[part], v[part], h.edge_index,
                          pos=h.pos, num_nodes=h.num_nodes)
        leaves = h.is_leaf
        assert torch.allclose(out[part][leaves], alone[leaves], atol=1e-5)
        offset += h.num_nodes
