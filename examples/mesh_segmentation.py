r"""Dense prediction with HSA: per-point segmentation of a real aerial LiDAR
scan (CGAL's ``b9_training.ply``: ground / vegetation / roof).

Every one of the 22,300 points is a leaf and gets a prediction; the loss and
the scores use the 2,447 labelled points, split into train and test by a
checkerboard of 5 m cells (:class:`hsa_graph.datasets.CGALSegmentation`). The
scene is cut into 4 x 4 tiles (about 1,400 points each), one hierarchy per
tile. Install the data with ``bash datasets/fetch_meshes.sh``.

Models (same width, depth, heads and FFN):

* ``hsa-octree``: :class:`hsa_graph.nn.HSAEncoder` on each tile's octree;
* ``hsa-flat``: the same encoder on the one-level tree (softmax attention
  over the whole tile);
* ``knn-transformer``: PyG ``TransformerConv`` on the kNN graph (k = 16,
  pure torch), the point set's connectivity.

Inputs are coordinates only (the file's colours paint the labels, so they are
not used): x, y in the tile (scaled to [-1, 1]) and height above the scene's
lowest point (/ 25 m). Augmentation: rotation about z, jitter. Reported: test
accuracy, mean IoU and macro-F1 over labelled test points (mean +- 95% CI over
seeds), time and peak memory per epoch. Writes ``<out>/results.json``,
``<out>/curves.png`` and ``<out>/predictions.png``.

    python examples/mesh_segmentation.py --quick        # < 5 minutes
    python examples/mesh_segmentation.py --epochs 150
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.data import Batch, Data

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shape_utils import (add_run_arguments, cell_family_type,  # noqa: E402
                         data_dir, flat_tree, headline, macro_f1,
                         make_optimizer, mean_iou, optimizer_step, plot_curves,
                         print_summary, run_line, run_record, run_seeds,
                         save_results, seed_everything, setup_run, summarize,
                         train_epochs)
from point_cloud_classification import TransformerConvLayer  # noqa: E402

from hsa_graph import Hierarchy, from_point_cloud  # noqa: E402
from hsa_graph.datasets import CGALSegmentation  # noqa: E402
from hsa_graph.nn import HSAEncoder  # noqa: E402
from hsa_graph.sampling import knn_graph  # noqa: E402

MODELS = ('hsa-octree', 'hsa-flat', 'knn-transformer')
HEIGHT_SCALE = 25.0


def features(pos: Tensor, half_extent: float) -> Tensor:
    return torch.stack([pos[:, 0] / half_extent, pos[:, 1] / half_extent,
                        pos[:, 2] / HEIGHT_SCALE], dim=1)


def tile_input(tile: Data, pos: Tensor, kind: str, leaf_size: int,
               half_extent: float, knn: Tensor) -> Data:
    r"""Leaves first (leaf i = point i), so per-point targets line up."""
    x = features(pos, half_extent)
    n = x.size(0)
    if kind == 'hsa-octree':
        h = from_point_cloud(x, x=x, leaf_size=leaf_size)
        out = Hierarchy(x=h.x, edge_index=h.edge_index, pos=h.pos,
                        num_nodes=h.num_nodes)
    elif kind == 'hsa-flat':
        out = flat_tree(x)
    else:
        return Data(x=x, edge_index=knn, y=tile.y, train_mask=tile.train_mask,
                    test_mask=tile.test_mask, num_nodes=n)
    extra = out.num_nodes - n
    out.family_type = cell_family_type(out.edge_index, out.num_nodes)
    out.y = torch.cat([tile.y, tile.y.new_full((extra, ), -1)])
    pad = torch.zeros(extra, dtype=torch.bool)
    out.train_mask = torch.cat([tile.train_mask, pad])
    out.test_mask = torch.cat([tile.test_mask, pad])
    return out


def rotate_jitter(pos: Tensor, generator: torch.Generator) -> Tensor:
    angle = float(torch.rand(1, generator=generator)) * 2 * math.pi
    c, s = math.cos(angle), math.sin(angle)
    rotation = pos.new_tensor([[c, -s, 0.], [s, c, 0.], [0., 0., 1.]])
    return pos @ rotation.t() + 0.05 * torch.randn(pos.shape,
                                                   generator=generator)


class HSASegmenter(nn.Module):
    def __init__(self, channels, layers, heads, num_classes, dropout):
        super().__init__()
        self.encoder = HSAEncoder(3, channels, num_layers=layers, heads=heads,
                                  ffn_channels=2 * channels, dropout=dropout,
                                  families=[3], pos_channels=16,
                                  pos_head_channels=8, max_period=16.0)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, data) -> Tensor:
        layout = data.layout                 # built by the loader
        x = self.encoder(data.x, data.edge_index, pos=data.pos,
                         family_type=data.family_type, layout=layout)
        return self.head(x)  # every node; leaves are the points


class KNNSegmenter(nn.Module):
    def __init__(self, channels, layers, heads, num_classes, dropout):
        super().__init__()
        self.input_proj = nn.Linear(3, channels)
        self.layers = nn.ModuleList([TransformerConvLayer(channels, heads,
                                                          dropout)
                                     for _ in range(layers)])
        self.head = nn.Linear(channels, num_classes)

    def forward(self, data) -> Tensor:
        x = self.input_proj(data.x)
        for layer in self.layers:
            x = layer(x, data.edge_index)
        return self.head(x)


def scores(pred: Tensor, target: Tensor, num_classes: int) -> dict:
    return {'test_acc': float((pred == target).float().mean()),
            'test_miou': mean_iou(pred, target, num_classes),
            'test_f1': macro_f1(pred, target, num_classes)}


def run_one(name, seed, args, tiles: List[Data], knns, half_extent, device):
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)
    num_classes = len(CGALSegmentation.classes)
    cls = KNNSegmenter if name == 'knn-transformer' else HSASegmenter
    model = cls(args.channels, args.layers, args.heads, num_classes,
                args.dropout).to(device)
    steps_per_epoch = math.ceil(len(tiles) / args.batch_size)
    optimizer, scheduler = make_optimizer(model, args, steps_per_epoch)
    test_batch = Batch.from_data_list([
        tile_input(t, t.pos, name, args.leaf_size, half_extent, k)
        for t, k in zip(tiles, knns)]).to(device)

    def train_epoch(epoch):
        # Tiles are re-built every batch: the hierarchy follows the rotation.
        order = torch.randperm(len(tiles), generator=generator).tolist()
        total = 0.0
        for start in range(0, len(tiles), args.batch_size):
            batch = Batch.from_data_list([
                tile_input(tiles[i], rotate_jitter(tiles[i].pos, generator),
                           name, args.leaf_size, half_extent, knns[i])
                for i in order[start:start + args.batch_size]]).to(device)
            logits = model(batch)
            loss = F.cross_entropy(logits[batch.train_mask],
                                   batch.y[batch.train_mask])
            optimizer_step(loss, optimizer, scheduler)
            total += float(loss.detach())
        return total / steps_per_epoch

    history, final = train_epochs(
        model, name, seed, args, device, train_epoch,
        lambda: evaluate(model, test_batch, num_classes),
        recorded=('test_acc', 'test_miou'), shown='test_miou')
    return model, test_batch, run_record(name, seed, model, history, final)


def evaluate(model, batch, num_classes) -> dict:
    model.eval()
    with torch.no_grad():
        pred = model(batch).argmax(-1).cpu()
    mask = batch.test_mask.cpu()
    return scores(pred[mask], batch.y.cpu()[mask], num_classes)


def plot_predictions(model, batch, tiles, path: str) -> None:
    r"""Every point of the scene coloured by its predicted class, next to the
    labelled points."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    model.eval()
    with torch.no_grad():
        pred = model(batch).argmax(-1).cpu()
    # Leaves come first in every tile's hierarchy: leaf i is point i.
    ptr = batch.ptr.cpu()
    pred = torch.cat([pred[int(ptr[g]):int(ptr[g]) + t.num_nodes]
                      for g, t in enumerate(tiles)])
    source = torch.cat([t.source_id for t in tiles])
    label = torch.cat([t.y for t in tiles])
    xy = torch.cat([t.pos[:, :2] + t.tile_centre for t in tiles])
    colours = torch.tensor([[0.85, 0.6, 0.1], [0.1, 0.7, 0.2],
                            [0.85, 0.1, 0.55]])
    fig, axes = plt.subplots(1, 2, figsize=(12, 6))
    axes[0].scatter(xy[:, 0], xy[:, 1], s=1, c=[[0.85] * 3])
    known = label >= 0
    axes[0].scatter(xy[known, 0], xy[known, 1], s=1,
                    c=colours[label[known]].numpy())
    axes[0].set_title('labels (grey: unlabelled)')
    axes[1].scatter(xy[:, 0], xy[:, 1], s=1, c=colours[pred].numpy())
    axes[1].set_title(f'prediction for all {source.numel():,} points')
    for ax in axes:
        ax.set_aspect('equal')
        ax.set_axis_off()
    handles = [plt.Line2D([], [], marker='o', linestyle='', color=c.tolist(),
                          label=n) for c, n in zip(colours,
                                                   CGALSegmentation.classes)]
    axes[1].legend(handles=handles, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add_run_arguments(parser, quick_help='4 epochs, 3 seeds (< 5 minutes)', epochs=150,
                      models=MODELS, channels=32, batch_size=4,
                      lr=0.003, out='runs/mesh_segmentation')
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 4
    device, models = setup_run(parser, args, MODELS)

    start = time.time()
    dataset = CGALSegmentation(data_dir('cgal_segmentation'))
    tiles = [dataset[i] for i in range(len(dataset))]
    half_extent = float(max(t.pos[:, :2].abs().max() for t in tiles))
    knns = [knn_graph(t.pos, args.k) for t in tiles]  # rotation-invariant
    best = None

    def one(name, seed):
        nonlocal best
        model, batch, run = run_one(name, seed, args, tiles, knns,
                                    half_extent, device)
        if name == 'hsa-octree' and seed == 0:
            best = (model, batch)  # drawn in predictions.png
        return run

    runs = run_seeds(args, models, one,
                     lambda run: run_line(run, (('acc', 'test_acc'),
                                                ('mIoU', 'test_miou'),
                                                ('f1', 'test_f1'))))
    summary = summarize(runs, ('test_acc', 'test_miou', 'test_f1', 'epoch_s',
                               'peak_mb'))
    print_summary(summary, (('accuracy', 'test_acc'), ('mIoU', 'test_miou'),
                            ('macro-F1', 'test_f1')), params_width=7)
    payload = save_results(args, device, start, summary, runs)
    plot_curves(runs, os.path.join(args.out, 'curves.png'), key='test_miou',
                ylabel='test mIoU', title='b9 segmentation')
    if best is not None:
        plot_predictions(best[0], best[1], tiles,
                         os.path.join(args.out, 'predictions.png'))
    print(headline(summary, 'test_miou', 'miou'))
    return payload


if __name__ == '__main__':
    main()
