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
