import pytest
import torch
from torch_geometric.data import Batch
from torch_geometric.loader import DataLoader

from hsa_graph import Hierarchy, tree_layout
from hsa_graph.layout import _build, bucketing_for
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
    layout = h.layout()
    assert layout.level_ptr == [0, 1, 3, 8]
    # Level order groups each family contiguously.
    assert layout.order.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
    # Level 1 is one family of 2; level 2 holds families of 3 and 2: on
    # CPU one bucket padded to 3 (a second bucket would cost more than the
    # padding), under CUDA's rule (exact sizes) two.
    assert [[b.size for b in level.buckets] for level in layout.levels] == \
        [[], [2], [3]]
    exact = tree_layout(h.edge_index, h.num_nodes, device='cuda:0',
                        cache=False) if torch.cuda.is_available() else \
        _build(h.parent, h.num_nodes, bucketing_for('cuda'))
    assert sorted(b.size for b in exact.buckets) == [2, 2, 3]
    assert [len(level.buckets) for level in exact.levels] == [0, 1, 2]
    assert layout.levels[1].family_slot is None      # read as a plain view
    assert layout.levels[1].buckets[0].contiguous_start == 0
    assert layout.levels[2].has_siblings.all()


def test_deep_chain_layout_is_fast_and_correct():
    n = 20000
    parent = torch.arange(-1, n - 1)
    h = Hierarchy.from_parent(parent)
    assert h.height == n - 1
    assert h.leaf_count[0] == 1


def test_uniform_fanout_needs_equal_counts_in_level_order():
    # Balanced: every internal level's families sit back to back.
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 2, 2])
    assert [lv.uniform_fanout for lv in h.layout().levels] == [
        True, True, False]
    # Level 2 = one child each for nodes 2 and 1, but level order sorts
    # them by parent id (1 first), opposite to level 1's own order here.
    h = Hierarchy.from_parent([-1, 0, 0, 0, 2, 1, 4, 5])
    layout = h.layout()
    counts = [lv.uniform_fanout for lv in layout.levels]
    assert counts[0] is True          # the root: 3 children
    assert counts[1] is False         # 1, 1 and 0 children
    # Unequal counts.
    assert not Hierarchy.from_parent([-1, 0, 0, 1, 1, 1, 2, 2]).layout(
        ).levels[1].uniform_fanout


def test_level_order_follows_the_parents_order():
    # Nodes 13 (parent 1) and 11 (parent 2) are level 2 in that order; their
    # only children 16 and 12 must follow them in that order (sorting by
    # parent id would put 12 first and break the reshape passes).
    parent = [-1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 11, 1, 12, 12, 13]
    layout = Hierarchy.from_parent(parent).layout()
    assert layout.levels[2].node_ids.tolist() == [13, 11]
    assert layout.levels[3].node_ids.tolist() == [16, 12]
    assert layout.levels[2].uniform_fanout
    # Whatever the labels: a relabelled balanced tree keeps every level
    # a reshape.
    from hsa_graph.datasets.fake import balanced_parent
    base = balanced_parent(64, 4)
    perm = torch.randperm(base.numel(), generator=torch.Generator(
        ).manual_seed(0))
    relabelled = torch.full_like(base, -1)
    relabelled[perm[base >= 0]] = perm[base[base >= 0]]
    layout = Hierarchy.from_parent(relabelled).layout()
    assert all(level.uniform_fanout for level in layout.levels[:-1])
    for level in layout.levels[1:]:     # families in their parents' order
        assert torch.equal(level.parent_local,
                           level.parent_local.sort().values)