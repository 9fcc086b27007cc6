import torch
import torch._dynamo
from torch_geometric.data import Batch

from hsa_graph import Hierarchy, hsa_attention
from hsa_graph.datasets import balanced_parent


def forest(num_trees, leaves=16, branching=4):
    return Batch.from_data_list([
        Hierarchy.from_parent(balanced_parent(leaves, branching))
        for _ in range(num_trees)])


def test_dynamic_compile_serves_new_batches_without_recompiling():
    # Batches of 2, 3, 5 and 7 trees: every size differs, the structure
    # kinds (levels, one contiguous bucket per level) do not. Sizes are read
    # off the layout's tensors, so after the first (static) compile and one
    # dynamic recompile, new batches reuse the graph.
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    compiled = torch.compile(
        lambda q, k, v, layout: hsa_attention(q, k, v, layout=layout),
        dynamic=True)
    graphs = []
    for num_trees in (2, 3, 5, 7):
        batch = forest(num_trees)
        layout = batch.layout
        q, k, v = (torch.randn(batch.num_nodes, 2, 8) for _ in range(3))
        out = compiled(q, k, v, layout)
        torch.testing.assert_close(out, hsa_attention(q, k, v, layout=layout),
                                   atol=1e-5, rtol=1e-4)
        graphs.append(counters['stats']['unique_graphs'])
    assert graphs[-1] == graphs[-2] == graphs[-3], graphs
    assert graphs[-1] <= 2, graphs


def test_layer_compiles_once_per_height_over_loader_batches():
    # torch.compile(fullgraph=True) of HSAConv forward+backward with the
    # layout the loader carries: no graph break, and at most one graph per
    # distinct tree height over 20 shuffled batches of ragged forests.
    # Without duck shaping: with it, two level sizes that happen to be equal
    # in the first batch share a symbol, and a later batch recompiles (4
    # graphs for 2 heights here; docs/performance.md).
    import torch.fx.experimental._config as shape_config
    from hsa_graph.datasets.fake import FakeHierarchyDataset
    from hsa_graph.loader import DataLoader
    from hsa_graph.nn import HSAConv
    torch._dynamo.reset()
    counters = torch._dynamo.utils.counters
    counters.clear()
    conv = HSAConv(16, 8, heads=2)

    def forward(x, edge_index, layout):
        return conv(x, edge_index, layout=layout)

    # aot_eager traces the backward too (as Inductor would), no codegen.
    compiled = torch.compile(forward, fullgraph=True, dynamic=True,
                             backend='aot_eager')

    def step(run, x, edge_index, layout):
        x = x.detach().requires_grad_()
        return torch.autograd.grad(run(x, edge_index, layout).square().sum(),
                                   x)[0]

    # size_classes=1: one block per level, the structure for compiling over
    # ragged batches (docs/performance.md).
    loader = DataLoader(FakeHierarchyDataset(200, avg_num_leaves=40),
                        batch_size=8, shuffle=True, size_classes=1,
                        generator=torch.Generator().manual_seed(0))
    heights = set()
    with shape_config.patch(use_duck_shape=False):
        run_batches(compiled, forward, step, loader, heights)
    assert counters['stats']['unique_graphs'] <= len(heights), (
        counters['stats']['unique_graphs'], heights)


def run_batches(compiled, forward, step, loader, heights):
    for _, batch in zip(range(20), loader):
        heights.add(batch.layout.num_levels)
        torch.testing.assert_close(
            step(compiled, batch.x, batch.edge_index, batch.layout),
            step(forward, batch.x, batch.edge_index, batch.layout),
            atol=1e-4, rtol=1e-3)


def test_packed_levels_trace_as_one_graph_with_and_without_grad():
    # A ragged tree's packed level (two size classes, gathered by one
    # autograd Function) traces without a graph break, inference included:
    # dynamo cannot trace a Function taking *args when no input needs a
    # gradient (torch 2.13), which once split this into 9 graphs.
    from hsa_graph import tree_layout
    from hsa_graph.datasets.fake import ragged_parent
    parent = ragged_parent(300, 16, torch.Generator().manual_seed(0))
    child = (parent >= 0).nonzero().flatten()
    layout = tree_layout(torch.stack([child, parent[child]]), parent.numel(),
                         dtype=torch.float32)
    assert any(not level.padded and len(level.blocks) == 2
               for level in layout.levels)
    for grad in (False, True):
        torch._dynamo.reset()
        compiled = torch.compile(
            lambda q, k, v: hsa_attention(q, k, v, layout=layout),
            fullgraph=True, backend='eager')
        q, k, v = (torch.randn(parent.numel(), 2, 4, requires_grad=grad)
                   for _ in range(3))
        torch.testing.assert_close(compiled(q, k, v),
                                   hsa_attention(q, k, v, layout=layout))
