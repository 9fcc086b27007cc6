r"""Multi-modal classification of real furniture: one HSA hierarchy per item
holding its 3-D shape, its catalogue icon and its name.

Every item of :class:`hsa_graph.datasets.SweetHome3DFurniture` becomes a keyed
root (:func:`hsa_graph.compose_hierarchies`) with three children:

* ``shape``: the octree of its surface point cloud (leaves: points, x = xyz);
* ``icon``:  the quad-tree of 16 x 16 patches of its 128 x 128 icon;
* ``name``:  its name's words, with the class-revealing words masked
  (``'Bar stool'`` -> ``bar <mask>``; the labels come from the names, so the
  raw name would give the answer away).

One :class:`hsa_graph.nn.HSAEncoder` with per-modality Q/K/V projections (and
per-modality input embeddings) attends across all leaves; each modality's
leaves are pooled into its subtree root, the roots averaged, and a linear head
predicts the class. Compared, at the same width and depth:

* ``hsa-all``: the multi-modal hierarchy;
* ``hsa-all-moddrop``: the same model trained with modality dropout: each
  epoch, each training item is, with probability ``--modality-dropout``,
  replaced by the item composed without one uniformly chosen modality;
* ``hsa-shape`` / ``hsa-icon`` / ``hsa-name``: one modality;
* ``late-fusion``: one encoder per modality, pooled and concatenated (no
  cross-modal attention).

Then, with no retraining, ``hsa-all``, ``hsa-all-moddrop`` and
``late-fusion`` are tested with one child dropped from every test hierarchy
(late fusion gets zeros in the missing slot). Writes ``<out>/results.json``
and ``<out>/curves.png``.

    python examples/multimodal_classification.py --quick     # < 5 minutes
    python examples/multimodal_classification.py --epochs 40
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections import Counter
from typing import Dict, List, Sequence

import torch
from torch import Tensor, nn
from hsa_graph.loader import DataLoader
from torch_geometric.utils import scatter
from tqdm.auto import tqdm

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from shape_utils import (add_run_arguments, augment_batch,  # noqa: E402
                         data_dir, evaluate_classifier, fmt, headline,
                         make_optimizer, mean_ci, plot_curves, print_summary,
                         run_line, run_record, run_seeds, save_results,
                         seed_everything, setup_run, summarize,
                         train_classifier_epoch, train_epochs)

from hsa_graph import Hierarchy, tree_layout  # noqa: E402
from hsa_graph.convert import (compose_hierarchies, from_image,  # noqa: E402
                               from_point_cloud)
from hsa_graph.datasets import SweetHome3DFurniture  # noqa: E402
from hsa_graph.nn import HSAEncoder, pool_to_depth  # noqa: E402

MODALITIES = ('shape', 'icon', 'name')
MODELS = ('hsa-all', 'hsa-shape', 'hsa-icon', 'hsa-name', 'late-fusion',
          'hsa-all-moddrop')
PATCH = 16          # icon patch side: 128 / 16 = 8 x 8 patches
PATCH_DIM = 3 * PATCH * PATCH


# --- per-modality hierarchies ------------------------------------------------
class Vocabulary:
    r"""Word -> id over the training names; id 0 is for unknown words."""

    def __init__(self, names: Sequence[str]):
        counts = Counter(word for name in names for word in name.split())
        self.words = ['<unk>'] + sorted(counts)
        self.ids = {word: i for i, word in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, name: str) -> Tensor:
        return torch.tensor([self.ids.get(w, 0) for w in name.split()] or [0])


def name_hierarchy(token_id: Tensor) -> Hierarchy:
    r"""Root with the words as children, positioned by their index."""
    n = token_id.numel()
    parent = torch.full((n + 1, ), n, dtype=torch.long)
    parent[n] = -1
    pos = torch.cat([torch.arange(n, dtype=torch.float), torch.zeros(1)])
    return Hierarchy.from_parent(parent, pos=pos.unsqueeze(-1),
                                 token_id=torch.cat([token_id,
                                                     token_id.new_full((1, ),
                                                                       -1)]))


def item_parts(pos: Tensor, icon: Tensor, token_id: Tensor,
               leaf_size: int) -> Dict[str, Hierarchy]:
    shape = from_point_cloud(pos, x=pos, leaf_size=leaf_size)
    image = from_image(icon.float() / 255.0 - 0.5, patch_size=PATCH)
    return {'shape': Hierarchy(x=shape.x, edge_index=shape.edge_index,
                               pos=shape.pos, num_nodes=shape.num_nodes),
            'icon': Hierarchy(x=image.x, edge_index=image.edge_index,
                              pos=image.pos, num_nodes=image.num_nodes),
            'name': name_hierarchy(token_id)}


def compose_item(parts: Dict[str, Hierarchy], y: Tensor) -> Hierarchy:
    r"""Keyed root over the given parts (any subset of :data:`MODALITIES`,
    in that order), with modality-stable ids: ``node_type`` is the global
    modality id (0 shape, 1 icon, 2 name) whichever parts are present, the
    part roots' position is that id (a learned key embedding), and
    ``family_type`` is 0 for the keyed family, 1 + modality inside a part."""
    keys = [key for key in MODALITIES if key in parts]
    h = compose_hierarchies({key: parts[key] for key in keys})
    sizes = [parts[key].num_nodes for key in keys]
    modality = torch.cat([torch.full((n, ), MODALITIES.index(key))
                          for key, n in zip(keys, sizes)] +
                         [torch.zeros(1, dtype=torch.long)])  # root: unused
    root = h.num_nodes - 1
    is_part_root = h.edge_index[1] == root
    part_root = h.edge_index[0][is_part_root]
    family_type = 1 + modality
    family_type[part_root] = 0
    family_type[root] = -1
    inner = h.pos[:, len(keys):]
    pos = torch.zeros(h.num_nodes, 3)
    pos[:, :inner.size(1)] = inner
    pos[part_root] = 0.0
    pos[part_root, 0] = modality[part_root].float()
    x = h.x if h.x is not None else torch.zeros(h.num_nodes, PATCH_DIM)
    if x.size(1) < PATCH_DIM:
        x = torch.cat([x, x.new_zeros(x.size(0), PATCH_DIM - x.size(1))], 1)
    token_id = getattr(h, 'token_id', None)
    if token_id is None:
        token_id = torch.full((h.num_nodes, ), -1, dtype=torch.long)
    return Hierarchy(x=x, edge_index=h.edge_index, pos=pos,
                     node_type=modality, family_type=family_type,
                     token_id=token_id, y=y, num_nodes=h.num_nodes)


# --- models -------------------------------------------------------------------
class ModalityEmbedding(nn.Module):
    r"""Leaf features of every modality to the model width: xyz for shape
    leaves, patch pixels for icon leaves, a word embedding for name leaves;
    internal nodes get zeros."""

    def __init__(self, channels: int, vocab_size: int):
        super().__init__()
        self.shape = nn.Linear(3, channels)
        self.icon = nn.Linear(PATCH_DIM, channels)
        self.name = nn.Embedding(vocab_size, channels)

    def forward(self, data, is_leaf: Tensor) -> Tensor:
        node_type = data.node_type
        out = torch.where((node_type == 0).unsqueeze(-1),
                          self.shape(data.x[:, :3]), 0.0)
        out = out + torch.where((node_type == 1).unsqueeze(-1),
                                self.icon(data.x), 0.0)
        word = self.name(data.token_id.clamp(min=0))
        out = out + torch.where(((node_type == 2) & (data.token_id >= 0))
                                .unsqueeze(-1), word, 0.0)
        return out * is_leaf.unsqueeze(-1).to(out.dtype)


def make_encoder(channels: int, layers: int, heads: int, dropout: float,
                 num_node_types: int) -> HSAEncoder:
    # Family types: 0 keyed modality family, 1 octree (3-D offsets),
    # 2 quad-tree (2-D offsets), 3 words (1-D index).
    return HSAEncoder(channels, channels, num_layers=layers, heads=heads,
                      ffn_channels=2 * channels, dropout=dropout,
                      num_node_types=num_node_types,
                      families=[('key', len(MODALITIES)), 3, 2, 1],
                      pos_channels=16, pos_head_channels=8, max_period=16.0)


def modality_pool(x: Tensor, data, layout) -> Tensor:
    r"""Mean of each part's leaves (pooled into the part roots, depth 1),
    then the mean over the parts present in each tree."""
    pooled, _, pooled_batch = pool_to_depth(x, layout, 1, data.batch)
    return scatter(pooled, pooled_batch, dim=0, dim_size=data.num_graphs,
                   reduce='mean')


class HSAMultimodal(nn.Module):
    def __init__(self, channels, layers, heads, num_classes, dropout,
                 vocab_size):
        super().__init__()
        self.embed = ModalityEmbedding(channels, vocab_size)
        self.encoder = make_encoder(channels, layers, heads, dropout,
                                    len(MODALITIES))
        self.head = nn.Linear(channels, num_classes)

    def forward(self, data) -> Tensor:
        layout = data.layout                 # built by the loader
        x = self.encoder(self.embed(data, layout.is_leaf), data.edge_index,
                         pos=data.pos, family_type=data.family_type,
                         node_type=data.node_type, layout=layout)
        return self.head(modality_pool(x, data, layout))


class LateFusion(nn.Module):
    r"""One encoder per modality on that modality's subtrees only (the keyed
    root's edges are cut, so there is no cross-modal attention), pooled per
    modality, concatenated (zeros for a missing modality) and classified."""

    def __init__(self, channels, layers, heads, num_classes, dropout,
                 vocab_size):
        super().__init__()
        self.embed = ModalityEmbedding(channels, vocab_size)
        self.encoders = nn.ModuleList([
            make_encoder(channels, layers, heads, dropout, 1)
            for _ in MODALITIES])
        self.head = nn.Linear(len(MODALITIES) * channels, num_classes)

    def forward(self, data) -> Tensor:
        full_layout = data.layout            # built by the loader
        x = self.embed(data, full_layout.is_leaf)
        # Cut the keyed roots off: each modality subtree becomes a tree.
        keep = data.family_type[data.edge_index[0]] != 0
        edge_index = data.edge_index[:, keep]
        pooled = []
        for modality, encoder in enumerate(self.encoders):
            mine = data.node_type == modality
            mine[full_layout.parent < 0] = False     # the keyed roots
            nodes = mine.nonzero().flatten()
            out = x.new_zeros(data.num_graphs, x.size(1))
            if nodes.numel() > 0:
                relabel = torch.full((data.num_nodes, ), -1, dtype=torch.long,
                                     device=x.device)
                relabel[nodes] = torch.arange(nodes.numel(), device=x.device)
                sub_edges = relabel[edge_index[:, mine[edge_index[0]]]]
                layout = tree_layout(sub_edges, nodes.numel())
                h = encoder(x[nodes], sub_edges, pos=data.pos[nodes],
                            family_type=data.family_type[nodes],
                            layout=layout)
                leaf = layout.is_leaf.unsqueeze(-1).to(h.dtype)
                batch = data.batch[nodes]
                total = scatter(h * leaf, batch, 0, dim_size=data.num_graphs,
                                reduce='sum')
                count = scatter(leaf, batch, 0, dim_size=data.num_graphs,
                                reduce='sum')
                out = total / count.clamp(min=1)
            pooled.append(out)
        return self.head(torch.cat(pooled, dim=-1))


# --- data -----------------------------------------------------------------------
def build_set(items: List[dict], keys: Sequence[str], leaf_size: int,
              desc: str) -> List[Hierarchy]:
    r"""The composed hierarchy of every item, built once (augmentation turns
    the shape's points and octree cells per batch, see
    :func:`shape_utils.augment_batch`)."""
    out = []
    for item in tqdm(items, desc=desc, leave=False):
        parts = item_parts(item['pos'], item['icon'], item['token_id'],
                           leaf_size)
        out.append(compose_item({k: parts[k] for k in keys}, item['y']))
    return out


def without_each() -> List[tuple]:
    r"""The key tuples with one modality dropped, in :data:`MODALITIES`
    order (entry ``m`` lacks ``MODALITIES[m]``)."""
    return [tuple(k for k in MODALITIES if k != m) for m in MODALITIES]


def modality_dropout(complete: List[Hierarchy],
                     partial: List[List[Hierarchy]], p: float, seed: int,
                     epoch: int) -> List[Hierarchy]:
    r"""One epoch's training set under modality dropout: item ``i`` is
    ``complete[i]`` or, with probability :obj:`p`, ``partial[m][i]`` (the item
    composed without modality ``m``) for a uniformly chosen ``m``. The draws
    depend only on :obj:`seed` and :obj:`epoch`."""
    generator = torch.Generator().manual_seed(1_000_003 * seed + epoch)
    drop = torch.rand(len(complete), generator=generator) < p
    dropped = torch.randint(len(partial), (len(complete), ),
                            generator=generator)
    return [partial[m][i] if d else item for i, (item, d, m) in
            enumerate(zip(complete, drop.tolist(), dropped.tolist()))]


def augment(batch, generator: torch.Generator):
    is_parent = torch.zeros(batch.num_nodes, dtype=torch.bool,
                            device=batch.x.device)
    is_parent[batch.edge_index[1]] = True
    return augment_batch(batch, generator,
                         point_rows=(batch.node_type == 0) & ~is_parent,
                         offset_rows=batch.family_type == 1)


def load_items(num_points: int):
    root = data_dir('furniture')
    train = SweetHome3DFurniture(root, 'train', num_points=2048)
    test = SweetHome3DFurniture(root, 'test', num_points=2048)
    vocab = Vocabulary([d.name_masked for d in train])

    def items(ds):
        return [{'pos': d.pos[:num_points], 'icon': d.icon[0],
                 'token_id': vocab.encode(d.name_masked), 'y': d.y.view(1)}
                for d in ds]

    return items(train), items(test), vocab


# --- training -------------------------------------------------------------------
def keys_of(name: str) -> tuple:
    return MODALITIES if name.startswith('hsa-all') or \
        name == 'late-fusion' else (name.split('-', 1)[1], )


def run_one(name, seed, args, data, sets, device) -> dict:
    seed_everything(seed)
    vocab = data[2]
    keys = keys_of(name)
    num_classes = len(SweetHome3DFurniture.classes)
    augment_generator = torch.Generator().manual_seed(seed)
    shuffle_generator = torch.Generator().manual_seed(seed)
    train_set = sets[('train', keys)]
    partial = ([sets[('train', kept)] for kept in without_each()]
               if name.endswith('-moddrop') else None)
    test_loader = DataLoader(sets[('test', keys)], batch_size=args.batch_size)
    cls = LateFusion if name == 'late-fusion' else HSAMultimodal
    model = cls(args.channels, args.layers, args.heads, num_classes,
                args.dropout, len(vocab)).to(device)
    optimizer, scheduler = make_optimizer(
        model, args, math.ceil(len(train_set) / args.batch_size))

    def train_epoch(epoch):
        epoch_set = train_set if partial is None else modality_dropout(
            train_set, partial, args.modality_dropout, seed, epoch)
        train_loader = DataLoader(epoch_set, batch_size=args.batch_size,
                                  shuffle=True, generator=shuffle_generator)
        return train_classifier_epoch(
            model, train_loader,
            lambda batch: augment(batch.to(device), augment_generator),
            optimizer, scheduler)

    def evaluate():
        acc, f1 = evaluate_classifier(model, test_loader, device, num_classes)
        return {'test_acc': acc, 'test_f1': f1}

    history, final = train_epochs(model, name, seed, args, device,
                                  train_epoch, evaluate,
                                  recorded=('test_acc', 'test_f1'))
    run = run_record(name, seed, model, history, final)
    if len(keys) == len(MODALITIES):   # drop one child at test time
        for dropped, kept in zip(MODALITIES, without_each()):
            loader = DataLoader(sets[('test', kept)],
                                batch_size=args.batch_size)
            acc, f1 = evaluate_classifier(model, loader, device,
                                          num_classes)
            run[f'acc_without_{dropped}'] = acc
            run[f'f1_without_{dropped}'] = f1
    return run


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--num-points', type=int, default=1024)
    add_run_arguments(parser, quick_help='128 points, 3 epochs, 3 seeds (< 5 minutes)', epochs=40,
                      models=MODELS, channels=64, batch_size=16,
                      lr=0.002, out='runs/multimodal_classification', knn=False)
    parser.add_argument('--modality-dropout', type=float, default=0.3,
                        help='hsa-all-moddrop: probability that a training '
                        'item loses one random modality in an epoch')
    args = parser.parse_args(argv)
    if args.quick:
        args.num_points, args.epochs = 128, 3
    device, models = setup_run(parser, args, MODELS)

    start = time.time()
    data = load_items(args.num_points)
    wanted = {keys_of(name) for name in models}
    test_keys, train_keys = set(wanted), set(wanted)
    if MODALITIES in wanted:  # the missing-modality tests
        test_keys |= set(without_each())
    if any(name.endswith('-moddrop') for name in models):
        train_keys |= set(without_each())
    sets = {('train', keys): build_set(data[0], keys, args.leaf_size,
                                       f"train {'+'.join(keys)}")
            for keys in train_keys}
    sets.update({('test', keys): build_set(data[1], keys, args.leaf_size,
                                           f"test {'+'.join(keys)}")
                 for keys in test_keys})

    def describe(run):
        extra = ' '.join(f"-{m}: {run[f'acc_without_{m}']:.3f}"
                         for m in MODALITIES if f'acc_without_{m}' in run)
        return (run_line(run, (('acc', 'test_acc'), ('f1', 'test_f1')),
                         width=15) + f' {extra}')

    runs = run_seeds(args, models,
                     lambda name, seed: run_one(name, seed, args, data, sets,
                                                device),
                     describe)
    metrics = ['test_acc', 'test_f1', 'epoch_s', 'peak_mb']
    summary = summarize(runs, metrics)
    for name, row in summary.items():
        mine = [r for r in runs if r['model'] == name]
        for m in MODALITIES:
            if f'acc_without_{m}' in mine[0]:
                row[f'acc_without_{m}'] = mean_ci(
                    [r[f'acc_without_{m}'] for r in mine])
                row[f'f1_without_{m}'] = mean_ci(
                    [r[f'f1_without_{m}'] for r in mine])
    print_summary(summary, (('accuracy', 'test_acc'), ('macro-F1', 'test_f1')),
                  name_width=15)
    for name, row in summary.items():
        for m in MODALITIES:
            if f'acc_without_{m}' in row:
                print(f"{name:15s} without {m:5s}: acc "
                      f"{fmt(row[f'acc_without_{m}'])} f1 "
                      f"{fmt(row[f'f1_without_{m}'])}")
    payload = save_results(args, device, start, summary, runs,
                           vocabulary_size=len(data[2]))
    plot_curves(runs, os.path.join(args.out, 'curves.png'),
                title='furniture: shape + icon + name')
    print(headline(summary, 'test_acc', 'acc'))
    return payload


if __name__ == '__main__':
    main()
