r"""Point-cloud classification on real 3-D furniture: HSA on octrees vs the same
encoder on a flat tree vs PyG's TransformerConv on a kNN graph.

Data: :class:`hsa_graph.datasets.SweetHome3DFurniture` (361 Sweet Home 3D
models in 10 ModelNet-like classes, 293 train / 68 test), surface-sampled point
clouds, z up. Install with ``bash datasets/fetch_furniture.sh``.

Models (same width, depth, heads and FFN; parameter counts printed):

* ``hsa-octree``: :class:`hsa_graph.nn.HSAEncoder` on the octree of every
  cloud (:func:`hsa_graph.from_point_cloud`, ``leaf_size`` points per cell);
  each node's position is its offset inside its parent cell.
* ``hsa-flat``: the same encoder on the one-level tree (root -> all points):
  exact softmax attention over all points, positions = coordinates.
* ``knn-transformer``: PyG ``TransformerConv`` layers on the k-nearest-neighbour
  graph (pure-torch kNN, computed once per shape: rotation about the up axis
  and isotropic scaling keep neighbourhoods), with the same residual, norm and
  FFN blocks.

Hierarchies and kNN graphs are built once per shape; training augments each
batch on the device (random rotation about z and scaling in [0.8, 1.2] of the
points, with the cells' offsets turning along, and Gaussian jitter 0.01), with
AdamW and a one-cycle schedule. Reported: test accuracy and
macro-F1 (mean +- 95% CI over seeds), seconds and peak memory per training
epoch. Writes ``<out>/results.json`` and ``<out>/curves.png``.

    python examples/point_cloud_classification.py --quick      # < 5 minutes
    python examples/point_cloud_classification.py --num-points 2048 --epochs 40
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Data
from torch_geometric.loader import DataLoader
from torch_geometric.nn import TransformerConv
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shape_utils import (PeakMemory, RunBudget, Timer, add_run_arguments,  # noqa
                         augment_batch, count_parameters, fmt, macro_f1,
                         plot_curves, seed_everything, setup_run, summarize,
                         write_json)

from hsa_graph import Hierarchy, from_point_cloud, tree_layout  # noqa: E402
from hsa_graph.datasets import SweetHome3DFurniture  # noqa: E402
from hsa_graph.nn import HSAEncoder, leaf_mean_pool  # noqa: E402
from hsa_graph.sampling import knn_graph  # noqa: E402

MODELS = ('hsa-octree', 'hsa-flat', 'knn-transformer')


# --- turning a cloud into each model's input -------------------------------
def octree_input(pos: Tensor, y: Tensor, leaf_size: int) -> Hierarchy:
    h = from_point_cloud(pos, x=pos, leaf_size=leaf_size)
    return Hierarchy(x=h.x, edge_index=h.edge_index, pos=h.pos,
                     family_type=_family_type(h.edge_index, h.num_nodes),
                     y=y, num_nodes=h.num_nodes)


def flat_input(pos: Tensor, y: Tensor) -> Hierarchy:
    r"""Root (node n) with the n points as children; a point's position in
    the root's frame is its coordinate."""
    n = pos.size(0)
    parent = torch.full((n + 1, ), n, dtype=torch.long)
    parent[n] = -1
    x = torch.cat([pos, pos.new_zeros(1, 3)])
    h = Hierarchy.from_parent(parent, x=x, pos=x.clone(), validate=False)
    h.family_type = _family_type(h.edge_index, n + 1)
    h.y = y
    return h


def knn_input(pos: Tensor, y: Tensor, edge_index: Tensor) -> Data:
    return Data(x=pos, edge_index=edge_index, y=y, num_nodes=pos.size(0))


def _point_rows(batch) -> Tensor:
    # Leaves hold the points; kNN graphs have only points.
    if getattr(batch, 'family_type', None) is None:
        return torch.ones(batch.num_nodes, dtype=torch.bool,
                          device=batch.x.device)
    has_child = torch.zeros(batch.num_nodes, dtype=torch.bool,
                           device=batch.x.device)
    has_child[batch.edge_index[1]] = True
    return ~has_child


def _family_type(edge_index: Tensor, num_nodes: int) -> Tensor:
    # Every non-root node sits in a 3-D cell family (type 0); roots: -1.
    family_type = torch.full((num_nodes, ), -1, dtype=torch.long)
    family_type[edge_index[0]] = 0
    return family_type


# --- models ----------------------------------------------------------------
class HSAPointClassifier(nn.Module):
    r"""Point coordinates -> HSAEncoder over a hierarchy -> mean and max over
    the leaves -> linear head."""

    def __init__(self, channels: int, layers: int, heads: int,
                 num_classes: int, dropout: float):
        super().__init__()
        self.encoder = HSAEncoder(3, channels, num_layers=layers, heads=heads,
                                  ffn_channels=2 * channels, dropout=dropout,
                                  families=[3], pos_channels=16,
                                  pos_head_channels=8, max_period=16.0)
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, data) -> Tensor:
        layout = tree_layout(data.edge_index, data.num_nodes)
        x = self.encoder(data.x, data.edge_index, pos=data.pos,
                         family_type=data.family_type, layout=layout)
        mean = leaf_mean_pool(x, layout, data.batch, data.num_graphs)
        leaf = layout.is_leaf.unsqueeze(-1)
        from torch_geometric.utils import scatter
        top = scatter(x.masked_fill(~leaf, -1e4), data.batch, dim=0,
                      dim_size=data.num_graphs, reduce='max')
        return self.head(torch.cat([mean, top], dim=-1))


class TransformerConvLayer(nn.Module):
    r"""TransformerConv with the HSA layer's residual, norms and FFN."""

    def __init__(self, channels: int, heads: int, dropout: float):
        super().__init__()
        self.conv = TransformerConv(channels, channels // heads, heads=heads,
                                    dropout=0.0)
        self.norm1 = nn.LayerNorm(channels)
        self.ffn = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(),
                                 nn.Dropout(dropout),
                                 nn.Linear(2 * channels, channels))
        self.norm2 = nn.LayerNorm(channels)
        self.dropout = dropout

    def forward(self, x: Tensor, edge_index: Tensor) -> Tensor:
        h = self.norm1(x + F.dropout(self.conv(x, edge_index), self.dropout,
                                     self.training))
        return self.norm2(h + F.dropout(self.ffn(h), self.dropout,
                                        self.training))


class KNNTransformerClassifier(nn.Module):
    def __init__(self, channels: int, layers: int, heads: int,
                 num_classes: int, dropout: float):
        super().__init__()
        self.input_proj = nn.Linear(3, channels)
        self.layers = nn.ModuleList([
            TransformerConvLayer(channels, heads, dropout)
            for _ in range(layers)
        ])
        self.head = nn.Linear(2 * channels, num_classes)

    def forward(self, data) -> Tensor:
        from torch_geometric.nn import global_max_pool, global_mean_pool
        x = self.input_proj(data.x)
        for layer in self.layers:
            x = layer(x, data.edge_index)
        pooled = torch.cat([global_mean_pool(x, data.batch, data.num_graphs),
                            global_max_pool(x, data.batch, data.num_graphs)],
                           dim=-1)
        return self.head(pooled)


# --- training --------------------------------------------------------------
def evaluate(model: nn.Module, loader, device, num_classes: int):
    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for batch in loader:
            batch = batch.to(device)
            preds.append(model(batch).argmax(-1).cpu())
            targets.append(batch.y.view(-1).cpu())
    pred, target = torch.cat(preds), torch.cat(targets)
    return (float((pred == target).float().mean()),
            macro_f1(pred, target, num_classes))


def build_inputs(name: str, args, clouds) -> tuple:
    r"""Each model's input for every shape, built once: hierarchies and kNN
    graphs of the canonical pose (augmentation then turns the points and
    cells with the shape, see :func:`shape_utils.augment_batch`)."""
    train_pos, train_y, test_pos, test_y, train_knn, test_knn = clouds
    if name == 'hsa-octree':
        build = lambda i, p, y, knn: octree_input(p, y, args.leaf_size)  # noqa
    elif name == 'hsa-flat':
        build = lambda i, p, y, knn: flat_input(p, y)  # noqa
    else:
        build = lambda i, p, y, knn: knn_input(p, y, knn[i])  # noqa
    train = [build(i, p, y, train_knn) for i, (p, y) in enumerate(
        zip(tqdm(train_pos, desc=f'{name} inputs', leave=False), train_y))]
    test = [build(i, p, y, test_knn) for i, (p, y) in enumerate(
        zip(test_pos, test_y))]
    return train, test


def run_one(name: str, seed: int, args, inputs, device) -> dict:
    seed_everything(seed)
    train_set, test_set = inputs
    augment_generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train_set, batch_size=args.batch_size,
                              shuffle=True, generator=torch.Generator()
                              .manual_seed(seed))
    test_loader = DataLoader(test_set, batch_size=args.batch_size)
    num_classes = len(SweetHome3DFurniture.classes)
    cls = (KNNTransformerClassifier if name == 'knn-transformer' else
           HSAPointClassifier)
    model = cls(args.channels, args.layers, args.heads, num_classes,
                args.dropout).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr,
                                  weight_decay=0.05)
    steps = args.epochs * len(train_loader)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, total_steps=steps, pct_start=0.1)
    history = {'train_loss': [], 'test_acc': [], 'test_f1': [],
               'epoch_s': [], 'peak_mb': []}
    bar = tqdm(range(args.epochs), desc=f'{name} seed {seed}', leave=False)
    for _ in bar:
        model.train()
        total, count = 0.0, 0
        with Timer(device) as timer, PeakMemory(device) as memory:
            for batch in train_loader:
                batch = augment_batch(batch.to(device), augment_generator,
                                      point_rows=_point_rows(batch))
                loss = F.cross_entropy(model(batch), batch.y.view(-1),
                                       label_smoothing=0.1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach()) * batch.num_graphs
                count += batch.num_graphs
        acc, f1 = evaluate(model, test_loader, device, num_classes)
        for key, value in (('train_loss', total / count), ('test_acc', acc),
                           ('test_f1', f1), ('epoch_s', timer.seconds),
                           ('peak_mb', memory.peak_mb)):
            history[key].append(value)
        bar.set_postfix(loss=f'{total / count:.3f}', acc=f'{acc:.3f}',
                        s=f'{timer.seconds:.1f}')
    # The first epoch includes warm-up (allocator, caches): time the others.
    timed = history['epoch_s'][1:] or history['epoch_s']
    return {'model': name, 'seed': seed, 'parameters': count_parameters(model),
            'test_acc': history['test_acc'][-1],
            'test_f1': history['test_f1'][-1],
            'epoch_s': sorted(timed)[len(timed) // 2],
            'peak_mb': max(history['peak_mb']), 'history': history}


def load_clouds(args):
    root = os.path.join(os.environ.get('HSA_DATA', 'data'), 'furniture')
    train = SweetHome3DFurniture(root, 'train', num_points=2048)
    test = SweetHome3DFurniture(root, 'test', num_points=2048)
    if args.num_points > train.num_points:
        raise ValueError(f'--num-points must be <= {train.num_points}')

    def clouds(ds):
        # The processed points are i.i.d. surface samples, so the first k are
        # a uniform sample of k points.
        return ([d.pos[:args.num_points] for d in ds],
                [d.y.view(1) for d in ds])

    train_pos, train_y = clouds(train)
    test_pos, test_y = clouds(test)
    knn = lambda ps: [knn_graph(p, args.k) for p in  # noqa: E731
                      tqdm(ps, desc='kNN graphs', leave=False)]
    return (train_pos, train_y, test_pos, test_y, knn(train_pos),
            knn(test_pos))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-points', type=int, default=2048)
    add_run_arguments(parser, quick_help='256 points, 4 epochs, 3 seeds (< 5 minutes)', epochs=40,
                      models=MODELS, channels=64, batch_size=16,
                      lr=0.002, out='runs/point_cloud_classification')
    args = parser.parse_args(argv)
    if args.quick:
        args.num_points, args.epochs = 256, 4
    device, models = setup_run(parser, args, MODELS)

    start = time.time()
    clouds = load_clouds(args)
    inputs = {name: build_inputs(name, args, clouds) for name in models}
    runs = []
    budget = RunBudget(args.max_minutes)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        if not budget.allows_all(models):
            print(f'time budget reached: stopping before seed {seed}')
            break
        for name in models:
            run_start = time.time()
            run = run_one(name, seed, args, inputs[name], device)
            budget.record(name, time.time() - run_start)
            runs.append(run)
            write_json(os.path.join(args.out, 'runs_partial.json'),
                       {'args': vars(args), 'runs': runs})
            print(f"{name:16s} seed {seed}: acc {run['test_acc']:.3f} "
                  f"f1 {run['test_f1']:.3f} {run['epoch_s']:.2f} s/epoch "
                  f"peak {run['peak_mb']:.0f} MB "
                  f"({run['parameters']:,} parameters)", flush=True)
    summary = summarize(runs, ('test_acc', 'test_f1', 'epoch_s', 'peak_mb'))
    print(f'\n{"model":16s} {"params":>8s} {"accuracy":>15s} '
          f'{"macro-F1":>15s} {"s/epoch":>8s} {"peak MB":>8s}')
    for name, row in summary.items():
        print(f"{name:16s} {row['parameters']:8,d} {fmt(row['test_acc'])} "
              f"{fmt(row['test_f1'])} {row['epoch_s']['mean']:8.2f} "
              f"{row['peak_mb']['mean']:8.0f}")
    payload = {'args': vars(args), 'device': str(device),
               'torch_threads': torch.get_num_threads(),
               'wall_s': time.time() - start, 'summary': summary,
               'runs': runs}
    write_json(os.path.join(args.out, 'results.json'), payload)
    plot_curves(runs, os.path.join(args.out, 'curves.png'),
                title=f'furniture, {args.num_points} points')
    print(' '.join(f"{name} acc={row['test_acc']['mean']:.3f}"
                   for name, row in summary.items()))
    return payload


if __name__ == '__main__':
    main()
