r"""CGAL b9 segmentation data: PLY reading, tiling, the checkerboard split, and
dense (per-leaf) outputs of the segmentation example's models."""
import os
import os.path as osp
import sys

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from hsa_graph.datasets import CGALSegmentation
from hsa_graph.datasets.cgal_segmentation import read_ply_vertices

sys.path.insert(0, osp.join(osp.dirname(osp.abspath(__file__)), '..',
                            'examples'))
import mesh_segmentation as seg  # noqa: E402

REAL = osp.join(os.environ.get('HSA_DATA', osp.join(
    osp.dirname(osp.abspath(__file__)), '..', 'data')), 'cgal', 'data',
    'points_3', 'b9_training.ply')


def _write_ply(path, xyz, label, binary=True):
    header = ('ply\nformat {}\ncomment test\nelement vertex {}\n'
              'property double x\nproperty double y\nproperty double z\n'
              'property uchar red\nproperty uchar green\nproperty uchar blue\n'
              'property int label\nend_header\n').format(
        'binary_little_endian 1.0' if binary else 'ascii 1.0', len(xyz))
    with open(path, 'wb') as handle:
        handle.write(header.encode())
        if binary:
            table = np.zeros(len(xyz), dtype=[
                ('x', '<f8'), ('y', '<f8'), ('z', '<f8'), ('r', 'u1'),
                ('g', 'u1'), ('b', 'u1'), ('label', '<i4')])
            table['x'], table['y'], table['z'] = xyz.T
            table['label'] = label
            handle.write(table.tobytes())
        else:
            for (x, y, z), lab in zip(xyz, label):
                handle.write(f'{x} {y} {z} 0 0 0 {lab}\n'.encode())


@pytest.fixture
def scene(tmp_path):
    rng = np.random.default_rng(0)
    xyz = np.concatenate([rng.uniform(0, 40, (400, 2)),
                          rng.uniform(0, 10, (400, 1))], axis=1) + 5e5
    label = rng.integers(-1, 3, 400)
    path = str(tmp_path / 'b9_training.ply')
    _write_ply(path, xyz, label)
    return path, xyz, label


@pytest.mark.parametrize('binary', [True, False])
def test_read_ply_vertices(tmp_path, binary):
    xyz = np.array([[1.5, 2.0, 3.0], [4.0, 5.0, 6.25]])
    path = str(tmp_path / 'p.ply')
    _write_ply(path, xyz, np.array([-1, 2]), binary=binary)
    columns = read_ply_vertices(path)
    assert columns['x'].tolist() == [1.5, 4.0]
    assert columns['z'].tolist() == [3.0, 6.25]
    assert columns['label'].tolist() == [-1, 2]


def test_read_ply_errors(tmp_path):
    bad = tmp_path / 'bad.ply'
    bad.write_bytes(b'not a ply')
    with pytest.raises(ValueError, match='not a PLY'):
        read_ply_vertices(str(bad))
    truncated = tmp_path / 'short.ply'
    _write_ply(str(truncated), np.zeros((3, 3)), np.zeros(3, dtype=int))
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(ValueError, match='truncated'):
        read_ply_vertices(str(truncated))


def test_tiles_cover_every_point_once(scene, tmp_path):
    path, xyz, label = scene
    ds = CGALSegmentation(str(tmp_path / 'seg'), tiles=3, cell_size=5.0,
                          source=path)
    assert len(ds) == 9
    source = torch.cat([d.source_id for d in ds])
    assert sorted(source.tolist()) == list(range(400))
    for d in ds:
        assert torch.equal(d.y, torch.from_numpy(label[d.source_id.numpy()]))
        assert not bool((d.train_mask & d.test_mask).any())
        assert torch.equal(d.train_mask | d.test_mask, d.y >= 0)
        # Tile-centred x, y; height above the scene's lowest point.
        assert float(d.pos[:, :2].abs().max()) <= 40 / 3 / 2 + 1e-3
        back = d.pos[:, :2] + d.tile_centre + torch.from_numpy(
            xyz[:, :2].min(0)).float()
        assert torch.allclose(back.double(), torch.from_numpy(
            xyz[d.source_id.numpy(), :2]), atol=1e-2)
    # Checkerboard: a labelled point is in train iff its 5 m cell is even.
    for d in ds:
        rows = d.source_id.numpy()
        cell = np.floor((xyz[rows, :2] - xyz[:, :2].min(0)) / 5.0).sum(1)
        even = torch.from_numpy(cell % 2 == 0)
        assert torch.equal(d.train_mask, (d.y >= 0) & even)


def test_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError, match='fetch_meshes.sh'):
        CGALSegmentation(str(tmp_path / 'seg'),
                         source=str(tmp_path / 'missing.ply'))


@pytest.mark.parametrize('kind', seg.MODELS)
def test_every_leaf_gets_an_output(scene, tmp_path, kind):
    path, _, _ = scene
    ds = CGALSegmentation(str(tmp_path / 'seg'), tiles=2, source=path)
    tiles = [ds[i] for i in range(len(ds))]
    knns = [seg.knn_graph(t.pos, 4) for t in tiles]
    half = float(max(t.pos[:, :2].abs().max() for t in tiles))
    batch = Batch.from_data_list([seg.tile_input(t, t.pos, kind, 8, half, k)
                                  for t, k in zip(tiles, knns)])
    cls = seg.KNNSegmenter if kind == 'knn-transformer' else seg.HSASegmenter
    torch.manual_seed(0)
    model = cls(16, 1, 2, num_classes=3, dropout=0.0)
    logits = model(batch)
    assert logits.shape == (batch.num_nodes, 3)
    # Points are the first nodes of every tile, in the tile's order.
    for g, tile in enumerate(tiles):
        start = int(batch.ptr[g])
        assert torch.equal(batch.y[start:start + tile.num_nodes], tile.y)
    if kind != 'knn-transformer':
        leaves = batch.layout.is_leaf
        assert int(leaves.sum()) == 400     # one leaf per point, no more
    assert bool(torch.isfinite(logits).all())
    loss = torch.nn.functional.cross_entropy(logits[batch.train_mask],
                                             batch.y[batch.train_mask])
    loss.backward()


@pytest.mark.data
@pytest.mark.skipif(not osp.exists(REAL),
                    reason='CGAL data not fetched (datasets/fetch_meshes.sh)')
def test_real_b9_counts(tmp_path):
    columns = read_ply_vertices(REAL)
    assert columns['x'].shape == (22300, )
    counts = np.unique(columns['label'], return_counts=True)
    assert dict(zip(*[c.tolist() for c in counts])) == {
        -1: 19853, 0: 1567, 1: 314, 2: 566}
    ds = CGALSegmentation(str(tmp_path / 'b9'), source=REAL)
    assert len(ds) == 16
    assert sum(d.num_nodes for d in ds) == 22300
    train = sum(int(d.train_mask.sum()) for d in ds)
    test = sum(int(d.test_mask.sum()) for d in ds)
    assert train + test == 2447 and min(train, test) > 1000
