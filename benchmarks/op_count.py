r"""Counts the ATen operations of one HSA forward+backward step with a
prebuilt layout (each is a kernel launch on a GPU): views excluded; casts,
fills and copies counted. Runs on CPU tensors or on the ``meta`` device
(the device path, no data), and lists the most frequent operations.

    python benchmarks/op_count.py                       # both issue cases
    python benchmarks/op_count.py --device meta --cases 4096:1:balanced
"""
import argparse
import collections
import json
import os
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)

from attention import build_forest  # noqa: E402

from hsa_graph import hsa_attention, tree_layout  # noqa: E402


class CountOps(TorchDispatchMode):
    r"""Counts the ATen operations that run, views excluded."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not (func.is_view or torch.Tag.view_copy in func.tags) and \
                func.__name__ not in ('detach.default', 'empty.memory_format',
                                      'empty_strided.default'):
            self.counts[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))


def count(leaves, batch, ragged, device, heads=8, channels=64):
    tree = build_forest(leaves, 16, batch, ragged)
    layout = tree_layout(tree.edge_index, tree.num_nodes,
                         dtype=torch.float32).to(device)   # as the loader
    q, k, v = (torch.randn(tree.num_nodes, heads, channels, device=device)
               .requires_grad_() for _ in range(3))
    grad = torch.randn(tree.num_nodes, heads, channels, device=device)

    def step():
        out = hsa_attention(q, k, v, layout=layout)
        torch.autograd.grad(out, (q, k, v), grad)

    step()
    with CountOps() as counter:
        step()
    return counter.counts, layout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--cases', nargs='+',
                        default=['4096:1:balanced', '512:8:ragged'],
                        help='LEAVES:BATCH:balanced|ragged (branching 16)')
    parser.add_argument('--device', nargs='+', default=['cpu', 'meta'])
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    results = []
    for case in args.cases:
        leaves, batch, shape = case.split(':')
        for device in args.device:
            counts, layout = count(int(leaves), int(batch),
                                   shape == 'ragged', device)
            total = sum(counts.values())
            top = ', '.join(f'{n} {c}' for n, c in counts.most_common(8))
            print(f'{device:4s} {batch} x {leaves} {shape:8s} '
                  f'{layout.num_levels} levels: {total} ATen ops per '
                  f'forward+backward ({top})', flush=True)
            results.append(dict(case=case, device=device, ops=total,
                                levels=layout.num_levels,
                                by_op=dict(counts)))
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(command=' '.join(sys.argv), results=results), f,
                      indent=1)


if __name__ == '__main__':
    main()
