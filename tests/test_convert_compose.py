import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch_geometric.data import Batch

from hsa_graph import (Hierarchy, compose_hierarchies, from_image,
                       from_point_cloud)


def test_exact_composition():
    title = Hierarchy.from_parent([-1, 0, 0], x=torch.ones(3, 2),
                                  pos=torch.tensor([[0.], [0.], [1.]]))
    image = Hierarchy.from_parent([-1, 0], x=torch.full((2, 3), 2.))
    h = Hierarchy.compose({'title': title, 'image': image})
    assert h.validate()
    assert h.parent.tolist() == [5, 0, 0, 5, 3, -1]
    # one-hot key on the parts' roots, then each part's own positions
    assert h.pos.tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 1],
                              [0, 1, 0], [0, 0, 0], [0, 0, 0]]
    assert h.node_type.tolist() == [0, 0, 0, 1, 1, -1]
    assert h.node_type_names == ['title', 'image']
    assert h.source_id.tolist() == [-1, 1, 2, -1, 1, -1]
    # float features of different widths are zero-padded
    assert h.x.tolist() == [[1, 1, 0]] * 3 + [[2, 2, 2]] * 2 + [[0, 0, 0]]


def test_compose_matches_function_and_keeps_leaf_types():
    torch.manual_seed(0)
    parts = {'points': from_point_cloud(torch.rand(20, 3), leaf_size=4),
             'image': from_image(torch.rand(1, 8, 8), patch_size=2)}
    h = compose_hierarchies(parts)
    assert torch.equal(h.edge_index, Hierarchy.compose(parts).edge_index)
    assert h.num_leaves == 20 + 16
    leaf_type = h.node_type[h.is_leaf]
    assert leaf_type.tolist() == [0] * 20 + [1] * 16
    # source ids map each part's leaves back to its own input
    assert h.source_id[h.is_leaf].tolist() == list(range(20)) + list(range(16))
    assert h.pos.shape[1] == 2 + 3
    # 3-D point centroids and 2-D patch centroids share zero-padded columns
    assert h.centroid.shape == (h.num_nodes, 3)
    assert bool((h.centroid[h.node_type == 1, 2] == 0).all())


def test_nested_composition_prefixes_types():
    a = Hierarchy.from_parent([-1, 0, 0])
    b = Hierarchy.from_parent([-1, 0])
    inner = Hierarchy.compose({'a': a, 'b': b})
    outer = Hierarchy.compose({'pair': inner, 'c': Hierarchy.from_parent([-1, 0])})
    assert outer.node_type_names == ['pair/a', 'pair/b', 'c']
    assert outer.node_type[outer.is_leaf].tolist() == [0, 0, 1, 2]
    assert outer.height == 3


def test_other_attributes_are_merged_or_reported():
    a = Hierarchy.from_parent([-1, 0], token_id=torch.tensor([-1, 7]))
    b = Hierarchy.from_parent([-1, 0], centroid=torch.zeros(2, 2),
                              label='cat')
    with pytest.warns(UserWarning, match='label'):
        h = Hierarchy.compose({'a': a, 'b': b})
    assert h.token_id.tolist() == [-1, 7, -1, -1, -1]
    assert h.centroid.shape == (5, 2)


def test_batching_composed_hierarchies():
    parts = [Hierarchy.compose({'a': Hierarchy.from_parent([-1, 0, 0]),
                                'b': Hierarchy.from_parent([-1, 0])})
             for _ in range(3)]
    batch = Batch.from_data_list(parts)
    assert batch.validate()
    assert batch.num_nodes == 18 and batch.root_index.numel() == 3


def test_bad_parts():
    with pytest.raises(ValueError, match='non-empty'):
        compose_hierarchies({})
    with pytest.raises(ValueError, match='not a Hierarchy'):
        compose_hierarchies({'a': torch.zeros(3)})
    forest = Batch.from_data_list([Hierarchy.from_parent([-1, 0])] * 2)
    with pytest.raises(ValueError, match='roots'):
        compose_hierarchies({'a': Hierarchy(edge_index=forest.edge_index,
                                            num_nodes=4)})
    with pytest.raises(ValueError, match='embed'):
        compose_hierarchies({
            'text': Hierarchy.from_parent([-1, 0], x=torch.tensor([0, 5])),
            'image': Hierarchy.from_parent([-1, 0], x=torch.rand(2, 4))})


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 12), min_size=1, max_size=4),
       seed=st.integers(0, 999))
def test_composition_properties(sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    parts = {f'part{i}': from_point_cloud(torch.rand(n, 2, generator=generator),
                                          leaf_size=2)
             for i, n in enumerate(sizes)}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        h = compose_hierarchies(parts)
    assert h.validate() and h.root_index.tolist() == [h.num_nodes - 1]
    assert h.num_leaves == sum(sizes)
    leaf_type = h.node_type[h.is_leaf]
    expected = torch.repeat_interleave(torch.arange(len(sizes)),
                                       torch.tensor(sizes))
    assert torch.equal(leaf_type, expected)
    # every leaf maps back to its own part's input
    for number, n in enumerate(sizes):
        assert h.source_id[h.is_leaf][leaf_type == number].tolist() == list(
            range(n))
    # the keyed family: one-hot keys on the parts' roots
    keyed = h.parent == h.num_nodes - 1
    assert torch.equal(h.pos[keyed, :len(sizes)], torch.eye(len(sizes)))
