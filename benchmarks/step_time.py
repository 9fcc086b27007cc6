r"""Median forward+backward time of ``hsa_attention`` (float32, 8 heads x 64,
branching 16, a given output gradient) for an A/B of two commits on a noisy
machine: run it alternately on two checkouts, e.g.

    git worktree add /tmp/old 85e65d6
    for i in 1 2; do
        python benchmarks/step_time.py --repo /tmp/old
        python benchmarks/step_time.py
    done

Each line: ``repo | leaves x batch (r = ragged) median ms | ...``.
"""
import argparse
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repo', default=os.path.dirname(HERE),
                        help='checkout whose hsa_graph is timed')
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--steps', type=int, default=7)
    parser.add_argument('--cases', nargs='+',
                        default=['16384x1', '16384x1r', '4096x8'],
                        help='LEAVESxBATCH, with a trailing r for ragged')
    parser.add_argument('--size-classes', type=int, default=None,
                        help="tree_layout's size_classes (default: its own)")
    parser.add_argument('--compile', action='store_true',
                        help='time torch.compile(fullgraph=True) of the step '
                             '(Inductor; static shapes; the compile is not '
                             'timed, its seconds are printed)')
    args = parser.parse_args()
    sys.path.insert(0, args.repo)
    sys.path.insert(0, HERE)
    import torch
    torch.set_num_threads(args.threads)
    # hsa_graph first: attention.py puts this checkout on sys.path too
    from hsa_graph import hsa_attention, tree_layout
    from attention import build_forest
    assert os.path.abspath(sys.modules['hsa_graph'].__file__).startswith(
        os.path.abspath(args.repo))

    attention = hsa_attention
    if args.compile:
        attention = torch.compile(hsa_attention, fullgraph=True,
                                  dynamic=False)
    line = []
    for case in args.cases:
        ragged = case.endswith('r')
        leaves, batch = (int(x) for x in case.rstrip('r').split('x'))
        tree = build_forest(leaves, 16, batch, ragged)
        options = {} if args.size_classes is None else dict(
            size_classes=args.size_classes)
        try:                # float32 weights, as the loader stores them
            layout = tree_layout(tree.edge_index, tree.num_nodes,
                                 dtype=torch.float32, **options)
        except TypeError:   # an older checkout: no dtype argument
            layout = tree_layout(tree.edge_index, tree.num_nodes)
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(tree.num_nodes, 8, 64, generator=gen)
                   .requires_grad_() for _ in range(3))
        grad = torch.randn_like(q)

        def step():
            out = attention(q, k, v, layout=layout)
            torch.autograd.grad(out, (q, k, v), grad)
        start = time.perf_counter()
        step()
        if args.compile:
            line.append(f'compiled in {time.perf_counter() - start:.0f} s:')
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            step()
            times.append(time.perf_counter() - start)
        line.append(f'{case} {statistics.median(times) * 1000:.0f}')
    print(os.path.basename(os.path.abspath(args.repo)), '|',
          ' | '.join(line), 'ms', flush=True)


if __name__ == '__main__':
    main()
