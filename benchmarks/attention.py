r"""HSA against flat attention, side by side in one run: wall-clock time (median),
peak memory, analytic FLOPs and achieved throughput.

Methods (all on the same leaves, [batch, heads, leaves, channels]):
  hsa           hsa_graph.hsa_attention, eager (tree layout built once, outside)
  hsa_compiled  the same under torch.compile
  hsa_graphs    the same under torch.compile(mode='reduce-overhead'): CUDA
                graphs, which remove the per-kernel launch cost (CUDA only)
  sdpa          torch.nn.functional.scaled_dot_product_attention, best backend
  sdpa_math     the same, math backend only
  tconv_knn     PyG TransformerConv on a k-NN graph (k=16) of random points
  gps           PyG GPSConv global attention (conv=None, multihead)
  dense_hsa     hsa_attention_matrix @ v (the O(N^2) reference; small N only)

Examples:
  python benchmarks/attention.py --device cpu --out benchmarks/results/cpu.json
  python benchmarks/attention.py --device cuda --dtype bfloat16 --leaves 4096 65536 1048576

Allocator settings are the application's: set them in the environment
(e.g. ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``, see
docs/performance.md); every case's process inherits them, and the JSON
records them.

Each CPU measurement runs in its own subprocess so that its peak resident
memory (ru_maxrss) can be attributed to it; on CUDA, torch.cuda's peak memory
counter is reset per measurement.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from hsa_graph import (hsa_attention, hsa_attention_matrix,  # noqa
                       tree_layout)
from hsa_graph.datasets.fake import balanced_parent, ragged_parent  # noqa
from hsa_graph.hierarchy import Hierarchy  # noqa

DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16,
          'float16': torch.float16, 'float64': torch.float64}


def build_forest(leaves, branching, batch, ragged, seed=0):
    gen = torch.Generator().manual_seed(seed)
    parents, offset = [], 0
    for _ in range(batch):
        parent = (ragged_parent(leaves, branching, gen) if ragged
                  else balanced_parent(leaves, branching))
        parents.append(torch.where(parent >= 0, parent + offset, parent))
        offset += parent.numel()
    return Hierarchy.from_parent(torch.cat(parents), validate=False)


def family_flops(layout, heads, channels):
    # Per family of size b: logits b*b*C MACs, mixture b*b*C MACs -> 4 b^2 C.
    total = 0
    for level in layout.levels:
        for block in level.blocks:          # real keys: log n(C) > NO_KEY
            sizes = (block.key_bias > -1e31).sum(-1).double()
            total += float((sizes[sizes > 1]**2).sum()) * 4 * channels * heads
    return total


def knn_graph(points, k, chunk=4096):
    rows, cols = [], []
    for start in range(0, points.size(0), chunk):
        block = points[start:start + chunk]
        dist = torch.cdist(block, points)
        diagonal = torch.arange(block.size(0), device=points.device)
        dist[diagonal, start + diagonal] = math.inf
        nearest = dist.topk(k, largest=False).indices
        rows.append(nearest.flatten())
        cols.append((start + torch.arange(block.size(0), device=points.device)
                     ).repeat_interleave(k))
    return torch.stack([torch.cat(rows), torch.cat(cols)])


def make_case(args, method, leaves, branching, batch, ragged):
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    heads, channels = args.heads, args.channels
    gen = torch.Generator().manual_seed(1)
    if method in ('hsa', 'hsa_compiled', 'hsa_graphs', 'dense_hsa'):
        tree = build_forest(leaves, branching, batch, ragged)
        start = time.perf_counter()
        layout = tree_layout(tree.edge_index, tree.num_nodes, device=device,
                             dtype=torch.float32)
        layout_seconds = time.perf_counter() - start
        n = tree.num_nodes
        q, k, v = (torch.randn(n, heads, channels, generator=gen).to(
            device, dtype).requires_grad_(args.backward) for _ in range(3))
        flops = family_flops(layout, heads, channels)
        if method == 'dense_hsa':
            def run():
                theta = hsa_attention_matrix(q, k, tree.edge_index)
                return torch.einsum('hij,jhc->ihc', theta, v.to(theta.dtype))
            return run, (q, k, v), flops, layout_seconds

        def fn(q, k, v):
            return hsa_attention(q, k, v, layout=layout)
        if method == 'hsa_compiled':
            fn = torch.compile(fn, dynamic=False)
        elif method == 'hsa_graphs':
            graphed = torch.compile(fn, dynamic=False, mode='reduce-overhead')

            def fn(q, k, v):
                # each timed step is a new iteration of the graph tree
                torch.compiler.cudagraph_mark_step_begin()
                return graphed(q, k, v)
        return (lambda: fn(q, k, v)), (q, k, v), flops, layout_seconds
    if method in ('sdpa', 'sdpa_math'):
        q, k, v = (torch.randn(batch, heads, leaves, channels,
                               generator=gen).to(device, dtype)
                   .requires_grad_(args.backward) for _ in range(3))
        flops = 4.0 * batch * heads * leaves * leaves * channels
        if method == 'sdpa_math':
            from torch.nn.attention import SDPBackend, sdpa_kernel

            def run():
                with sdpa_kernel(SDPBackend.MATH):
                    return torch.nn.functional.scaled_dot_product_attention(
                        q, k, v)
        else:
            def run():
                return torch.nn.functional.scaled_dot_product_attention(
                    q, k, v)
        return run, (q, k, v), flops, 0.0
    if method in ('tconv_knn', 'gps'):
        from torch_geometric.nn import GPSConv, TransformerConv
        hidden = heads * channels
        x = torch.randn(batch * leaves, hidden, generator=gen).to(
            device, dtype).requires_grad_(args.backward)
        if method == 'tconv_knn':
            points = torch.randn(batch, leaves, 3, generator=gen).to(device)
            edges = [knn_graph(p, 16) + i * leaves
                     for i, p in enumerate(points)]
            edge_index = torch.cat(edges, 1).to(device)
            layer = TransformerConv(hidden, channels, heads=heads).to(
                device, dtype)
            flops = 4.0 * edge_index.size(1) * channels * heads
            return (lambda: layer(x, edge_index)), (x, ), flops, 0.0
        layer = GPSConv(hidden, None, heads=heads).to(device, dtype)
        batch_vector = torch.arange(batch, device=device).repeat_interleave(
            leaves)
        flops = 4.0 * batch * heads * leaves * leaves * channels
        edge_index = torch.empty(2, 0, dtype=torch.long, device=device)
        return (lambda: layer(x, edge_index, batch=batch_vector)), (x, ), \
            flops, 0.0
    raise ValueError(method)


def synchronize(device):
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def measure(args, method, leaves, branching, batch, ragged):
    device = args.device
    run, inputs, flops, layout_seconds = make_case(args, method, leaves,
                                                   branching, batch, ragged)
    # The output's gradient is made once, like an input: a training step
    # gets it from the next layer (a loss computed here, in float32, would
    # add float32 copies of the output to a bfloat16 peak).
    grad_out = torch.randn_like(run().detach()) if args.backward else None
    if device.startswith('cuda'):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def step():
        out = run()
        if args.backward:
            grads = torch.autograd.grad(out, inputs, grad_out)
            del grads
        return out

    times, faults = [], 0
    deadline = time.perf_counter() + args.budget
    for rep in range(args.warmup + args.reps):
        synchronize(device)
        faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        step()
        synchronize(device)
        if rep >= args.warmup:
            times.append(time.perf_counter() - start)
            faults += (resource.getrusage(resource.RUSAGE_SELF).ru_minflt -
                       faults_before)
            if time.perf_counter() > deadline and len(times) >= 2:
                break
    if device.startswith('cuda'):
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - \
            base
    median = statistics.median(times)
    if args.backward:
        flops *= 3          # backward costs about twice the forward
    return dict(method=method, leaves=leaves, branching=branching,
                batch=batch, ragged=ragged, dtype=args.dtype,
                backward=args.backward, median_s=median, reps=len(times),
                peak_bytes=max(0, int(peak)), flops=flops,
                tflops_per_s=flops / median / 1e12,
                # page faults per timed step: each is a fresh 4 KiB page
                minor_faults_per_step=faults / len(times),
                layout_s=layout_seconds)


def too_big(args, method, leaves, batch):
    quadratic = leaves * leaves * batch
    if method == 'dense_hsa':
        return leaves * batch > args.max_dense
    if method in ('sdpa', 'gps'):
        return quadratic > args.max_quadratic
    if method == 'sdpa_math':
        return quadratic * args.heads * 4 > args.max_math_bytes
    return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--dtype', default='float32', choices=list(DTYPES))
    parser.add_argument('--heads', type=int, default=8)
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--leaves', type=int, nargs='+',
                        default=[1024, 4096, 16384, 65536])
    parser.add_argument('--branching', type=int, nargs='+', default=[16])
    parser.add_argument('--batch', type=int, nargs='+', default=[1])
    parser.add_argument('--shapes', nargs='+', default=['balanced', 'ragged'],
                        choices=['balanced', 'ragged'])
    parser.add_argument('--methods', nargs='+',
                        default=['hsa', 'sdpa', 'tconv_knn', 'gps',
                                 'dense_hsa'])
    parser.add_argument('--no-backward', dest='backward',
                        action='store_false')
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--reps', type=int, default=5)
    parser.add_argument('--budget', type=float, default=20.0,
                        help='seconds of timed reps per case (at least 2)')
    parser.add_argument('--max-quadratic', type=float, default=2**28)
    parser.add_argument('--max-math-bytes', type=float, default=8e9)
    parser.add_argument('--max-dense', type=int, default=1024)
    parser.add_argument('--threads', type=int, default=None)
    parser.add_argument('--out', default=None)
    parser.add_argument('--single', action='store_true',
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.single:          # one case, in a fresh process (CPU memory)
        (method, ) = args.methods
        result = measure(args, method, args.leaves[0], args.branching[0],
                         args.batch[0], args.shapes[0] == 'ragged')
        print('RESULT ' + json.dumps(result))
        return

    results = []
    for batch in args.batch:
        for leaves in args.leaves:
            for branching in args.branching:
                for shape in args.shapes:
                    for method in args.methods:
                        flat = method not in ('hsa', 'hsa_compiled',
                                              'hsa_graphs', 'dense_hsa')
                        if flat and shape == 'ragged':
                            continue     # flat attention ignores the tree
                        if flat and branching != args.branching[0]:
                            continue
                        if too_big(args, method, leaves, batch):
                            continue
                        result = run_case(args, method, leaves, branching,
                                          batch, shape)
                        if result is None:
                            continue
                        results.append(result)
                        print(f"{method:>13} B={batch:<3} N={leaves:<8} "
                              f"b={branching:<3} {shape:<8} "
                              f"{result['median_s'] * 1e3:10.2f} ms "
                              f"{result['peak_bytes'] / 2**20:10.1f} MiB "
                              f"{result['tflops_per_s']:8.4f} TFLOP/s",
                              flush=True)
    info = dict(device=args.device, torch=torch.__version__,
                platform=platform.platform(), threads=torch.get_num_threads(),
                heads=args.heads, channels=args.channels,
                malloc_env={k: v for k, v in os.environ.items()
                            if k.startswith('MALLOC_')},
                command=' '.join(sys.argv))
    if args.device.startswith('cuda'):
        info['gpu'] = torch.cuda.get_device_name()
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as f:
            json.dump(dict(info=info, results=results), f, indent=1)
        print('wrote', args.out)


def run_case(args, method, leaves, branching, batch, shape):
    if args.device.startswith('cuda'):
        try:
            return measure(args, method, leaves, branching, batch,
                           shape == 'ragged')
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            print(f'{method} N={leaves} B={batch}: out of memory')
            return None
    command = [sys.executable, __file__, '--single', '--device', args.device,
               '--dtype', args.dtype, '--heads', str(args.heads),
               '--channels', str(args.channels), '--leaves', str(leaves),
               '--branching', str(branching), '--batch', str(batch),
               '--shapes', shape, '--methods', method, '--warmup',
               str(args.warmup), '--reps', str(args.reps), '--budget',
               str(args.budget)]
    if not args.backward:
        command.append('--no-backward')
    if args.threads:
        command += ['--threads', str(args.threads)]
    proc = subprocess.run(command, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith('RESULT '):
            return json.loads(line[len('RESULT '):])
    print(f'{method} N={leaves} B={batch} failed:\n{proc.stderr[-2000:]}')
    return None


if __name__ == '__main__':
    main()
