r"""Forests of trees of unequal height run on bottom-aligned levels: each
shorter tree's root gets a chain of single-child stand-in ancestors, so that
every tree's deepest leaves share the last level (``TreeLayout.aligned``).
The stand-ins must change no output and no gradient, and never reach a
real row."""
import pytest
import torch
from torch_geometric.data import Batch

from hsa_graph import Hierarchy, hsa_attention, hsa_log_partition, tree_layout
from hsa_graph.datasets.fake import balanced_parent, ragged_parent
from hsa_graph.functional.dp_steps import _fusable_bottom
from hsa_graph.functional.level_order import _level_index
from hsa_graph.layout import _aligned_parent, _depth_and_root
from hsa_graph.testing import assert_batch_invariant

from _forests import (assert_forest_gradients,
                      assert_forest_matches_reference,
                      assert_level_moves_match_plain_indexing, forest_of,
                      qkv)


def unequal_balanced(relabel_seed=None):
    # heights 3, 1 and 2: stand-in chains of length 0, 2 and 1
    return forest_of([balanced_parent(64, 4), balanced_parent(4, 4),
                   balanced_parent(16, 4)], relabel_seed)


def unequal_ragged(relabel_seed=None, leaves=(40, 7, 90, 2), branching=3):
    gen = torch.Generator().manual_seed(5)
    return forest_of([ragged_parent(n, branching, gen) for n in leaves],
                  relabel_seed)


def test_aligned_parent_adds_stand_in_chains():
    # roots 0 (height 2), 3 (height 0), 4 (height 1)
    parent = torch.tensor([-1, 0, 1, -1, -1, 4])
    depth, root = _depth_and_root(parent)
    extended = _aligned_parent(parent, depth, root)
    # 3 -> 6 -> 7 (root); 4 -> 8 (root)
    assert extended.tolist() == [-1, 0, 1, 6, 8, 4, 7, -1, -1]
    same = torch.tensor([-1, 0, -1, 2])
    assert _aligned_parent(same, *_depth_and_root(same)) is None


def test_aligned_levels_are_all_leaves_or_none():
    h = unequal_balanced()
    layout = tree_layout(h.edge_index, h.num_nodes)
    mixed = [level.leaf_kind for level in layout.levels]
    assert 'mixed' in mixed         # depth levels mix leaves and inner nodes
    aligned = layout.aligned
    assert aligned is not None and aligned.virtual_from == h.num_nodes
    assert aligned.num_nodes == h.num_nodes + 3
    assert [level.leaf_kind for level in aligned.levels] == \
        ['none', 'none', 'none', 'all']
    assert aligned.levels[-1].size == 64 + 4 + 16
    assert _fusable_bottom(aligned)     # balanced: fan-out 4 above
    # one tree height: nothing to align
    single = forest_of([balanced_parent(64, 4), balanced_parent(48, 4)])
    assert tree_layout(single.edge_index, single.num_nodes).aligned is None
    # compile-friendly layouts keep one code path
    friendly = tree_layout(h.edge_index, h.num_nodes, cache=False,
                           compile_friendly=True)
    assert friendly.aligned is None


@pytest.mark.parametrize('relabel', [None, 2])
def test_level_moves_drop_stand_in_rows(relabel):
    # runs long enough to be copied as slices, or shuffled ids: a gather
    h = unequal_ragged(relabel, leaves=(600, 60, 1500, 9), branching=8)
    layout = tree_layout(h.edge_index, h.num_nodes).aligned
    plan = _level_index(layout)
    assert (plan.ids is None) == (relabel is None)   # runs / index gather
    assert_level_moves_match_plain_indexing(layout, h.num_nodes)


@pytest.mark.parametrize('include_self', [False, True])
@pytest.mark.parametrize('make', [unequal_balanced, unequal_ragged])
@pytest.mark.parametrize('relabel', [None, 4])
def test_aligned_forest_matches_dense_reference(make, relabel, include_self):
    h = make(relabel)
    assert tree_layout(h.edge_index, h.num_nodes).aligned is not None
    assert_forest_matches_reference(h, include_self, seed=3)


@pytest.mark.parametrize('include_self', [False, True])
def test_aligned_forest_gradients(include_self):
    h = unequal_ragged(relabel_seed=1, leaves=(5, 2, 9))
    assert tree_layout(h.edge_index, h.num_nodes).aligned is not None
    assert_forest_gradients(h, include_self)


def test_aligned_batch_is_batch_invariant():
    gen = torch.Generator().manual_seed(0)
    trees = []
    for leaves in (30, 3, 70, 1, 12):
        parent = ragged_parent(leaves, 3, gen)
        trees.append(Hierarchy.from_parent(
            parent, x=torch.randn(parent.numel(), 2, 4, generator=gen,
                                  dtype=torch.float64)))
    batch = Batch.from_data_list(trees)
    assert tree_layout(batch.edge_index, batch.num_nodes).aligned is not None

    def run(x, edge_index):
        out = hsa_attention(x, x.flip(-1), x * 2, edge_index,
                            num_nodes=x.size(0))
        free = hsa_log_partition(x, x.flip(-1), edge_index,
                                 num_nodes=x.size(0), include_self=True)
        return torch.cat([out, free.unsqueeze(-1)], dim=-1)
    assert_batch_invariant(trees, run)


def test_compiled_aligned_forest_matches_eager():
    import torch._dynamo
    torch._dynamo.reset()
    h = unequal_ragged(relabel_seed=3)
    layout = tree_layout(h.edge_index, h.num_nodes)
    q, k, v = (t.float().requires_grad_() for t in qkv(h.num_nodes, seed=6))
    compiled = torch.compile(
        lambda q, k, v: hsa_attention(q, k, v, layout=layout),
        backend='aot_eager')
    out = compiled(q, k, v)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    expected = hsa_attention(q, k, v, layout=layout)
    expected_grads = torch.autograd.grad(expected.square().sum(), (q, k, v))
    torch.testing.assert_close(out, expected)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)


def test_runs_stop_where_stand_ins_start():
    # A short tree first (stand-in root N above its root 0) and a tall tree
    # whose root is the last real id N - 1: on the roots' level, N - 1 and
    # N are consecutive ids. Long runs elsewhere make the moves slice
    # copies; a run from N - 1 into N would read past the node rows.
    short = balanced_parent(64, 8)                    # height 2
    tall = balanced_parent(512, 8)                    # height 3
    new_id = torch.arange(tall.numel()) - 1           # root 0 -> last id
    new_id[0] = tall.numel() - 1
    relabelled = torch.full_like(tall, -1)
    relabelled[new_id[1:]] = new_id[tall[1:]]
    h = forest_of([short, relabelled])
    layout = tree_layout(h.edge_index, h.num_nodes).aligned
    assert layout is not None and _level_index(layout).ids is None  # runs
    assert_level_moves_match_plain_indexing(layout, h.num_nodes)
    assert_forest_matches_reference(h, include_self=False, seed=8)
