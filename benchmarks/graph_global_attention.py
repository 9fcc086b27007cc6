r"""One global-attention layer, forward+backward, on single graphs of 10,000 to
1,000,000 nodes: HSAGPSConv (HSA over AddHierarchy's community tree) against
PyG's GPSConv with multi-head and with performer attention (conv=None: the
global part, MLP and norms alone, alike for all three). Median time, peak
resident memory (each case in its own process) and, for HSA, the time to build
the tree. Graphs: a stochastic block model (blocks of 100 nodes, 8 edges per
node inside its block, 1 outside).

    python benchmarks/graph_global_attention.py --out benchmarks/results/graph_global_attention.json \
        --png docs/img/graph_global_attention.png
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

CHANNELS, HEADS = 64, 4


def block_graph(num_nodes: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    node = torch.arange(num_nodes)
    block_start = (node // 100) * 100
    block_size = torch.clamp(num_nodes - block_start, max=100)
    inside = block_start.repeat_interleave(8) + (torch.rand(
        num_nodes * 8, generator=gen) * block_size.repeat_interleave(8)).long()
    outside = torch.randint(num_nodes, (num_nodes, ), generator=gen)
    row = torch.cat([node.repeat_interleave(8), node])
    col = torch.cat([inside, outside])
    keep = row != col
    from torch_geometric.utils import to_undirected
    return to_undirected(torch.stack([row[keep], col[keep]]),
                         num_nodes=num_nodes)


def single(method: str, num_nodes: int, reps: int) -> dict:
    from torch_geometric.data import Data
    from torch_geometric.nn import GPSConv
    from hsa_graph.nn import HSAGPSConv
    from hsa_graph.transforms import AddHierarchy
    torch.manual_seed(0)
    edge_index = block_graph(num_nodes)
    x = torch.randn(num_nodes, CHANNELS, requires_grad=True)
    batch = torch.zeros(num_nodes, dtype=torch.long)
    result = dict(method=method, num_nodes=num_nodes,
                  num_edges=edge_index.size(1))
    if method == 'hsa':
        started = time.perf_counter()
        data = AddHierarchy(branching=8)(Data(edge_index=edge_index,
                                              num_nodes=num_nodes))
        tree = data.hierarchy
        tree.layout          # built once, as the loader would
        result['tree_seconds'] = time.perf_counter() - started
        result['tree_levels'] = tree.layout.num_levels
        layer = HSAGPSConv(CHANNELS, None, heads=HEADS)

        def step():
            return layer(x, edge_index, hierarchy=tree, batch=batch)
    else:
        layer = GPSConv(CHANNELS, None, heads=HEADS, attn_type=method)

        def step():
            return layer(x, edge_index, batch=batch)
    times = []
    for _ in range(reps + 1):
        started = time.perf_counter()
        step().square().sum().backward()
        times.append(time.perf_counter() - started)
    result['median_s'] = statistics.median(times[1:])
    result['peak_rss_mb'] = resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--nodes', type=int, nargs='+',
                        default=[10_000, 30_000, 100_000, 300_000, 1_000_000])
    parser.add_argument('--methods', nargs='+',
                        default=['hsa', 'performer', 'multihead'])
    parser.add_argument('--max-multihead', type=int, default=20_000,
                        help='largest graph for multi-head attention (its '
                        'N^2 scores: 20,000 nodes x 4 heads ~ 6.4 GB each)')
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default=None)
    parser.add_argument('--png', default=None)
    parser.add_argument('--single', nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.single:
        print('RESULT ' + json.dumps(single(args.single[0],
                                            int(args.single[1]), args.reps)))
        return
    results = []
    sizes = sorted(set(args.nodes + [args.max_multihead]))
    for num_nodes in sizes:
        for method in args.methods:
            if method == 'multihead' and num_nodes > args.max_multihead:
                continue
            if method != 'multihead' and num_nodes not in args.nodes:
                continue
            proc = subprocess.run(
                [sys.executable, __file__, '--single', method,
                 str(num_nodes), '--reps', str(args.reps), '--threads',
                 str(args.threads)], capture_output=True, text=True)
            line = [l for l in proc.stdout.splitlines()
                    if l.startswith('RESULT ')]
            if not line:
                print(f'{method} N={num_nodes} failed: '
                      f'{proc.stderr[-500:]}', flush=True)
                continue
            result = json.loads(line[0][len('RESULT '):])
            results.append(result)
            extra = (f", tree {result['tree_seconds']:.1f} s "
                     f"({result['tree_levels']} levels)"
                     if 'tree_seconds' in result else '')
            print(f"{method:10s} N={num_nodes:>9,} "
                  f"{result['median_s'] * 1e3:10.1f} ms "
                  f"{result['peak_rss_mb']:9.0f} MB peak{extra}", flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(command=' '.join(sys.argv), threads=args.threads,
                           channels=CHANNELS, heads=HEADS, results=results),
                      f, indent=1)
    if args.png:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 4))
        for method in args.methods:
            mine = [r for r in results if r['method'] == method]
            ax.plot([r['num_nodes'] for r in mine],
                    [r['median_s'] for r in mine], 'o-', label=method)
        ax.set(xscale='log', yscale='log', xlabel='nodes',
               ylabel='forward+backward (s)',
               title=f'one global-attention layer, {args.threads} CPU threads')
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)


if __name__ == '__main__':
    main()
