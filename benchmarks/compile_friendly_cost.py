r"""Cost of compile_friendly layouts (padding, no shortcuts) against the
default layout: HSA forward+backward, 8 heads x 64, float32, 2 threads, with
keep_freed_memory(); eager by default, or under ``torch.compile`` (Inductor,
one compiled function per layout) with ``--compiled``.

    python benchmarks/compile_friendly_cost.py
    python benchmarks/compile_friendly_cost.py --compiled --cases 4096:ragged
"""
import argparse
import os
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, HERE)
from attention import build_forest  # noqa: E402
from timing import median_ms  # noqa: E402

from hsa_graph import hsa_attention, keep_freed_memory, tree_layout  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--compiled', action='store_true')
    parser.add_argument('--cases', nargs='+',
                        default=['4096:ragged', '16384:ragged',
                                 '16384:balanced'],
                        help='LEAVES:ragged|balanced')
    args = parser.parse_args()
    keep_freed_memory()
    torch.set_num_threads(2)
    for case in args.cases:
        leaves, shape = case.split(':')
        tree = build_forest(int(leaves), 16, 1, shape == 'ragged')
        q, k, v = (torch.randn(tree.num_nodes, 8, 64).requires_grad_()
                   for _ in range(3))
        for friendly in (False, True):
            layout = tree_layout(tree.edge_index, tree.num_nodes, cache=False,
                                 compile_friendly=friendly)

            def attend(q, k, v, layout=layout):
                return hsa_attention(q, k, v, layout=layout)
            if args.compiled:
                torch._dynamo.reset()
                attend = torch.compile(attend, dynamic=False)

            def step():
                out = attend(q, k, v)
                torch.autograd.grad(out.square().sum(), (q, k, v))
            start = time.perf_counter()
            step()
            first = time.perf_counter() - start
            print(f"{leaves} {shape} {'friendly' if friendly else 'default'}"
                  f"{' compiled' if args.compiled else ''}: "
                  f'{median_ms(step, reps=5, warmup=2):.1f} ms '
                  f'(first call {first:.1f} s)',
                  flush=True)


if __name__ == '__main__':
    main()
