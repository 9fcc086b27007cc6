import pytest
import torch

pytest.importorskip('matplotlib')

import hsa_graph  # noqa: E402
from hsa_graph import Hierarchy  # noqa: E402
from hsa_graph.plot import (leaf_order, plot_attention, plot_hierarchy,  # noqa: E402
                            tree_positions)

PNG_MAGIC = b'\x89PNG'


def test_tree_positions_centre_parents_over_children():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 1])
    coordinates = tree_positions(h)
    assert coordinates[3] == (0.0, -2.0) and coordinates[5] == (2.0, -2.0)
    assert coordinates[2] == (3.0, -1.0)
    assert coordinates[1] == (1.0, -1.0)
    assert coordinates[0] == (2.0, 0.0)  # mean of its children 1 and 2


def test_leaf_order_keeps_subtrees_contiguous():
    h = Hierarchy.from_parent([-1, 0, 0, 2, 1, 2, 1])
    assert leaf_order(h).tolist() == [4, 6, 3, 5]


def test_plots_write_png(tmp_path):
    import matplotlib.pyplot as plt
    h = hsa_graph.from_image(torch.rand(1, 8, 8), patch_size=2)
    tree = tmp_path / 'tree.png'
    plot_hierarchy(h, path=str(tree))
    assert tree.read_bytes()[:4] == PNG_MAGIC
    composed = Hierarchy.compose({'a': h, 'b': Hierarchy.from_parent([-1, 0, 0])})
    plot_hierarchy(composed, color_by='type', path=str(tmp_path / 'type.png'))
    if getattr(hsa_graph, 'hsa_attention_matrix', None) is not None:
        attention = tmp_path / 'attention.png'
        ax = plot_attention(h, path=str(attention))
        assert attention.read_bytes()[:4] == PNG_MAGIC
        shown = ax.images[0].get_array()
        assert shown.shape == (16, 16)
    plt.close('all')


def test_plot_errors():
    h = Hierarchy.from_parent([-1, 0, 0])
    with pytest.raises(ValueError, match='color_by'):
        plot_hierarchy(h, color_by='size')
    with pytest.raises(ValueError, match='values for'):
        plot_hierarchy(h, color_by=torch.zeros(2))
    with pytest.raises(ValueError, match='node_type'):
        plot_hierarchy(h, color_by='type')
    with pytest.raises(ValueError, match='max_nodes'):
        plot_hierarchy(h, max_nodes=2)
