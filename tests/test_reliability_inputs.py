r"""Regression tests for issue 18: bad and edge input at the public entry
points gets a ValueError/TypeError that names the problem, never an
IndexError, a silently wrong result or a crash deep inside."""
import time

import networkx as nx
import pytest
import torch
from torch_geometric.data import Data

from hsa_graph import (Hierarchy, from_image, from_point_cloud,
                       hierarchy_from_graph, hsa_attention)
from hsa_graph.transforms import ImageToHierarchy

# -- Hierarchy.from_parent and validate ---------------------------------------


def test_from_parent_empty_says_empty():
    # Used to say "parent must hold integer ids, got torch.float32".
    with pytest.raises(ValueError, match='parent is empty'):
        Hierarchy.from_parent([])
    with pytest.raises(ValueError, match='parent is empty'):
        Hierarchy.from_parent(torch.empty(0, dtype=torch.long))


@pytest.mark.parametrize('parent', [
    torch.tensor([-1., 0., 0.]),
    torch.tensor([True, False]),
    torch.tensor([-1, 0], dtype=torch.complex64),
])
def test_from_parent_needs_integer_ids(parent):
    with pytest.raises(ValueError, match='integer ids'):
        Hierarchy.from_parent(parent)


def test_from_parent_rejects_non_numeric():
    with pytest.raises(TypeError, match='parent'):
        Hierarchy.from_parent(['a', 'b'])


@pytest.mark.parametrize('name', ['x', 'pos', 'node_type'])
def test_scalar_node_attribute_is_a_value_error(name):
    # x=torch.tensor(1.) used to raise an IndexError from validate.
    value = torch.tensor(1) if name == 'node_type' else torch.tensor(1.)
    with pytest.raises(ValueError, match=rf"'{name}' is a scalar"):
        Hierarchy.from_parent([-1, 0, 0], **{name: value})


def test_validate_checks_node_type():
    h = Hierarchy.from_parent([-1, 0, 0])
    h.node_type = torch.tensor([0., 1., 1.])
    with pytest.raises(ValueError, match='integer type ids'):
        h.validate()
    assert not h.validate(raise_on_error=False)
    h.node_type = torch.tensor([0, 1, -5])
    with pytest.raises(ValueError, match=r'node_type\[2\] = -5'):
        h.validate()
    h.node_type = torch.tensor([[0], [1], [1]])
    with pytest.raises(ValueError, match=r"'node_type' must have shape \[N\]"):
        h.validate()
    h.node_type = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match='integer type ids'):
        h.validate()
    # -1 marks "no type" (the root of a composed hierarchy): valid.
    h.node_type = torch.tensor([-1, 0, 1])
    assert h.validate()


# -- hierarchy_from_graph -------------------------------------------------------


def test_float_edge_index_is_a_type_error():
    data = Data(edge_index=torch.tensor([[0., 1.], [1., 2.]]), num_nodes=3)
    with pytest.raises(TypeError, match='edge_index must hold integer node '
                                        'ids, got torch.float32'):
        hierarchy_from_graph(data)
    data = Data(edge_index=torch.tensor([0, 1, 2]), num_nodes=3)
    with pytest.raises(ValueError, match=r'shape \[2, num_edges\]'):
        hierarchy_from_graph(data)
    data = Data(edge_index=torch.tensor([[0, 1], [1, 2]]), num_nodes=3,
                edge_weight=torch.tensor([1 + 1j, 2j]))
    with pytest.raises(TypeError, match='edge_weight'):
        hierarchy_from_graph(data)


def test_graph_attributes_of_unequal_shape_or_bad_weight():
    graph = nx.path_graph(3)
    graph.nodes[0]['x'] = [1.0, 2.0]
    graph.nodes[1]['x'] = [1.0]
    graph.nodes[2]['x'] = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"'x' has shape \[2\] on node 0 but "
                                         r'\[1\] on node 1'):
        hierarchy_from_graph(graph)
    graph = nx.path_graph(3)
    graph.edges[0, 1]['weight'] = 'heavy'
    with pytest.raises(ValueError, match=r"edge \(0, 1\) has a non-numeric"):
        hierarchy_from_graph(graph)


# -- from_image -----------------------------------------------------------------


def test_channels_last_image_is_named():
    img = torch.rand(32, 32, 3)
    # Used to say "patch_size=4 does not divide the image size 32 x 3".
    with pytest.raises(ValueError, match=r'looks channels-last \[H, W, C\]'):
        from_image(img)
    # RGBA with a width the patch divides used to pass silently as a
    # 32-channel image of 32 x 4 pixels.
    with pytest.raises(ValueError, match='channels-last'):
        from_image(torch.rand(32, 32, 4))
    h = from_image(img, channels_last=True)
    reference = from_image(img.permute(2, 0, 1))
    assert torch.equal(h.x, reference.x) and h.num_leaves == 64
    assert from_image(torch.rand(32, 32, 4), channels_last=False
                      ).num_leaves == 8
    transform = ImageToHierarchy(channels_last=True)
    assert torch.equal(transform(Data(image=img)).x, reference.x)
    with pytest.raises(TypeError, match='real'):
        from_image(torch.rand(3, 8, 8, dtype=torch.complex64))
    with pytest.raises(ValueError, match='channels_last'):
        from_image(img, channels_last='yes')


# -- from_point_cloud -----------------------------------------------------------


@pytest.mark.parametrize('method', ['octree', 'kdtree'])
def test_huge_float32_coordinates_keep_their_geometry(method):
    # Near float32's limit the bounding box (and sums) overflowed to inf:
    # the octree put every point in one cell and every pos became 0, the
    # kd-tree gave NaN positions.
    scale = 3e38
    unit = torch.tensor([[1., 1., 1.], [-1., -1., -1.], [0., 0., 0.],
                         [1 / 3, 0., 0.]])
    h = from_point_cloud(unit * scale, method=method, leaf_size=1)
    reference = from_point_cloud(unit, method=method, leaf_size=1)
    assert h.pos.dtype == torch.float32
    assert bool(torch.isfinite(h.pos).all())
    assert bool(torch.isfinite(h.centroid).all())
    assert torch.equal(h.parent, reference.parent)
    torch.testing.assert_close(h.pos, reference.pos)
    torch.testing.assert_close(h.centroid / scale, reference.centroid)


def test_coordinates_beyond_float64_sums_raise():
    pos = torch.tensor([[1.7e308, 0.], [-1.7e308, 0.], [0., 1.]],
                       dtype=torch.float64)
    with pytest.raises(ValueError, match='overflow'):
        from_point_cloud(pos)


# -- linear rejection of malformed trees (the other engineer's fix; kept here
#    as a guard on the public entry point) --------------------------------------


def test_long_cycle_is_rejected_quickly():
    parent = torch.arange(200_001) + 1
    parent[0] = -1
    parent[-1] = 1
    start = time.perf_counter()
    with pytest.raises(ValueError, match='cycle'):
        Hierarchy.from_parent(parent)
    assert time.perf_counter() - start < 10


# -- found by tests/test_fuzz_public_api.py -----------------------------------


def test_patch_larger_than_the_image():
    # With pad=True this used to allocate a 2**40 x 2**40 padded image.
    with pytest.raises(ValueError, match='larger than the image'):
        from_image(torch.zeros(1, 1), patch_size=2**40, pad=True)
    assert from_image(torch.zeros(1, 3, 5), patch_size=5, pad=True
                      ).num_leaves == 1


def test_graph_num_nodes_and_pos_rows():
    data = Data(edge_index=torch.tensor([[0], [0]]), num_nodes=-1)
    with pytest.raises(ValueError, match='num_nodes must be a non-negative'):
        hierarchy_from_graph(data)
    data = Data(edge_index=torch.tensor([[0], [1]]), num_nodes=2)
    # A 1-D pos with the wrong length was reshaped into a RuntimeError.
    with pytest.raises(ValueError, match="'pos' has 1 rows for 2 nodes"):
        hierarchy_from_graph(data, pos=torch.tensor([0.]))
    h = hierarchy_from_graph(data, pos=[0., 1.])
    assert h.pos.shape == (3, 1)


def test_complex_coordinates_are_a_type_error():
    # They were cast to real with a warning, dropping the imaginary part.
    with pytest.raises(TypeError, match='real coordinates'):
        from_point_cloud(torch.randn(4, 3, dtype=torch.complex64))
    with pytest.raises(TypeError, match="'pos' must be a tensor or array"):
        from_point_cloud([[1, 2], [3]])


# -- found by tests/test_fuzz_public_api.py in code this issue does not own ----


def test_attention_value_without_channels():
    h = Hierarchy.from_parent([-1, 0, 0])
    q = torch.randn(3, 1, 2)
    try:
        out = hsa_attention(q, q, torch.randn(3, 1, 0), h.edge_index)
    except ValueError as error:
        assert 'value' in str(error)
    else:
        assert out.shape == (3, 1, 0)
