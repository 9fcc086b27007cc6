import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from _convert_checks import check_conversion
from hsa_graph import from_image


def test_two_by_two_patches_exact():
    img = torch.arange(16.).view(1, 4, 4)
    h = from_image(img, patch_size=2)
    assert h.parent.tolist() == [4, 4, 4, 4, -1]
    assert h.x[:4].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7],
                                [8, 9, 12, 13], [10, 11, 14, 15]]
    assert h.pos[:4].tolist() == [[-1, -1], [-1, 1], [1, -1], [1, 1]]
    assert h.centroid[:4].tolist() == [[.5, .5], [.5, 1.5], [1.5, .5],
                                       [1.5, 1.5]]


def test_quad_tree_of_a_four_by_four_grid():
    h = from_image(torch.rand(3, 8, 8), patch_size=2)
    check_conversion(h, 16, leaf_bound=4, internal_bound=4, pos_dims=2)
    # patch (r, c) lies in quadrant (r // 2, c // 2): cells 17..20 in
    # Morton order (row bit first), under the root 16
    expected = [17 + (r // 2) * 2 + c // 2 for r in range(4) for c in range(4)]
    assert h.parent.tolist() == expected + [-1] + [16] * 4
    assert h.x.shape == (21, 12)
    assert torch.allclose(h.pos[17:], torch.tensor(
        [[-1., -1], [-1, 1], [1, -1], [1, 1]]) * 2 / 3)


def test_channels_are_flattened_channel_major():
    img = torch.stack([torch.zeros(2, 2), torch.ones(2, 2)])
    h = from_image(img, patch_size=2)
    assert h.parent.tolist() == [1, -1]
    assert h.x[0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_grayscale_integer_image_and_padding():
    img = torch.arange(30, dtype=torch.uint8).view(5, 6)
    with pytest.raises(ValueError, match='pad=True'):
        from_image(img, patch_size=2)
    h = from_image(img, patch_size=2, pad=True)
    check_conversion(h, 9, leaf_bound=4, internal_bound=4, pos_dims=2)
    assert h.x.dtype == torch.get_default_dtype()
    # the padded bottom row of the last patches is zero
    assert h.x[8].tolist() == [28, 29, 0, 0]


@pytest.mark.parametrize('bad, message', [
    (torch.empty(1, 0, 4), 'empty'),
    (torch.zeros(1, 1, 4, 4), 'shape'),
    (torch.full((4, 4), float('nan')), 'NaN'),
])
def test_bad_images(bad, message):
    with pytest.raises(ValueError, match=message):
        from_image(bad, patch_size=2)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 12), cols=st.integers(1, 12),
       patch=st.integers(1, 3))
def test_image_properties(rows, cols, patch):
    img = torch.rand(2, rows * patch, cols * patch)
    h = from_image(img, patch_size=patch)
    check_conversion(h, rows * cols, leaf_bound=4, internal_bound=4,
                     pos_dims=2)
    assert h.x.shape[1] == 2 * patch * patch
    # leaf i is patch (i // cols, i % cols)
    i = torch.arange(rows * cols)
    assert torch.equal(h.centroid[:rows * cols],
                       torch.stack([i // cols, i % cols], 1) + 0.5)


def test_real_digits_quad_tree():
    datasets = pytest.importorskip('sklearn.datasets')
    digits = datasets.load_digits()
    img = torch.tensor(digits.images[:3], dtype=torch.float32)   # [3, 8, 8]
    h = from_image(img[0], patch_size=1)
    # 64 pixels -> 16 cells of 2 x 2 -> 4 cells of 4 x 4 -> root
    assert (h.num_nodes, h.height) == (64 + 16 + 4 + 1, 3)
    check_conversion(h, 64, leaf_bound=4, internal_bound=4, pos_dims=2)
    assert torch.equal(h.x[:64, 0], img[0].flatten())
    h = from_image(img, patch_size=4)                             # 3 channels
    assert h.parent.tolist() == [4, 4, 4, 4, -1]
    assert torch.equal(h.x[0], img[:, :4, :4].flatten())
