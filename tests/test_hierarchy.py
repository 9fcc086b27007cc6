import math

import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from hsa_graph import Hierarchy, tree_layout
from hsa_graph.testing import random_hierarchy


def test_structure_properties():
    h = Hierarchy.from_parent(torch.tensor([-1, 0, 0, 1, 1, 1, 3]))
    assert h.parent.tolist() == [-1, 0, 0, 1, 1, 1, 3]
    assert h.depth.tolist() == [0, 1, 1, 2, 2, 2, 3]
    assert h.height == 3
    assert h.is_leaf.tolist() == [False, False, True, False, True, True, True]
    assert h.leaf_index.tolist() == [2, 4, 5, 6]
    assert h.num_leaves == 4
    assert h.leaf_count.tolist() == [4, 3, 1, 1, 1, 1, 1]
    assert h.child_count.tolist() == [2, 3, 0, 1, 0, 0, 0]
    assert h.root_index.tolist() == [0]


def test_one_node_tree():
    h = Hierarchy.from_parent([-1])
    assert h.num_nodes == 1 and h.num_leaves == 1 and h.height == 0
    assert h.validate()


@pytest.mark.parametrize('parent, message', [
    ([], 'empty'),
    ([0], 'its own parent'),
    ([1, 0], 'cycle'),
    ([-1, 2, 3, 1], 'cycle'),
    ([-1, 7], 'refers to node 7'),
    ([-1, 0, -1], '2 roots'),
    ([-1, -3], 'use -1'),
])
def test_bad_parents_raise(parent, message):
    with pytest.raises(ValueError, match=message):
        Hierarchy.from_parent(torch.tensor(parent, dtype=torch.long))


def test_two_parents_and_bad_attributes_raise():
    h = Hierarchy(edge_index=torch.tensor([[1, 1, 2], [0, 2, 0]]),
                  num_nodes=3)
    with pytest.raises(ValueError, match='2 parents'):
        h.validate()
    assert h.validate(raise_on_error=False) is False
    with pytest.raises(ValueError, match='rows'):
        Hierarchy.from_parent([-1, 0], x=torch.randn(3, 2))
    with pytest.raises(ValueError, match='NaN'):
        Hierarchy.from_parent([-1, 0], pos=torch.tensor([[0.], [float('nan')]]))
    with pytest.raises(ValueError, match=r'\[2, E\]'):
        Hierarchy(edge_index=torch.tensor([0, 1]), num_nodes=2).validate()
    with pytest.raises(ValueError, match='integer ids'):
        Hierarchy.from_parent(torch.tensor([-1.0, 0.0]))


def test_batching_makes_a_forest():
    gen = torch.Generator().manual_seed(0)
    hierarchies = [random_hierarchy(n, generator=gen) for n in (1, 4, 9)]
    batch = Batch.from_data_list(hierarchies)
    assert batch.validate()
    assert batch.num_graphs == 3
    assert batch.root_index.tolist() == [0, 1, 5]
    assert batch.leaf_count.tolist() == torch.cat(
        [h.leaf_count for h in hierarchies]).tolist()
    loader = DataLoader(hierarchies, batch_size=2)
    sizes = [b.num_nodes for b in loader]
    assert sizes == [5, 9]
    again = batch.to_data_list()
    assert all(torch.equal(a.edge_index, b.edge_index)
               for a, b in zip(again, hierarchies))


def test_layout_is_cached_and_invalidated():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1])
    first = tree_layout(h.edge_index, 5)
    assert tree_layout(h.edge_index, 5) is first
    h.edge_index[1, 0] = 0      # in-place edit: node 1 -> root stays valid
    h.edge_index[1, 2] = 2      # node 3 now hangs below node 2
    second = tree_layout(h.edge_index, 5)
    assert second is not first
    assert second.parent.tolist() == [-1, 0, 0, 2, 1]


def test_layout_levels_and_families():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 1, 2, 2])
    layout = h.layout
    # Level 0: the root; level 1: one family of 2; level 2: families of 3
    # and 2 (in their parents' order), padded to 3 slots each (6 slots for
    # 5 nodes: within PAD_LIMIT, so the level stays padded).
    assert [lv.node.tolist() for lv in layout.levels] == \
        [[0], [1, 2], [3, 4, 5, 6, 7, 8]]                 # padding: N
    level = layout.levels[2]
    assert level.parent.tolist() == [0, 1]               # one per family
    assert level.child_weight.tolist() == [1 / 3] * 3 + [1 / 2] * 2 + [0]
    assert layout.levels[1].child_weight.tolist() == [3 / 5, 2 / 5]
    assert level.inner_base.tolist() == [-1e30] * 5 + [0]
    assert level.leaf_node.tolist() == [3, 4, 5, 6, 7, 8]
    assert layout.levels[1].leaf_node.tolist() == [8, 8]
    assert layout.node_slot.tolist() == [0, 0, 1, 0, 1, 2, 3, 4]
    assert layout.node_level_start.tolist() == [0, 1, 1, 3, 3, 3, 3, 3]
    assert layout.node_level_slots.tolist() == [1, 2, 2, 6, 6, 6, 6, 6]
    block, = level.blocks                 # the level in order: no gather
    assert level.block_slot is None and level.unpad is None
    bias = block.key_bias.view(2, 3)
    assert bias[1, 2] < -1e31 and (bias[:, :2] == 0).all()   # log n = 0
    assert layout.levels[1].blocks[0].key_bias.flatten().tolist() == [
        math.log(3), math.log(2)]
    assert layout.levels[0].blocks == [] and layout.levels[0].unpad is None


def test_ragged_level_splits_into_size_classes():
    # Level 2: 9 families, four of 2 children, four of 9 and one of 1 (45
    # nodes; 81 slots padded: too ragged, so packed): two classes (2 and 9
    # wide); the single child (node 9's) has no siblings: the filler row.
    parent = [-1] + [0] * 9
    for p, size in zip(range(1, 10), [2, 9, 2, 9, 2, 9, 2, 9, 1]):
        parent += [p] * size
    layout = Hierarchy.from_parent(parent).layout
    level = layout.levels[2]
    assert [(b.num_families, b.family_size) for b in level.blocks] == \
        [(4, 2), (4, 9)]
    assert level.block_slot.tolist()[:4] == [0, 1, 11, 12]
    assert level.block_slot.numel() == 4 * 2 + 4 * 9
    position, start, size = level.unpad.tolist()
    # Node 9's child: the filler, after both blocks (row H * 44 for any H).
    assert (position[-1], start[-1], size[-1]) == (44, 44, 0)
    assert position[:3] == [0, 1, 8] and start[:3] == [0, 0, 8]
    assert size[:3] == [8, 8, 36]
    assert 'levels=[1, 1x9, 4x2+4x9]' in repr(layout)


def test_size_classes_option():
    parent = [-1] + [0] * 9
    for p, size in zip(range(1, 10), [2, 9, 2, 9, 2, 9, 2, 9, 1]):
        parent += [p] * size
    h = Hierarchy.from_parent(parent)
    one = tree_layout(h.edge_index, h.num_nodes, size_classes=1)
    two = tree_layout(h.edge_index, h.num_nodes)         # cached separately
    # size_classes=1: every level padded to its widest family (the single
    # child too): one block, no gathers.
    assert [(b.num_families, b.family_size) for b in one.levels[2].blocks] \
        == [(9, 9)] and one.levels[2].unpad is None
    assert len(two.levels[2].blocks) == 2
    assert tree_layout(h.edge_index, h.num_nodes, size_classes=1) is one
    for bad in (0, 1.5):
        with pytest.raises(ValueError, match='size_classes'):
            tree_layout(h.edge_index, h.num_nodes, size_classes=bad)
    from hsa_graph.loader import DataLoader
    batch = next(iter(DataLoader([h, h], batch_size=2, size_classes=1)))
    assert len(batch.layout.levels[2].blocks) == 1


def test_one_wide_family_gets_its_own_class():
    # 100 families of 2 and one of 1,000 at one depth: padding them all to
    # 1,000 took 11 s; the wide family is a class of its own.
    parent = [-1] + [0] * 101
    for p, size in enumerate([2] * 100 + [1000], start=1):
        parent += [p] * size
    level = Hierarchy.from_parent(parent).layout.levels[2]
    assert [(b.num_families, b.family_size) for b in level.blocks] == \
        [(100, 2), (1, 1000)]


def test_layout_is_data_that_moves():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 1, 2, 2])
    layout = h.layout
    moved = layout.to('meta')
    assert moved.device.type == 'meta'
    assert all(lv.node.device.type == 'meta' for lv in moved.levels)
    assert layout.to(dtype=torch.float64).levels[2].count.dtype == \
        torch.float64
    assert 'levels=[1, 1x2, 2x3]' in repr(layout)


def test_deep_chain_layout_is_fast_and_correct():
    n = 20000
    parent = torch.arange(-1, n - 1)
    h = Hierarchy.from_parent(parent)
    assert h.height == n - 1
    assert h.leaf_count[0] == 1


def test_families_follow_their_parents_slots():
    # Nodes 13 (parent 1) and 11 (parent 2) are level 2; their only children
    # 16 and 12 are level 3's families in their parents' slot order.
    parent = [-1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 11, 1, 12, 12, 13]
    layout = Hierarchy.from_parent(parent).layout
    assert layout.levels[2].node.tolist() == [13, 11]
    assert layout.levels[3].node.tolist() == [16, 12]
    assert layout.levels[3].parent.tolist() == [0, 1]
    assert layout.levels[4].node.tolist() == [14, 15]


def test_rejecting_a_long_cycle_is_linear():
    # The cycle report walked a list (quadratic: 9.2 s for 40,001 nodes);
    # 200,001 nodes would take minutes that way, well under a second now.
    import time
    parent = torch.arange(200001) + 1
    parent[0], parent[200000] = -1, 1
    start = time.perf_counter()
    with pytest.raises(ValueError, match='cycle'):
        Hierarchy.from_parent(parent)
    assert time.perf_counter() - start < 10
