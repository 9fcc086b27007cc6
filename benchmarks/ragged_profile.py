r"""Where a ragged batch's step goes: 8 ragged trees of 4,096 leaves (8 x 64),
forward+backward under torch.profiler; prints the step's total self time,
the sibling softmax's share, and the MB the step allocates in blocks above
glibc's 32 MB mmap threshold (each faulted in afresh under its defaults).

    python benchmarks/ragged_profile.py
"""
import os, sys, torch
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..')); sys.path.insert(0, HERE)
torch.set_num_threads(2)
from hsa_graph import hsa_attention, tree_layout
from attention import build_forest
tree = build_forest(4096, 16, 8, True)
layout = tree_layout(tree.edge_index, tree.num_nodes, dtype=torch.float32)
q,k,v = (torch.randn(tree.num_nodes,8,64).requires_grad_() for _ in range(3))
g = torch.randn_like(q)
def step():
    out = hsa_attention(q,k,v,layout=layout); torch.autograd.grad(out,(q,k,v),g)
for _ in range(2): step()
from torch.profiler import profile
with profile(profile_memory=True) as p:
    for _ in range(2): step()
t = p.key_averages()
tot = sum(e.self_cpu_time_total for e in t)
sib = sum(e.cpu_time_total for e in t if e.key in ('_SiblingSoftmax', '_SiblingSoftmaxBackward'))
print('total self %.0f ms/step, sibling softmax fwd+bwd %.0f ms/step' % (tot/2e3, sib/2e3))
big = sum(e.self_cpu_memory_usage for e in p.events()
          if e.self_cpu_memory_usage > 32 * 2**20)
print('allocated in blocks above 32 MB: %.0f MB/step' % (big / 2 / 2**20))
