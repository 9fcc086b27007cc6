r"""Node classification on Cora: HSA as a graph transformer's global attention.

Four models with the same width, depth, heads, dropout and budget, on the same
random 80/10/10 splits (one per seed; GraphGPS's Cora configuration):

  gcn         GCNConv layers alone
  gps         GPSConv: GCNConv + PyG's multi-head attention over all nodes
  hsa         HSAGPSConv: GCNConv + HSA over a tree of Cora's communities
  hsa-random  HSAGPSConv on a random tree of the same shape (the nodes dealt
              to the leaves at random): does the community structure matter?

Each run keeps the test accuracy at the epoch of best validation accuracy.
Prints mean and 95% interval over the seeds, seconds per epoch and peak
memory, and ends with ``hsa acc=... gcn acc=... gps acc=...``.

    bash datasets/fetch_graphs.sh          # Cora from a registry package
    python examples/node_classification.py --quick
    python examples/node_classification.py --seeds 10 --epochs 300
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GCNConv, GPSConv
from torch_geometric.transforms import RandomNodeSplit

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.dirname(__file__))

from hsa_graph.datasets import CoraLINQS  # noqa: E402
from hsa_graph.nn import HSAGPSConv  # noqa: E402
from hsa_graph.transforms import AddHierarchy  # noqa: E402
from shape_utils import (PeakMemory, fmt, summarize,  # noqa: E402
                         write_json)

MODELS = ('gcn', 'gps', 'hsa', 'hsa-random')


class NodeClassifier(nn.Module):
    r"""Input projection, :obj:`layers` blocks of the chosen kind, head."""

    def __init__(self, kind, in_channels, channels, num_classes, layers,
                 heads, dropout):
        super().__init__()
        self.kind, self.dropout = kind, dropout
        self.lin_in = nn.Linear(in_channels, channels)
        blocks = []
        for _ in range(layers):
            conv = GCNConv(channels, channels)
            if kind == 'gcn':
                blocks.append(conv)
            elif kind == 'gps':
                blocks.append(GPSConv(channels, conv, heads=heads,
                                      dropout=dropout, attn_type='multihead'))
            else:
                blocks.append(HSAGPSConv(channels, conv, heads=heads,
                                         dropout=dropout))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, data, hierarchy):
        x = F.dropout(data.x, p=self.dropout, training=self.training)
        x = self.lin_in(x)
        for block in self.blocks:
            if self.kind == 'gcn':
                x = F.relu(block(x, data.edge_index))
                x = F.dropout(x, p=self.dropout, training=self.training)
            elif self.kind == 'gps':
                x = block(x, data.edge_index)
            else:
                x = block(x, data.edge_index, hierarchy=hierarchy)
        return self.head(x)


def random_tree(hierarchy, seed):
    r"""The same tree with the graph's nodes dealt to its leaves at
    random."""
    tree = hierarchy.clone()
    generator = torch.Generator().manual_seed(seed)
    tree.node_index = hierarchy.node_index[torch.randperm(
        hierarchy.node_index.numel(), generator=generator)]
    return tree


def run(args, kind, seed, data, hierarchy):
    torch.manual_seed(seed)
    split = RandomNodeSplit(num_val=0.1, num_test=0.1)(data.clone())
    tree = random_tree(hierarchy, seed) if kind == 'hsa-random' else \
        hierarchy
    model = NodeClassifier(kind, data.num_features, args.channels,
                           int(data.y.max()) + 1, args.layers, args.heads,
                           args.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr,
                                  weight_decay=args.weight_decay)
    best_val, test_at_best, seconds = -1.0, 0.0, []
    with PeakMemory('cpu') as memory:
        for _ in range(args.epochs):
            model.train()
            started = time.perf_counter()
            loss = F.cross_entropy(model(split, tree)[split.train_mask],
                                   split.y[split.train_mask])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seconds.append(time.perf_counter() - started)
            model.eval()
            with torch.no_grad():
                pred = model(split, tree).argmax(-1)
            val = float((pred == split.y)[split.val_mask].float().mean())
            if val > best_val:
                best_val = val
                test_at_best = float((pred == split.y)[split.test_mask]
                                     .float().mean())
    return dict(model=kind, seed=seed, val_acc=best_val,
                test_acc=test_at_best,
                s_per_epoch=sorted(seconds)[len(seconds) // 2],
                peak_mb=memory.peak_mb,
                parameters=sum(p.numel() for p in model.parameters()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--models', nargs='+', default=list(MODELS),
                        choices=MODELS)
    parser.add_argument('--seeds', type=int, default=None,
                        help='random splits (default: 10; 5 with --quick)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='(default: 200; 60 with --quick)')
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--layers', type=int, default=2)
    parser.add_argument('--heads', type=int, default=4)
    parser.add_argument('--dropout', type=float, default=0.5)
    parser.add_argument('--lr', type=float, default=5e-3)
    parser.add_argument('--weight-decay', type=float, default=5e-4)
    parser.add_argument('--branching', type=int, default=8)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default='runs/node_classification')
    parser.add_argument('--quick', action='store_true',
                        help='5 seeds x 60 epochs (a few minutes on 2 cores)')
    args = parser.parse_args()
    args.seeds = args.seeds or (5 if args.quick else 10)
    args.epochs = args.epochs or (60 if args.quick else 200)
    torch.set_num_threads(args.threads)
    data = CoraLINQS()[0]
    started = time.perf_counter()
    hierarchy = AddHierarchy(branching=args.branching)(data.clone()).hierarchy
    tree_seconds = time.perf_counter() - started
    print(f'Cora: {data.num_nodes} nodes, {data.num_edges} edges; tree of '
          f'{hierarchy.num_nodes} nodes, {hierarchy.layout.num_levels} '
          f'levels in {tree_seconds:.2f} s', flush=True)
    runs = []
    for seed in range(args.seeds):
        for kind in args.models:
            runs.append(run(args, kind, seed, data, hierarchy))
            r = runs[-1]
            print(f'{kind:10s} seed {seed}: test acc {r["test_acc"]:.3f} '
                  f'(val {r["val_acc"]:.3f}), {r["s_per_epoch"] * 1e3:.0f} '
                  f'ms/epoch, peak +{r["peak_mb"]:.0f} MB', flush=True)
    summary = summarize(runs, ['test_acc', 's_per_epoch', 'peak_mb'])
    for kind, stats in summary.items():
        print(f'{kind:10s} test acc {fmt(stats["test_acc"])} '
              f'({stats["test_acc"]["n"]} splits), '
              f'{stats["s_per_epoch"]["mean"]:.3f} s/epoch, peak '
              f'+{stats["peak_mb"]["mean"]:.0f} MB, '
              f'{stats["parameters"]:,} parameters')
    write_json(os.path.join(args.out, 'results.json'),
               dict(args=vars(args), tree_seconds=tree_seconds,
                    summary=summary, runs=runs))
    print(' '.join(f'{kind} acc={summary[kind]["test_acc"]["mean"]:.3f}'
                   for kind in ('hsa', 'gcn', 'gps') if kind in summary))


if __name__ == '__main__':
    main()
