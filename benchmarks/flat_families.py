r"""Forward+backward time of hsa_attention on 32 flat trees of 100-600 leaves
(4 heads x 16, include_self): the document example's flat baseline in
miniature (wide families). Usage, for an A/B of two checkouts:

    python benchmarks/flat_families.py /tmp/old
    python benchmarks/flat_families.py .
"""
import os, sys, torch, time, statistics
repo = os.path.abspath(sys.argv[1])
sys.path.insert(0, repo)
torch.set_num_threads(2)
from hsa_graph import hsa_attention, tree_layout
# 32 flat trees (root + tokens), 100..600 tokens
g = torch.Generator().manual_seed(0)
parents, off = [], 0
for i in range(32):
    n = int(torch.randint(100, 600, (1,), generator=g))
    p = torch.full((n + 1,), off); p[0] = -1
    parents.append(p); off += n + 1
parent = torch.cat(parents)
child = (parent >= 0).nonzero().flatten()
ei = torch.stack([child, parent[child]])
N = parent.numel()
try: layout = tree_layout(ei, N, dtype=torch.float32)
except TypeError: layout = tree_layout(ei, N)
q, k, v = (torch.randn(N, 4, 16, generator=g).requires_grad_() for _ in range(3))
gr = torch.randn(N, 4, 16)
ts = []
for i in range(8):
    t = time.perf_counter()
    out = hsa_attention(q, k, v, layout=layout, include_self=True)
    torch.autograd.grad(out, (q, k, v), gr)
    if i >= 2: ts.append(time.perf_counter() - t)
print(repo, layout, '%.1f ms' % (statistics.median(ts) * 1e3))
