r"""How families of unequal size are grouped into padded buckets: CPU
layouts pick the cheapest grouping of the sorted sizes (padding work plus a
fixed cost per bucket), CUDA layouts keep the kernel-count rule."""
import itertools

import pytest
import torch

import hsa_graph.layout as layout_module
from hsa_graph import Hierarchy, hsa_attention, tree_layout
from hsa_graph.datasets.fake import ragged_parent
from hsa_graph.layout import (Bucketing, _build, _cheapest_grouping,
                              bucketing_for)
from hsa_graph.testing import assert_matches_dense_reference


def grouping_cost(sizes, padded, bucket_cost):
    block = padded.double()
    return float((block * block + 8 * block).sum()) + \
        bucket_cost * torch.unique(padded).numel()


def brute_force(sizes, bucket_cost):
    r"""Least cost over every split of the sorted distinct sizes into
    runs."""
    values = torch.unique(sizes)
    best = None
    for cuts in itertools.product([False, True], repeat=len(values) - 1):
        padded_value = values.clone()
        end = len(values)
        for i in range(len(values) - 2, -2, -1):
            if i < 0 or cuts[i]:
                padded_value[i + 1:end] = values[end - 1]
                end = i + 1
        padded = padded_value[torch.searchsorted(values, sizes)]
        cost = grouping_cost(sizes, padded, bucket_cost)
        best = cost if best is None else min(best, cost)
    return best


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('bucket_cost', [0.0, 50.0, 400.0, 5000.0])
def test_cheapest_grouping_is_optimal(seed, bucket_cost):
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(2, 40, (int(torch.randint(5, 60, (1,),
                                                     generator=gen)),),
                          generator=gen)
    if torch.unique(sizes).numel() > 12:
        sizes = sizes[torch.isin(sizes, torch.unique(sizes)[:12])]
    padded = _cheapest_grouping(sizes, bucket_cost)
    assert bool((padded >= sizes).all())          # padding only grows
    assert grouping_cost(sizes, padded, bucket_cost) == pytest.approx(
        brute_force(sizes, bucket_cost))


def test_cheapest_grouping_extremes():
    sizes = torch.tensor([2, 2, 3, 5, 5, 9, 17, 31, 30])
    assert torch.equal(_cheapest_grouping(sizes, 0.0), sizes)     # exact
    assert _cheapest_grouping(sizes, 1e9).tolist() == [31] * 9    # one


def test_bucketing_follows_the_device():
    assert bucketing_for('cpu').bucket_cost is not None
    assert bucketing_for('cuda') == Bucketing()       # 8 exact, powers of 2
    gen = torch.Generator().manual_seed(1)
    parent = ragged_parent(3000, 16, gen)
    cpu = _build(parent, parent.numel(), bucketing_for('cpu'))
    cuda_rule = _build(parent, parent.numel(), Bucketing())
    # padded rows of the leaf level: the CPU grouping pads less
    rows = [sum(b.member_index.numel() for b in layout.levels[-1].buckets)
            for layout in (cpu, cuda_rule)]
    assert rows[0] < rows[1]


@pytest.mark.parametrize('bucket_cost', [0.0, 300.0, 1e9])
def test_every_grouping_matches_dense_reference(bucket_cost, monkeypatch):
    monkeypatch.setitem(layout_module._BUCKETING, 'cpu',
                        Bucketing(bucket_cost))
    gen = torch.Generator().manual_seed(2)
    parent = ragged_parent(90, 5, gen)
    h = Hierarchy.from_parent(parent)
    layout = tree_layout(h.edge_index, h.num_nodes, cache=False)
    counts = [len(level.buckets) for level in layout.levels]
    if bucket_cost == 1e9:
        assert max(counts) == 1
    q, k, v = (torch.randn(h.num_nodes, 2, 3, generator=gen,
                           dtype=torch.float64) for _ in range(3))
    pos = torch.randn(h.num_nodes, 2, generator=gen, dtype=torch.float64)
    assert_matches_dense_reference(
        q, k, v, h.edge_index, pos=pos, include_self=True,
        attention=lambda *a, **kw: hsa_attention(
            *a[:3], layout=layout, pos=kw['pos'],
            include_self=kw['include_self']))
