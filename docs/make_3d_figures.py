r"""Draws the figures of docs/point_clouds.md and docs/multimodal.md from the
real furniture data.

    bash datasets/fetch_furniture.sh
    python docs/make_3d_figures.py            # ~3 minutes on 2 CPU cores

Figures (in docs/img/):
  pc_octree.png      a chair's 256-point cloud, coloured by its top octree
                     cells, and its octree drawn with hsa_graph.plot
  pc_attention.png   where one point of a shape attends, in the first layer of
                     an HSA octree model trained here for a few epochs, and
                     the dense attention matrix (block structure)
  mm_hierarchy.png   one item's multi-modal hierarchy (shape octree, icon
                     quad-tree, name words under a keyed root), by modality
"""
from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..'))
sys.path.insert(0, os.path.join(HERE, '..', 'examples'))

import matplotlib  # noqa: E402

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from torch_geometric.loader import DataLoader  # noqa: E402

import multimodal_classification as mm  # noqa: E402
import point_cloud_classification as pc  # noqa: E402
from shape_utils import augment_batch  # noqa: E402

from hsa_graph import hsa_attention_matrix  # noqa: E402
from hsa_graph.datasets import SweetHome3DFurniture  # noqa: E402
from hsa_graph.plot import leaf_order, plot_hierarchy  # noqa: E402

OUT = os.path.join(HERE, 'img')
DATA = os.environ.get('HSA_DATA', os.path.join(HERE, '..', 'data'))
NUM_POINTS = 256


def find(dataset, name):
    r"""The first item called :obj:`name`, else the first of its class."""
    for d in dataset:
        if d.name == name:
            return d
    label = SweetHome3DFurniture.classes.index('chair')
    return next(d for d in dataset if int(d.y) == label)


def top_cell(h, depth: int = 1) -> torch.Tensor:
    r"""Each leaf's ancestor at :obj:`depth`."""
    parent, node_depth = h.parent, h.depth
    node = h.leaf_index.clone()
    while bool((node_depth[node] > depth).any()):
        node = torch.where(node_depth[node] > depth, parent[node], node)
    return node


def scatter3d(ax, pos, colour, title, cmap='tab10', **kwargs):
    ax.scatter(pos[:, 0], pos[:, 1], pos[:, 2], c=colour, s=6, cmap=cmap,
               **kwargs)
    ax.set_title(title, fontsize=9)
    ax.set_box_aspect((1, 1, 1))
    for axis in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
        axis(-1, 1)
    ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])


def octree_figure(train, path):
    chair = find(train, 'Chair')
    pos = chair.pos[:NUM_POINTS]
    h = pc.octree_input(pos, chair.y, 16)
    cell = top_cell(h)
    _, cell_id = torch.unique(cell, return_inverse=True)
    fig = plt.figure(figsize=(13, 4.2))
    ax = fig.add_subplot(1, 3, 1, projection='3d')
    scatter3d(ax, pos, cell_id, f"'{chair.name}': {NUM_POINTS} points, "
              f'coloured by top octree cell')
    ax = fig.add_subplot(1, 3, (2, 3))
    plot_hierarchy(h, ax=ax, title=f'its octree (leaf_size=16): '
                   f'{h.num_nodes} nodes, height {h.height}')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train_small_model(train, epochs=8):
    torch.manual_seed(0)
    inputs = [pc.octree_input(d.pos[:NUM_POINTS], d.y.view(1), 16)
              for d in train]
    model = pc.HSAPointClassifier(64, 2, 4, 10, 0.1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    loader = DataLoader(inputs, batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(0))
    for epoch in range(epochs):
        total = 0.0
        for batch in loader:
            batch = augment_batch(batch, generator,
                                  point_rows=pc._point_rows(batch))
            loss = F.cross_entropy(model(batch), batch.y.view(-1))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        print(f'figure model, epoch {epoch}: loss {total / len(loader):.3f}')
    return model.eval()


def first_layer_attention(model, h):
    r"""The dense attention of head 0 of the model's first layer."""
    encoder = model.encoder
    with torch.no_grad():
        x = encoder.input_proj(h.x)
        pos_embedding = encoder.pos_encoder(h.pos, h.family_type)
        layer = encoder.layers[0]
        query, key, _ = layer.project_qkv(x)
        pos = layer.pos_proj(pos_embedding).view(h.num_nodes, layer.heads,
                                                 layer.pos_head_channels)
        return hsa_attention_matrix(query, key, h.edge_index, pos=pos,
                                    include_self=layer.include_self,
                                    num_nodes=h.num_nodes)[0]


def attention_figure(model, test, path):
    shape = find(test, 'Chair')
    pos = shape.pos[:NUM_POINTS]
    h = pc.octree_input(pos, shape.y, 16)
    theta = first_layer_attention(model, h)
    leaves = h.leaf_index                        # leaf i is point i
    # Query: the highest point (top of the backrest).
    query = int(pos[:, 2].argmax())
    weights = theta[leaves[query], leaves]
    fig = plt.figure(figsize=(13, 4.6))
    ax = fig.add_subplot(1, 3, 1, projection='3d')
    shown = torch.log10(weights.clamp(min=1e-8))
    scatter3d(ax, pos, shown, 'attention of the top point (red ring), '
              'log10 weight', cmap='magma')
    ax.scatter(*pos[query].tolist(), s=120, facecolors='none',
               edgecolors='red', linewidths=2)
    ax = fig.add_subplot(1, 3, 2, projection='3d')
    total = theta[leaves][:, leaves].sum(0)      # attention each point gets
    scatter3d(ax, pos, torch.log10(total), 'attention received (sum over '
              'queries), log10', cmap='viridis')
    ax = fig.add_subplot(1, 3, 3)
    order = leaf_order(h)
    block = theta[order][:, order]
    image = ax.imshow(torch.log10(block.clamp(min=1e-10)).numpy(),
                      cmap='magma', interpolation='nearest')
    fig.colorbar(image, ax=ax, fraction=0.046, label=r'$\log_{10}\theta$')
    ax.set_title('first layer, head 0: leaves in octree order', fontsize=9)
    ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"HSA attention over '{shape.name}' (test item), after a "
                 f'short training', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def multimodal_figure(train, path):
    item = find(train, 'Bar chair')
    vocab = mm.Vocabulary([d.name_masked for d in train])
    parts = mm.item_parts(item.pos[:64], item.icon[0],
                          vocab.encode(item.name_masked), leaf_size=8)
    h = mm.compose_item(parts, item.y)
    h.node_type_names = list(mm.MODALITIES)
    fig = plt.figure(figsize=(14, 4.6))
    ax = fig.add_subplot(1, 4, 1)
    ax.imshow(item.icon[0].permute(1, 2, 0).numpy())
    ax.set_title(f"'{item.name}' -> name leaves: {item.name_masked}",
                 fontsize=9)
    ax.axis('off')
    ax = fig.add_subplot(1, 4, (2, 4))
    plot_hierarchy(h, ax=ax, color_by='type', cmap='viridis',
                   title=f'keyed root -> shape octree (64 points), icon '
                         f'quad-tree (8 x 8 patches), name ({h.num_nodes} '
                         f'nodes)')
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    root = os.path.join(DATA, 'furniture')
    train = SweetHome3DFurniture(root, 'train', num_points=2048)
    test = SweetHome3DFurniture(root, 'test', num_points=2048)
    octree_figure(train, os.path.join(OUT, 'pc_octree.png'))
    multimodal_figure(train, os.path.join(OUT, 'mm_hierarchy.png'))
    model = train_small_model(train)
    attention_figure(model, test, os.path.join(OUT, 'pc_attention.png'))
    print('wrote', ', '.join(sorted(f for f in os.listdir(OUT)
                                    if f.startswith(('pc_', 'mm_')))))


if __name__ == '__main__':
    main()
