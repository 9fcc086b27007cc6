import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hsa_graph import Hierarchy, hsa_attention, hsa_attention_matrix
from hsa_graph.datasets import balanced_parent, ragged_parent
from hsa_graph.layout import tree_layout
from hsa_graph.loader import DataLoader


class CountOps(TorchDispatchMode):
    r"""ATen operations that run, views and allocations excluded (as
    benchmarks/op_count.py counts them)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not (func.is_view or torch.Tag.view_copy in func.tags) and \
                func.__name__ not in ('detach.default', 'empty.memory_format',
                                      'empty_strided.default'):
            self.count += 1
        return func(*args, **(kwargs or {}))


def step_ops(parent, device):
    h = Hierarchy.from_parent(parent)
    layout = tree_layout(h.edge_index, h.num_nodes,
                         dtype=torch.float32).to(device)
    q, k, v = (torch.randn(h.num_nodes, 2, 4, device=device)
               .requires_grad_() for _ in range(3))
    grad = torch.randn(h.num_nodes, 2, 4, device=device)
    with CountOps() as counter:
        out = hsa_attention(q, k, v, layout=layout)
        torch.autograd.grad(out, (q, k, v), grad)
    return counter.count, layout


def block_structure(layout):
    return tuple((len(level.blocks), level.unpad is None)
                 for level in layout.levels)


@pytest.mark.parametrize('device', ['cpu', 'meta'])
def test_operation_count_depends_on_the_block_structure_alone(device):
    # The budget: <= 200 ATen ops per forward+backward for a
    # 4-level tree (benchmarks/op_count.py counts the 4,096-leaf case), and
    # <= 300 for ragged ones (their levels have two family size classes).
    balanced, layout = step_ops(balanced_parent(64, 4), device)
    assert layout.num_levels == 4 and balanced <= 200, balanced
    gen = torch.Generator().manual_seed(3)
    counts = {}
    for _ in range(30):                 # ragged trees of the same height
        ops, layout = step_ops(ragged_parent(64, 4, gen), device)
        if layout.num_levels == 4:
            counts.setdefault(block_structure(layout), set()).add(ops)
    assert counts, 'no ragged tree of 4 levels drawn'
    assert all(len(ops) == 1 for ops in counts.values()), counts
    assert max(max(ops) for ops in counts.values()) <= 300, counts


def test_value_narrower_than_query_matches_the_reference():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 1, 2, 2, 6, 6])
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(10, 2, 5, dtype=torch.float64, generator=gen)
            for _ in range(2))
    v = torch.randn(10, 2, 2, dtype=torch.float64, generator=gen)
    out = hsa_attention(q, k, v, h.edge_index)
    theta = hsa_attention_matrix(q, k, h.edge_index)          # (H, N, N)
    dense = torch.einsum('hij,jhc->ihc', theta, v)
    leaf = h.is_leaf
    assert out.shape == (10, 2, 2)
    torch.testing.assert_close(out[leaf], dense[leaf])


def test_layout_float_dtype_and_the_loader_default():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 1, 2])
    exact = tree_layout(h.edge_index, h.num_nodes, cache=False)
    single = tree_layout(h.edge_index, h.num_nodes, dtype=torch.float32,
                         cache=False)
    assert exact.dtype == torch.float64 and single.dtype == torch.float32
    assert single.levels[1].blocks[0].key_bias.dtype == torch.float32
    # Built in float64 (exact for float64 inputs), then cast.
    assert exact.levels[2].child_weight[0] == 1 / 3
    assert single.levels[2].child_weight[0] == torch.tensor(1 / 3).float()
    batch = next(iter(DataLoader([h, h], batch_size=2)))
    assert batch.layout.dtype == torch.float32
    batch = next(iter(DataLoader([h, h], batch_size=2,
                                 layout_dtype=torch.float64)))
    assert batch.layout.dtype == torch.float64


def test_a_float32_layout_with_float64_inputs_warns():
    h = Hierarchy.from_parent([-1, 0, 0, 1, 1, 2])
    layout = tree_layout(h.edge_index, h.num_nodes, dtype=torch.float32)
    q = torch.randn(6, 1, 3, dtype=torch.float64)
    with pytest.warns(UserWarning, match='precision'):
        hsa_attention(q, q, q, layout=layout)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        hsa_attention(q.float(), q.float(), q.float(), layout=layout)


def test_the_loader_says_what_to_use_for_graphs():
    from torch_geometric.data import Data
    ring = torch.tensor([[0, 1, 2, 0, 1, 2], [1, 2, 0, 2, 0, 1]])
    graphs = [Data(x=torch.randn(3, 2), edge_index=ring) for _ in range(2)]
    with pytest.raises(ValueError, match='torch_geometric.loader.DataLoader'):
        next(iter(DataLoader(graphs, batch_size=2)))
