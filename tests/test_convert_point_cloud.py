import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _convert_checks import check_conversion
from hsa_graph import from_point_cloud
from hsa_graph.convert.point_cloud import morton_code


def test_morton_code_interleaves_bits():
    grid = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1], [2, 3]])
    # axis 0 is the more significant bit of each pair
    assert morton_code(grid, bits=2).tolist() == [0, 1, 2, 3, 0b1101]


def test_octree_four_corners_is_one_family():
    pos = torch.tensor([[0., 0.], [1., 1.], [0., 1.], [1., 0.]])
    h = from_point_cloud(pos, leaf_size=1)
    assert h.parent.tolist() == [4, 4, 4, 4, -1]
    assert h.pos[:4].tolist() == [[-1, -1], [1, 1], [-1, 1], [1, -1]]
    assert h.centroid[4].tolist() == [0.5, 0.5]


def test_octree_two_clusters_exact_tree():
    far = [[1., 1.], [.9, 1.], [1., .9], [.9, .9]]
    near = [[0., 0.], [.1, 0.], [0., .1], [.1, .1]]
    h = from_point_cloud(torch.tensor(far + near), leaf_size=4)
    # root 8; the cell nearer the origin comes first in Morton order
    assert h.parent.tolist() == [10] * 4 + [9] * 4 + [-1, 8, 8]
    assert torch.allclose(h.pos[9], torch.tensor([-.9, -.9]))
    assert torch.allclose(h.pos[10], torch.tensor([.9, .9]))
    assert torch.allclose(h.centroid[8], torch.tensor([.5, .5]))


def test_octree_keeps_coincident_points_in_bounded_groups():
    h = from_point_cloud(torch.ones(10, 3), leaf_size=3)
    check_conversion(h, 10, leaf_bound=8, internal_bound=8, pos_dims=3)
    # 10 copies of one point: two groups of 5 under the root
    assert sorted(h.child_count[10:].tolist()) == [2, 5, 5]
    assert bool((h.pos == 0).all())


def test_kdtree_median_splits_exact_tree():
    value = torch.tensor([5., 1., 4., 2., 3., 0., 7., 6.])
    h = from_point_cloud(value[:, None], method='kdtree', leaf_size=2)
    # root 8 -> halves 9 (0..3), 10 (4..7) -> pairs 11..14 by value
    expected = [11 + int(v) // 2 for v in value] + [-1, 8, 8, 9, 9, 10, 10]
    assert h.parent.tolist() == expected


def test_kdtree_branching_four():
    h = from_point_cloud(torch.arange(16.)[:, None], method='kdtree',
                         leaf_size=4, branching=4)
    assert h.parent.tolist() == [17 + i // 4 for i in range(16)] + [-1] + [16] * 4


def test_features_and_centroids():
    torch.manual_seed(0)
    pos, x = torch.rand(300, 3), torch.randn(300, 5)
    for method in ('octree', 'kdtree'):
        h = from_point_cloud(pos, x=x, method=method, leaf_size=8)
        check_conversion(h, 300, leaf_bound=8, pos_dims=3)
        assert torch.equal(h.x[:300], x)
        assert bool((h.x[300:] == 0).all())
        root = int(h.root_index[0])
        assert torch.allclose(h.centroid[root], pos.mean(0), atol=1e-5)
        assert torch.equal(h.centroid[:300], pos)


def test_leaves_are_spatially_coherent():
    # two far-apart blobs never share a cell below the root
    torch.manual_seed(0)
    pos = torch.cat([torch.rand(64, 3), torch.rand(64, 3) + 10])
    for method in ('octree', 'kdtree'):
        h = from_point_cloud(pos, method=method, leaf_size=8)
        parent = h.parent
        root = int(h.root_index[0])
        top = torch.arange(128)
        while True:  # climb to the child of the root
            up = parent[top]
            if bool((up == root).all()):
                break
            top = torch.where(up == root, top, up)
        assert set(top[:64].tolist()).isdisjoint(top[64:].tolist())


@pytest.mark.parametrize('bad, message', [
    (torch.empty(0, 3), 'empty'),
    (torch.tensor([[0., float('nan'), 0.]]), 'NaN or inf'),
    (torch.tensor([[0., float('inf'), 0.]]), 'NaN or inf'),
    (torch.zeros(5), 'shape'),
])
def test_bad_coordinates(bad, message):
    with pytest.raises(ValueError, match=message):
        from_point_cloud(bad)


def test_bad_options():
    pos = torch.rand(10, 3)
    with pytest.raises(ValueError, match='rows'):
        from_point_cloud(pos, x=torch.rand(9, 2))
    with pytest.raises(ValueError, match='method'):
        from_point_cloud(pos, method='ball')
    with pytest.raises(ValueError, match='leaf_size'):
        from_point_cloud(pos, leaf_size=0)
    with pytest.raises(ValueError, match='branching'):
        from_point_cloud(pos, method='kdtree', branching=1)


@settings(max_examples=60, deadline=None)
@given(num_points=st.integers(1, 200), dims=st.integers(1, 3),
       leaf_size=st.integers(1, 12), branching=st.integers(2, 5),
       method=st.sampled_from(['octree', 'kdtree']),
       coarse=st.booleans(), seed=st.integers(0, 2**16))
def test_point_cloud_properties(num_points, dims, leaf_size, branching,
                                method, coarse, seed):
    generator = torch.Generator().manual_seed(seed)
    pos = torch.rand(num_points, dims, generator=generator)
    if coarse:  # many exact duplicates
        pos = (pos * 3).floor()
    h = from_point_cloud(pos, method=method, leaf_size=leaf_size,
                         branching=branching)
    b = 2**dims if method == 'octree' else branching
    check_conversion(h, num_points, leaf_bound=max(leaf_size, b),
                     internal_bound=b, pos_dims=dims)
    assert torch.allclose(h.centroid[:num_points], pos)
