r"""Eager cost of compile_friendly layouts (padding, no shortcuts) against the
default layout: HSA forward+backward, 8 heads x 64, float32, 2 threads, with
keep_freed_memory().

    python benchmarks/compile_friendly_cost.py
"""
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)
from attention import build_forest  # noqa: E402

from hsa_graph import hsa_attention, keep_freed_memory, tree_layout  # noqa: E402

keep_freed_memory()
torch.set_num_threads(2)
for leaves, ragged in [(4096, True), (16384, True), (16384, False)]:
    tree = build_forest(leaves, 16, 1, ragged)
    q, k, v = (torch.randn(tree.num_nodes, 8, 64).requires_grad_() for _ in range(3))
    for friendly in (False, True):
        layout = tree_layout(tree.edge_index, tree.num_nodes, cache=False, compile_friendly=friendly)
        def step():
            out = hsa_attention(q, k, v, layout=layout)
            torch.autograd.grad(out.square().sum(), (q, k, v))
        for _ in range(2): step()
        ts = []
        for _ in range(5):
            s = time.perf_counter(); step(); ts.append(time.perf_counter() - s)
        print(leaves, 'ragged' if ragged else 'balanced', 'friendly' if friendly else 'default', f'{sorted(ts)[2]*1e3:.1f} ms')
