r"""Where a step goes: ``hsa_attention`` forward+backward (8 x 64) on a
forest under torch.profiler (default: 8 ragged trees of 4,096 leaves).
Prints the forest's nodes, the step's total self time, the sibling
softmax's share and the MB the step allocates in blocks of 32 MB or more
(glibc's largest mmap threshold: each is faulted in afresh under its
defaults); with ``--list``, each such allocation, its operation, input
shapes and calling operation.

    python benchmarks/ragged_profile.py [--case 16384x1] [--list]
"""
import argparse
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)
from hsa_graph import hsa_attention, tree_layout  # noqa: E402
from attention import build_forest  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
parser.add_argument('--case', default='4096x8r',
                    help='LEAVESxBATCH, with a trailing r for ragged')
parser.add_argument('--list', action='store_true')
args = parser.parse_args()
torch.set_num_threads(2)
leaves, batch = (int(x) for x in args.case.rstrip('r').split('x'))
tree = build_forest(leaves, 16, batch, args.case.endswith('r'))
layout = tree_layout(tree.edge_index, tree.num_nodes, dtype=torch.float32)
q, k, v = (torch.randn(tree.num_nodes, 8, 64).requires_grad_()
           for _ in range(3))
g = torch.randn_like(q)


def step():
    out = hsa_attention(q, k, v, layout=layout)
    torch.autograd.grad(out, (q, k, v), g)


for _ in range(2):
    step()
with torch.profiler.profile(profile_memory=True, record_shapes=True) as p:
    for _ in range(2):
        step()
averages = p.key_averages()
total = sum(e.self_cpu_time_total for e in averages)
sibling = sum(e.cpu_time_total for e in averages
              if e.key in ('_SiblingSoftmax', '_SiblingSoftmaxBackward'))
big = [e for e in p.events() if e.self_cpu_memory_usage >= 32 * 2**20]
print(f'{args.case}: {tree.num_nodes} nodes, {layout}')
print(f'total self {total / 2e3:.0f} ms/step, sibling softmax fwd+bwd '
      f'{sibling / 2e3:.0f} ms/step, allocated in blocks of >= 32 MB: '
      f'{sum(e.self_cpu_memory_usage for e in big) / 2 / 2**20:.0f} MB/step')
if args.list:
    for e in big[:len(big) // 2]:                       # the first step
        caller = e.cpu_parent.name if e.cpu_parent is not None else ''
        print(f'  {e.self_cpu_memory_usage / 2**20:5.0f} MB {e.name} '
              f'{e.input_shapes[:3]} <- {caller}')
