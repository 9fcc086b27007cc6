r"""Converter throughput: input elements per second, 10^4 to 10^6 elements.

Each converter runs on synthetic inputs of growing size (uniform points, a
random geometric graph, a triangulated grid mesh, a one-channel image with one
pixel per patch); the time covers the whole call, validation and positions
included. Wall-clock and process CPU time are both reported: on a shared
machine the CPU time is the steadier figure (with --threads 1 the two agree
on an idle machine). Prints a Markdown table and writes JSON.

Examples:
  python benchmarks/convert_throughput.py
  python benchmarks/convert_throughput.py --sizes 10000 100000 --repeats 1 \
      --out benchmarks/results/convert_throughput.json

Graph clustering is skipped above --max-cluster elements for Louvain (default
10^5; with networkx instead of igraph one 10^5 run takes ~20 s of CPU) and
above --max-spectral for spectral bisection (default 10^4).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

import hsa_graph  # noqa: E402


def random_geometric_graph(num_nodes: int, degree: float, seed: int):
    r"""Uniform points in the unit square joined within the radius that gives
    the requested mean degree (scipy's k-d tree finds the pairs)."""
    from scipy.spatial import cKDTree
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(num_nodes, 2, generator=generator, dtype=torch.float64)
    radius = math.sqrt(degree / (math.pi * num_nodes))
    pairs = cKDTree(points.numpy()).query_pairs(radius, output_type='ndarray')
    edge_index = torch.from_numpy(pairs).t().long()
    from torch_geometric.data import Data
    return Data(edge_index=edge_index, num_nodes=num_nodes, pos=points.float())


def grid_mesh(num_vertices: int):
    r"""A triangulated square grid with about :obj:`num_vertices` vertices."""
    side = max(2, round(math.sqrt(num_vertices)))
    i, j = torch.meshgrid(torch.arange(side), torch.arange(side), indexing='ij')
    pos = torch.stack([i.flatten(), j.flatten(),
                       torch.zeros(side * side, dtype=torch.long)], 1).float()
    vid = torch.arange(side * side).view(side, side)
    a, b = vid[:-1, :-1].flatten(), vid[1:, :-1].flatten()
    c, d = vid[1:, 1:].flatten(), vid[:-1, 1:].flatten()
    face = torch.cat([torch.stack([a, b, c]), torch.stack([a, c, d])], 1)
    return pos, face


def cases(size: int, seed: int, engine: str = 'auto'):
    r"""``(name, number of elements, callable)`` for every converter."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.rand(size, 3, generator=generator)
    yield ('point cloud, octree (leaf_size=16)', size,
           lambda: hsa_graph.from_point_cloud(points, leaf_size=16))
    yield ('point cloud, kd-tree (leaf_size=16, branching=2)', size,
           lambda: hsa_graph.from_point_cloud(points, method='kdtree',
                                              leaf_size=16))
    side = round(math.sqrt(size))
    image = torch.rand(1, side, side, generator=generator)
    yield ('image quad-tree (patch_size=1)', side * side,
           lambda: hsa_graph.from_image(image, patch_size=1))
    graph = random_geometric_graph(size, degree=10, seed=seed)
    yield ('graph, Louvain (random geometric, mean degree 10)', size,
           lambda: hsa_graph.hierarchy_from_graph(graph, pos=None,
                                                  engine=engine))
    yield ('graph, spectral bisection (same graph)', size,
           lambda: hsa_graph.hierarchy_from_graph(graph, pos=None,
                                                  method='spectral'))
    pos, face = grid_mesh(size)
    yield ('mesh vertices, Louvain (triangulated grid)', pos.size(0),
           lambda: hsa_graph.from_mesh(pos, face, engine=engine))


def louvain_engine(requested: str = 'auto') -> str:
    if requested != 'auto':
        return requested
    try:
        import igraph  # noqa: F401
        return 'igraph'
    except ImportError:
        return 'networkx'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--sizes', type=int, nargs='+',
                        default=[10_000, 100_000, 1_000_000])
    parser.add_argument('--repeats', type=int, default=3,
                        help='timed runs per case (the median is reported)')
    parser.add_argument('--max-cluster', type=int, default=100_000,
                        help='largest input for Louvain-based converters')
    parser.add_argument('--max-spectral', type=int, default=10_000,
                        help='largest input for spectral bisection')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch.set_num_threads (default: torch default)')
    parser.add_argument('--engine', default='auto',
                        choices=['auto', 'igraph', 'networkx'],
                        help='Louvain implementation')
    parser.add_argument('--only', default=None,
                        help='run only converters whose name contains this')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', default=None, help='JSON output path')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # warm-up: first calls pay for lazy imports and allocator growth
    for name, _, run in cases(2_000, args.seed, args.engine):
        if args.only is None or args.only in name:
            run()
    rows = []
    for size in args.sizes:
        for name, count, run in cases(size, args.seed, args.engine):
            if args.only is not None and args.only not in name:
                continue
            limit = (args.max_spectral if 'spectral' in name else
                     args.max_cluster if 'Louvain' in name else None)
            if limit is not None and count > limit:
                rows.append({'converter': name, 'elements': count,
                             'seconds': None, 'skipped': True})
                print(f'{name:55s} {count:>9,d}  skipped (size limit)',
                      flush=True)
                continue
            repeats = 1 if limit is not None else args.repeats
            times, cpu_times = [], []
            for _ in range(repeats):
                start, cpu_start = time.perf_counter(), time.process_time()
                h = run()
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
            seconds = statistics.median(times)
            cpu_seconds = statistics.median(cpu_times)
            rows.append({'converter': name, 'elements': count,
                         'seconds': seconds, 'cpu_seconds': cpu_seconds,
                         'per_second': count / seconds,
                         'nodes': h.num_nodes, 'height': h.height,
                         'repeats': repeats, 'load_average': os.getloadavg()[0]})
            print(f'{name:55s} {count:>9,d}  {seconds:8.2f} s  cpu '
                  f'{cpu_seconds:8.2f} s  {count / seconds:>12,.0f} /s  '
                  f'height {h.height}', flush=True)
    print(f'\nLouvain engine {louvain_engine(args.engine)}, threads '
          f'{torch.get_num_threads()}, load average '
          f'{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')
    print('| converter | elements | wall (s) | CPU (s) | elements / s (wall) '
          '| tree nodes | height |')
    print('|---|---:|---:|---:|---:|---:|---:|')
    for row in rows:
        if row.get('skipped'):
            print(f"| {row['converter']} | {row['elements']:,} | skipped "
                  f"| | | | |")
        else:
            print(f"| {row['converter']} | {row['elements']:,} | "
                  f"{row['seconds']:.2f} | {row['cpu_seconds']:.2f} | "
                  f"{row['per_second']:,.0f} | {row['nodes']:,} | "
                  f"{row['height']} |")
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, 'w') as handle:
            json.dump({'machine': platform.platform(),
                       'processor': platform.processor(),
                       'torch': torch.__version__,
                       'threads': torch.get_num_threads(),
                       'louvain_engine': louvain_engine(args.engine),
                       'rows': rows}, handle, indent=2)


if __name__ == '__main__':
    main()
