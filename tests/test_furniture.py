r"""Furniture / ModelNet shape datasets, surface sampling and pure-torch kNN."""
import io
import os
import os.path as osp
import shutil
import zipfile

import pytest
import torch

from hsa_graph.datasets import (FURNITURE_CLASSES, ModelNetPoints,
                                SweetHome3DFurniture, classify_furniture,
                                mask_class_words)
from hsa_graph.datasets._sweethome3d_catalogue import (labelled_items,
                                                       read_catalogue,
                                                       split_of)
from hsa_graph.sampling import (SampleSurface, knn_graph,
                                normalize_unit_sphere, sample_surface)

HERE = osp.dirname(osp.abspath(__file__))
MODELNET_SAMPLE = osp.join(HERE, '..', 'datasets', 'samples', 'modelnet_tiny',
                           'ModelNet10')
REAL_CATALOGUE = '/usr/share/sweethome3d/furniture'


# --- class map ----------------------------------------------------------------
@pytest.mark.parametrize('name,category,expected', [
    ('Desk lamp', 'Lights', 'lamp'),            # lamp before table
    ('Glass door cabinet', 'Kitchen', 'storage'),  # doors by category only
    ('Double-hung window', 'Doors and windows', 'door_window'),
    ('Seat Leon', 'Vehicles', 'vehicle'),       # a car, not a seat
    ('Sitting female', 'Characters', 'person'),
    ('Woman shoes', 'Bedroom', None),           # person needs Characters
    ('Table fan', 'Miscellaneous', None),       # excluded word
    ('Chest freezer', 'Kitchen', None),
    ('Bedside table', 'Bedroom', 'table'),      # 'bedside' is not 'bed'
    ('Futon couch', 'Living room', 'sofa'),
    ('Bar stool', 'Living room', 'chair'),
    ('Bonsai tree', 'Living room', 'plant'),
    ('Bunk bed', 'Bedroom', 'bed'),
    ('Toaster', 'Kitchen', None),
])
def test_classify_furniture(name, category, expected):
    assert classify_furniture(name, category) == expected


def test_class_list_is_sorted_and_complete():
    assert FURNITURE_CLASSES == tuple(sorted(FURNITURE_CLASSES))
    assert len(FURNITURE_CLASSES) == 10


def test_mask_class_words():
    assert mask_class_words('Bar stool') == ['bar', '<mask>']
    assert mask_class_words('Ford Focus') == ['ford', 'focus']
    assert mask_class_words('Double-hung window') == ['double', 'hung',
                                                      '<mask>']
    assert mask_class_words("Captain's bed") == ['captain', 's', '<mask>']


def test_split_is_every_fifth():
    splits = [split_of('x', rank) for rank in range(10)]
    assert splits.count('test') == 2
    assert splits[4] == splits[9] == 'test'


# --- a synthetic .sh3f library ------------------------------------------------
def _png(colour) -> bytes:
    from PIL import Image
    image = Image.new('RGBA', (128, 128), (0, 0, 0, 0))
    for x in range(40, 90):
        for y in range(30, 100):
            image.putpixel((x, y), colour)
    out = io.BytesIO()
    image.save(out, format='PNG')
    return out.getvalue()


# A box 1 wide, 3 tall (OBJ y is up), 1 deep; one quad, triangles, and a
# two-corner "face" (a line segment) that must be dropped.
_TALL_BOX = b'''# box
v 0 0 0
v 1 0 0
v 1 3 0
v 0 3 0
v 0 0 1
v 1 0 1
v 1 3 1
v 0 3 1
f 1 2 3 4
f 5/1/1 8/2/2 7/3/3
f 5 7 6
f 1 5 6
f 1 6 2
f 2 6 7
f 2 7 3
f 3 7 8
f 3 8 4
f 4 8 5
f 4 5 1
f 1 2
'''

_ITEM = """id#{i}=Test#{key}
name#{i}={name}
category#{i}={category}
icon#{i}=/icons/{icon}.png
model#{i}=/models/chair.obj
width#{i}={w}
depth#{i}={w}
height#{i}={h}
"""
# Five chairs (so that one of them lands in the test split), an item no
# rule matches, and a lamp whose model is rotated.
_PROPERTIES = 'id=Test#lib\nname=Test library\n' + ''.join(
    _ITEM.format(i=i, key=f'chair{i}', name='Chair', category='Living room',
                 icon='chair', w=50, h=150) for i in range(1, 6)) + \
    _ITEM.format(i=6, key='toaster', name='Toaster', category='Kitchen',
                 icon='chair', w=20, h=20) + \
    _ITEM.format(i=7, key='lamp', name='Desk lamp', category='Lights',
                 icon='lamp', w=30, h=30) + \
    'modelRotation#7=1 0 0 0 0 1 0 -1 0\n'


@pytest.fixture
def tiny_catalogue(tmp_path):
    folder = tmp_path / 'catalogue'
    folder.mkdir()
    with zipfile.ZipFile(folder / 'Test.sh3f', 'w') as archive:
        archive.writestr('PluginFurnitureCatalog.properties', _PROPERTIES)
        archive.writestr('models/chair.obj', _TALL_BOX)
        archive.writestr('icons/chair.png', _png((200, 30, 30, 255)))
        archive.writestr('icons/lamp.png', _png((30, 30, 200, 255)))
    return str(folder)


def test_read_catalogue(tiny_catalogue):
    items = read_catalogue(osp.join(tiny_catalogue, 'Test.sh3f'))
    assert [item.name for item in items] == ['Chair'] * 5 + [
        'Toaster', 'Desk lamp']
    assert items[6].model_rotation == (1, 0, 0, 0, 0, 1, 0, -1, 0)
    assert items[0].size == (50.0, 150.0, 50.0)
    labels = [label for _, label in labelled_items(items)]
    assert labels == ['chair'] * 5 + ['lamp']


def test_read_catalogue_rejects_other_zips(tmp_path):
    path = tmp_path / 'other.zip'
    with zipfile.ZipFile(path, 'w') as archive:
        archive.writestr('readme.txt', 'hello')
    with pytest.raises(ValueError, match='not a Sweet Home 3D'):
        read_catalogue(str(path))


def test_furniture_dataset_on_tiny_library(tiny_catalogue, tmp_path):
    root = str(tmp_path / 'furniture')
    train = SweetHome3DFurniture(root, 'train', num_points=64,
                                 catalogue_dir=tiny_catalogue)
    test = SweetHome3DFurniture(root, 'test', num_points=64,
                                catalogue_dir=tiny_catalogue)
    # Five chairs and a lamp: the fifth chair (by id CRC) is a test item.
    assert len(train) == 5 and len(test) == 1
    assert sorted(train[i].name for i in range(5)) == ['Chair'] * 4 + [
        'Desk lamp']
    assert test[0].name == 'Chair'
    chair = next(train[i] for i in range(5) if train[i].name == 'Chair')
    assert chair.pos.shape == (64, 3)
    assert int(chair.y) == FURNITURE_CLASSES.index('chair')
    assert chair.icon.shape == (1, 3, 128, 128)
    assert chair.icon.dtype == torch.uint8
    # The red box is drawn on white: a red pixel inside, white outside.
    assert chair.icon[0, :, 60, 60].tolist() == [200, 30, 30]
    assert chair.icon[0, :, 5, 5].tolist() == [255, 255, 255]
    assert chair.name_masked == '<mask>'
    norm = chair.pos.norm(dim=1)
    assert float(norm.max()) == pytest.approx(1.0, abs=1e-5)
    # Catalogue size 50 x 150 x 50 with y up -> tallest along z after the
    # y-up -> z-up turn.
    extent = chair.pos.amax(0) - chair.pos.amin(0)
    assert int(extent.argmax()) == 2
    assert float(extent[2] / extent[0]) == pytest.approx(3.0, rel=0.15)
    again = SweetHome3DFurniture(str(tmp_path / 'again'), 'train',
                                 num_points=64, catalogue_dir=tiny_catalogue)
    assert torch.equal(again._data.pos, train._data.pos)  # seeded
    other_seed = SweetHome3DFurniture(str(tmp_path / 'again'), 'train',
                                      num_points=64, seed=1,
                                      catalogue_dir=tiny_catalogue)
    assert not torch.equal(other_seed._data.pos, train._data.pos)

    # Processed files alone suffice (no raw data on this machine).
    copy = tmp_path / 'copy'
    shutil.copytree(osp.join(root, 'processed'), copy / 'processed')
    loaded = SweetHome3DFurniture(str(copy), 'train', num_points=64,
                                  catalogue_dir=str(tmp_path / 'missing'))
    assert len(loaded) == 5


def test_catalogue_frame_applies_rotation_then_z_up():
    from hsa_graph.datasets._sweethome3d_catalogue import FurnitureItem
    from hsa_graph.datasets.furniture import _to_catalogue_frame
    # A tetrahedron whose apex (row 3) points along OBJ +y.
    pos = torch.tensor([[0., 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]],
                       dtype=torch.float64)

    def item(rotation):
        return FurnitureItem('a', 1, 'id', 'Lamp', 'Lights', 'm', 'i',
                             rotation, (0.0, 0.0, 0.0))  # size 0: no stretch

    upright = _to_catalogue_frame(pos, item(None))
    assert upright[3].tolist() == [0, 0, 1]          # y-up -> z-up
    # modelRotation (rows) 1 0 0 / 0 0 1 / 0 -1 0 sends +y to -z in Sweet
    # Home 3D's frame, which is +y (horizontal) once turned z-up.
    lying = _to_catalogue_frame(pos, item((1, 0, 0, 0, 0, 1, 0, -1, 0)))
    assert lying[3].tolist() == [0, 1, 0]


def test_furniture_missing_catalogue(tmp_path):
    with pytest.raises(FileNotFoundError, match='sweethome3d-furniture'):
        SweetHome3DFurniture(str(tmp_path / 'f'),
                             catalogue_dir=str(tmp_path / 'missing'))
    with pytest.raises(ValueError, match='split'):
        SweetHome3DFurniture(str(tmp_path / 'f'), split='val')


@pytest.mark.data
@pytest.mark.skipif(not osp.isdir(REAL_CATALOGUE),
                    reason='sweethome3d-furniture not installed '
                           '(datasets/fetch_furniture.sh)')
def test_real_catalogue_class_counts():
    items = []
    for name in sorted(os.listdir(REAL_CATALOGUE)):
        if name.endswith('.sh3f'):
            items += read_catalogue(osp.join(REAL_CATALOGUE, name))
    assert len(items) == 820
    counts = {}
    for _, label in labelled_items(items):
        counts[label] = counts.get(label, 0) + 1
    assert counts == {'chair': 64, 'table': 51, 'plant': 43, 'lamp': 36,
                      'storage': 35, 'door_window': 35, 'vehicle': 29,
                      'person': 29, 'sofa': 23, 'bed': 16}


# --- ModelNet on the shipped OFF sample ------------------------------------------
def test_modelnet_points_on_tiny_sample(tmp_path):
    root = tmp_path / 'modelnet'
    shutil.copytree(MODELNET_SAMPLE, root / 'raw')
    train = ModelNetPoints(str(root), name='10', train=True, num_points=128)
    test = ModelNetPoints(str(root), name='10', train=False, num_points=128)
    assert len(train) == 10 and len(test) == 10
    assert train[0].pos.shape == (128, 3)
    assert 'face' not in train[0]
    assert sorted(int(d.y) for d in train) == list(range(10))
    assert float(train._data.pos.norm(dim=1).max()) <= 1.0 + 1e-5
    again = ModelNetPoints(str(root), train=True, num_points=128,
                           force_reload=True)
    assert torch.equal(again._data.pos, train._data.pos)
    from hsa_graph.transforms import PointCloudToHierarchy
    trees = ModelNetPoints(str(root), train=True, num_points=128,
                           transform=PointCloudToHierarchy(leaf_size=16))
    tree = trees[0]
    assert tree.num_leaves == 128 and int(tree.y) == int(train[0].y)
    tree.validate()
    with pytest.raises(ValueError, match="'10' or '40'"):
        ModelNetPoints(str(root), name='20')


# --- sampling and kNN ---------------------------------------------------------------
def test_sample_surface_on_triangles():
    pos = torch.tensor([[0., 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                        [3, 0, 1], [0, 1, 1]])
    # Triangle 0 has area 1/2, triangle 1 area 3/2: 1 : 3.
    face = torch.tensor([[0, 1, 2], [3, 4, 5]]).t()
    points, which = sample_surface(pos, face, 4000, seed=0, return_face=True)
    assert points.shape == (4000, 3)
    low = points[which == 0]
    assert torch.allclose(low[:, 2], torch.zeros(len(low)))
    assert bool((low[:, 0] + low[:, 1] <= 1 + 1e-6).all())
    assert bool((low[:, :2] >= -1e-6).all())
    assert float((which == 1).float().mean()) == pytest.approx(0.75,
                                                               abs=0.03)
    again = sample_surface(pos, face, 4000, seed=0)
    assert torch.equal(points, again)


@pytest.mark.parametrize('pos,face,match', [
    (torch.zeros(0, 3), torch.zeros(3, 1, dtype=torch.long), 'no vertices'),
    (torch.tensor([[0., 0, float('nan')]] * 3), torch.tensor([[0], [1], [2]]),
     'NaN'),
    (torch.eye(3), torch.tensor([[0], [1], [5]]), 'vertex ids'),
    (torch.eye(3), torch.zeros(3, 0, dtype=torch.long), 'no faces'),
    (torch.zeros(3, 3), torch.tensor([[0], [1], [2]]), 'zero surface area'),
    (torch.eye(3), torch.tensor([[0, 1, 2]]), r'\[3, F\]'),
])
def test_sample_surface_errors(pos, face, match):
    with pytest.raises(ValueError, match=match):
        sample_surface(pos, face, 10)


def test_sample_surface_transform_drops_faces():
    data = type('D', (), {})
    from torch_geometric.data import Data
    data = Data(pos=torch.eye(3) * 5, face=torch.tensor([[0], [1], [2]]))
    out = SampleSurface(32, seed=3)(data)
    assert out.pos.shape == (32, 3) and 'face' not in out
    assert float(out.pos.norm(dim=1).max()) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match='face'):
        SampleSurface(8)(Data(pos=torch.rand(4, 3)))


def test_normalize_unit_sphere():
    pos = torch.tensor([[2., 2, 2], [4, 2, 2], [2, 6, 2]])
    out = normalize_unit_sphere(pos)
    assert float(out.norm(dim=1).max()) == pytest.approx(1.0)


def test_knn_graph_matches_brute_force_and_respects_batch():
    torch.manual_seed(0)
    pos = torch.rand(30, 3)
    batch = torch.tensor([0] * 18 + [1] * 12)
    edge_index = knn_graph(pos, 4, batch, chunk_size=5)
    assert edge_index.shape == (2, 30 * 4)
    dist = torch.cdist(pos, pos)
    dist.fill_diagonal_(float('inf'))
    dist[batch.unsqueeze(1) != batch.unsqueeze(0)] = float('inf')
    expected = dist.topk(4, largest=False).indices.sort(1).values
    neighbours = edge_index[0].view(30, 4).sort(1).values
    assert torch.equal(edge_index[1].view(30, 4)[:, 0], torch.arange(30))
    assert torch.equal(neighbours, expected)
    # Fewer points than k: every other point of the graph, no self loops.
    small = knn_graph(torch.rand(3, 2), 8)
    assert small.size(1) == 6 and bool((small[0] != small[1]).all())
    with_loops = knn_graph(torch.rand(3, 2), 1, loop=True)
    assert torch.equal(with_loops[0], with_loops[1])
    with pytest.raises(ValueError, match='sorted'):
        knn_graph(pos, 2, batch.flip(0))


@pytest.mark.skipif(not osp.isdir(REAL_CATALOGUE),
                    reason='sweethome3d-furniture not installed '
                           '(datasets/fetch_furniture.sh)')
def test_point_cloud_example_runs_its_graph_baseline(tmp_path):
    # The kNN baseline's edge_index is a graph: it must not go through the
    # hierarchy loader (it did, and failed, for a session).
    import subprocess
    import sys
    out = subprocess.run(
        [sys.executable, osp.join(HERE, '..', 'examples',
                                  'point_cloud_classification.py'),
         '--quick', '--seeds', '1', '--epochs', '1', '--models',
         'hsa-octree,knn-transformer', '--out', str(tmp_path)],
        capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("hsa-octree acc=") and \
        "knn-transformer acc=" in last
