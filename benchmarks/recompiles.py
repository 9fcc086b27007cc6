r"""How often torch.compile(dynamic=True) recompiles hsa_attention over a real
DataLoader: batches of differently shaped hierarchies (furniture octrees,
20 Newsgroups documents, clothing reviews).

Dynamo runs with the ``eager`` backend: the guards, and hence the recompiles,
are those of any backend (Inductor included), without the code generation.

    python benchmarks/recompiles.py --batches 20 --out benchmarks/results/recompiles_session9.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch._dynamo

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from hsa_graph import Hierarchy, from_point_cloud  # noqa: E402
from hsa_graph.loader import DataLoader  # noqa: E402
from hsa_graph.testing import compiled_graph_counts  # noqa: E402

DATA = os.environ.get('HSA_DATA', os.path.join(os.path.dirname(__file__), '..',
                                               'data'))


def furniture(num_points):
    from hsa_graph.datasets import SweetHome3DFurniture
    data = SweetHome3DFurniture(os.path.join(DATA, 'furniture'), split='train',
                                num_points=num_points)
    return [from_point_cloud(d.pos, x=d.pos, leaf_size=16) for d in data]


def text(name):
    from hsa_graph.datasets import ClothingReviews, TwentyNewsgroups
    cls = {'20newsgroups': TwentyNewsgroups,
           'clothing': ClothingReviews}[name]
    data = cls(split='train', max_docs=2000, log=False)
    return [Hierarchy(edge_index=d.edge_index, num_nodes=d.num_nodes)
            for d in data]


def signature(layout):
    r"""What the compiled graph specialises on: the number of levels, and
    each level's number of family size classes (and whether its one class
    is the level in order)."""
    return tuple((len(level.blocks), level.unpad is None)
                 for level in layout.levels)


def count(hierarchies, batches, batch_size, size_classes):
    loader = DataLoader(hierarchies, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(0),
                        size_classes=size_classes)
    chosen = [batch for _, batch in zip(range(batches), loader)]
    kinds = {signature(batch.layout) for batch in chosen}
    heights = {batch.layout.num_levels for batch in chosen}
    graphs = compiled_graph_counts(chosen, heads=4, channels=16)
    return dict(batches=len(graphs), graphs_after_each_batch=graphs,
                distinct_structure_kinds=len(kinds),
                distinct_heights=len(heights),
                graphs=graphs[-1] if graphs else 0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batches', type=int, default=40)
    parser.add_argument('--batch-size', type=int, default=16)
    parser.add_argument('--datasets', nargs='+',
                        default=['furniture-1024', '20newsgroups', 'clothing'])
    parser.add_argument('--duck-shape', action='store_true',
                        help="keep PyTorch's duck shaping (equal sizes in the "
                        'first batch share a symbol)')
    parser.add_argument('--size-classes', type=int, nargs='+', default=[1, 2],
                        help="the loader's size_classes (one run each)")
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    torch._dynamo.config.cache_size_limit = max(
        64, torch._dynamo.config.cache_size_limit)
    if not args.duck_shape:     # see docs/concepts.md
        import torch.fx.experimental._config as shape_config
        shape_config.use_duck_shape = False
    results = {}
    for name in args.datasets:
        hierarchies = (furniture(int(name.split('-')[1]))
                       if name.startswith('furniture') else text(name))
        for classes in args.size_classes:
            torch._dynamo.reset()
            result = count(hierarchies, args.batches, args.batch_size, classes)
            results[f'{name}, size_classes={classes}'] = result
            print(f"{name:16s} size_classes={classes}: {result['batches']} "
                  f"batches of "
                  f"{args.batch_size}: {result['distinct_heights']} heights, "
                  f"{result['distinct_structure_kinds']} structure kinds, "
                  f"{result['graphs']} compiled graphs (after each batch: "
                  f"{result['graphs_after_each_batch']})", flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(command=' '.join(sys.argv), torch=torch.__version__,
                           duck_shape=args.duck_shape, results=results), f,
                      indent=1)
        print('wrote', args.out)


if __name__ == '__main__':
    main()
