r"""Where a training step's structure work runs: counts the calls of the
layout builder (``hsa_graph.layout._build``) in the main process during a
few training steps of an HSAEncoder classifier on 20 Newsgroups batches,
with ``hsa_graph.loader.DataLoader`` (workers build each batch's layout)
against PyG's loader (the model builds it in ``forward``), and the share of
the main process's step time spent in it (cProfile).

    python benchmarks/loader_profile.py --steps 20 --out benchmarks/results/loader_profile.json
"""
import argparse
import cProfile
import json
import os
import pstats
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

from hsa_graph.datasets import TwentyNewsgroups  # noqa: E402
from hsa_graph.loader import DataLoader  # noqa: E402
from hsa_graph.nn import HierarchyClassifier, HSAEncoder  # noqa: E402


def run(loader, model, optimizer, steps):
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    for _, batch in zip(range(steps), loader):
        loss = F.cross_entropy(model(batch), batch.y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    profiler.disable()
    seconds = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    build = [(calls, total) for (file, _, name), (calls, _, _, total, _)
             in stats.stats.items()
             if name == '_build' and file.endswith(os.path.join(
                 'hsa_graph', 'layout.py'))]
    calls, cumulative = build[0] if build else (0, 0.0)
    return dict(steps=steps, seconds=seconds, layout_builds=calls,
                layout_seconds=cumulative)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=20)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--workers', type=int, default=1)
    parser.add_argument('--out', default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    data = TwentyNewsgroups(split='train', max_docs=2000, log=False)
    results = {}
    for name in ('hsa_graph.loader.DataLoader', 'torch_geometric DataLoader'):
        model = HierarchyClassifier(
            HSAEncoder(64, 64, heads=4, families=[1, 1, 1]),
            data.num_classes, torch.nn.Embedding(data.num_tokens, 64))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        if name.startswith('hsa'):
            loader = DataLoader(data, batch_size=args.batch_size,
                                shuffle=True, num_workers=args.workers)
        else:
            import torch_geometric.loader
            loader = torch_geometric.loader.DataLoader(
                data, batch_size=args.batch_size, shuffle=True,
                num_workers=args.workers)
        results[name] = run(loader, model, optimizer, args.steps)
        r = results[name]
        print(f'{name:28s} {r["steps"]} steps {r["seconds"]:.2f} s: '
              f'{r["layout_builds"]} layout builds in the main process '
              f'({r["layout_seconds"]:.3f} s)', flush=True)
    if args.out:
        with open(args.out, 'w') as f:
            json.dump(dict(command=' '.join(sys.argv), results=results), f,
                      indent=1)


if __name__ == '__main__':
    main()
