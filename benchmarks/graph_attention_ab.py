r"""hsa_attention alone (4 heads x 16, forward+backward) on the community tree
of a 100,000-node block graph (as benchmarks/graph_global_attention.py builds
it), median of 4 steps, then a profile. Usage, for an A/B of two checkouts:

    python benchmarks/graph_attention_ab.py /tmp/old
    python benchmarks/graph_attention_ab.py .
"""
import os, sys, torch
repo = os.path.abspath(sys.argv[1])
sys.path.insert(0, repo); sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
torch.set_num_threads(2)
from graph_global_attention import block_graph
from torch_geometric.data import Data
from hsa_graph.nn import HSAGPSConv
from hsa_graph.transforms import AddHierarchy
from hsa_graph import hsa_attention
torch.manual_seed(0)
n = 100000
ei = block_graph(n)
tree = AddHierarchy(branching=8)(Data(edge_index=ei, num_nodes=n)).hierarchy
try:
    from hsa_graph.layout import tree_layout
    layout = tree_layout(tree.edge_index, tree.num_nodes, dtype=torch.float32)
except TypeError:
    layout = tree.layout
print(layout)
N = tree.num_nodes
q, k, v = (torch.randn(N, 4, 16).requires_grad_() for _ in range(3))
g = torch.randn(N, 4, 16)
import time, statistics
ts = []
for i in range(5):
    t = time.perf_counter(); out = hsa_attention(q, k, v, layout=layout); torch.autograd.grad(out, (q, k, v), g); ts.append(time.perf_counter() - t)
print(repo, 'median %.0f ms' % (statistics.median(ts[1:]) * 1e3))
from torch.profiler import profile
with profile() as p:
    out = hsa_attention(q, k, v, layout=layout); torch.autograd.grad(out, (q, k, v), g)
print(p.key_averages().table(sort_by='self_cpu_time_total', row_limit=12))
