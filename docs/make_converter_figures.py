r"""Draws the converter figures in docs/img/ from real data.

    bash datasets/fetch_meshes.sh          # CGAL meshes
    bash datasets/fetch_furniture.sh       # Sweet Home 3D catalogue (icons, names, OBJ)
    python docs/make_converter_figures.py

Figures (each skipped, with a message, when its data is absent):
  mesh_clusters.png      CGAL elephant: from_mesh clusters vs octree cells
  image_quadtree.png     scikit-learn digit: quad-tree of 2x2 patches
  image_attention.png    its dense HSA attention matrix (block structure)
  multimodal_tree.png    a Sweet Home 3D item: name + icon + shape, composed
"""
from __future__ import annotations

import io
import os
import sys
import zipfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))

import matplotlib  # noqa: E402

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402

import hsa_graph  # noqa: E402
from hsa_graph.plot import plot_attention, plot_hierarchy  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), '..')
DATA = os.environ.get('HSA_DATA', os.path.join(ROOT, 'data'))
OUT = os.path.join(os.path.dirname(__file__), 'img')
FURNITURE = '/usr/share/sweethome3d/furniture'


def ancestor_at_depth(h, depth: int) -> torch.Tensor:
    r"""For every leaf, its ancestor at :obj:`depth` (itself if shallower)."""
    node = h.leaf_index.clone()
    parent, node_depth = h.parent, h.depth
    while True:
        deeper = node_depth[node] > depth
        if not bool(deeper.any()):
            return node
        node = torch.where(deeper, parent[node], node)


def mesh_figure() -> None:
    path = os.path.join(DATA, 'cgal', 'data', 'meshes', 'elephant.off')
    if not os.path.exists(path):
        print('skip mesh_clusters.png: run datasets/fetch_meshes.sh')
        return
    mesh = hsa_graph.read_mesh(path)
    trees = {'from_mesh (surface clusters)': hsa_graph.from_mesh(
                 mesh.pos, mesh.face),
             'from_point_cloud (octree cells)': hsa_graph.from_point_cloud(
                 mesh.pos, leaf_size=8)}
    fig = plt.figure(figsize=(11, 5))
    for number, (title, h) in enumerate(trees.items(), start=1):
        # the depth whose node count is nearest to 24 clusters
        depth = min(range(1, h.height + 1),
                    key=lambda d: abs(int((h.depth == d).sum()) - 24))
        label = ancestor_at_depth(h, depth)
        _, colour = torch.unique(label, return_inverse=True)
        shuffled = torch.randperm(int(colour.max()) + 1,
                                  generator=torch.Generator().manual_seed(0))
        ax = fig.add_subplot(1, 2, number, projection='3d')
        p = mesh.pos
        ax.scatter(p[:, 0], p[:, 2], p[:, 1], c=shuffled[colour].numpy(),
                   cmap='tab20', s=5, linewidths=0)
        ax.set_title(f'{title}\n{int(colour.max()) + 1} nodes at depth {depth}')
        ax.view_init(elev=15, azim=-60)
        ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, 'mesh_clusters.png'), dpi=130)
    plt.close(fig)
    print('wrote mesh_clusters.png')


def image_figures() -> None:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        print('skip image figures: pip install scikit-learn')
        return
    digits = load_digits()
    img = torch.tensor(digits.images[0], dtype=torch.float32)[None]  # 8x8
    h = hsa_graph.from_image(img, patch_size=1)
    # colour every node by the mean intensity of the pixels below it
    from hsa_graph.convert._common import bottom_up_boxes
    intensity, _, _ = bottom_up_boxes(h, h.x[:64], 64)
    plot_hierarchy(h, color_by=intensity[:, 0], cmap='gray_r',
                   path=os.path.join(OUT, 'image_quadtree.png'),
                   title=f'digit {digits.target[0]}: 8x8 pixels as a quad-tree '
                         f'({h.num_nodes} nodes)')
    plt.close('all')
    # queries and keys from the pixels through a fixed random projection
    generator = torch.Generator().manual_seed(0)
    features = torch.cat([h.x / 16, h.pos], dim=1)
    weight = torch.randn(features.size(1), 2, 8, generator=generator)
    query = torch.einsum('nf,fhc->nhc', features, weight)
    key = torch.einsum('nf,fhc->nhc', features, weight.roll(1, dims=2))
    plot_attention(h, query=query, key=key,
                   path=os.path.join(OUT, 'image_attention.png'),
                   title='HSA attention between the 64 pixels')
    plt.close('all')
    print('wrote image_quadtree.png, image_attention.png')


def multimodal_figure() -> None:
    archive_path = os.path.join(FURNITURE, 'Scopia.sh3f')
    if not os.path.exists(archive_path):
        print('skip multimodal_tree.png: run datasets/fetch_furniture.sh')
        return
    from PIL import Image
    with zipfile.ZipFile(archive_path) as archive:
        properties = archive.read('PluginFurnitureCatalog.properties').decode(
            'latin-1').splitlines()
        entry = dict(line.split('=', 1) for line in properties
                     if '#1=' in line)
        name, category = entry['name#1'], entry['category#1']
        icon = Image.open(io.BytesIO(archive.read(entry['icon#1'].lstrip('/'))))
        icon = icon.convert('RGB').resize((32, 32))
        model = entry['model#1'].lstrip('/')
        import tempfile
        with tempfile.TemporaryDirectory() as folder:
            target = os.path.join(folder, 'model.obj')
            with open(target, 'wb') as handle:
                handle.write(archive.read(model))
            mesh = hsa_graph.read_mesh(target, drop_degenerate=True)
    pixels = torch.frombuffer(bytearray(icon.tobytes()), dtype=torch.uint8)
    pixels = pixels.view(32, 32, 3).permute(2, 0, 1).float() / 255
    generator = torch.Generator().manual_seed(0)
    sample = torch.randperm(mesh.pos.size(0), generator=generator)[:256]
    parts = {'name': hsa_graph.from_document(f'{name}. {category}.'),
             'icon': hsa_graph.from_image(pixels, patch_size=4),
             'shape': hsa_graph.from_point_cloud(mesh.pos[sample], leaf_size=16)}
    h = hsa_graph.Hierarchy.compose(parts)
    plot_hierarchy(h, color_by='type', cmap='tab10',
                   path=os.path.join(OUT, 'multimodal_tree.png'),
                   title=f"Sweet Home 3D '{name}': name + icon + 256 vertices "
                         f'({h.num_nodes} nodes)')
    plt.close('all')
    print('wrote multimodal_tree.png')


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    mesh_figure()
    image_figures()
    multimodal_figure()


if __name__ == '__main__':
    main()
