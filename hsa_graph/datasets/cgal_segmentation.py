r"""CGAL's labelled aerial point set ``b9_training.ply`` as a per-point
segmentation dataset (ground / vegetation / roof)."""
from __future__ import annotations

import os
import os.path as osp
import shutil
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from torch_geometric.data import Data

from ._local import LocalSourceDataset

__all__ = ['CGALSegmentation', 'read_ply_vertices']


class CGALSegmentation(LocalSourceDataset):
    r"""Per-point segmentation of ``b9_training.ply``, the training set of
    CGAL's point-set classification package: an aerial LiDAR scan of one
    city block (about 90 m x 112 m, 22,300 points) in which 2,447 points are
    labelled ``ground`` (1,567), ``vegetation`` (314) or ``roof`` (566);
    the other 19,853 are unlabelled (``y = -1``).

    The file ships in Debian's ``libcgal-demo`` package
    (``datasets/fetch_meshes.sh`` unpacks it under ``$HSA_DATA/cgal``). Its
    RGB colours only paint the labels (one colour per class, black when
    unlabelled), so they are dropped: the model sees coordinates only.

    The scene is cut into :obj:`tiles` x :obj:`tiles` square tiles, one
    example each, so that every point (labelled or not) is a leaf of some
    example and gets a prediction. Labelled points are split into train and
    test by a checkerboard of :obj:`cell_size`-metre cells, so that test
    points are never interleaved with training points at sub-cell scale.

    Each example is a :class:`~torch_geometric.data.Data` with

    * ``pos`` ``[n, 3]``: metres; x, y relative to the tile centre, z above
      the lowest point of the scene;
    * ``y`` ``[n]``: class id in :attr:`classes`, ``-1`` if unlabelled;
    * ``train_mask`` / ``test_mask`` ``[n]``: labelled points of each split;
    * ``source_id`` ``[n]``: the point's row in the PLY file;
    * ``tile_centre`` ``[1, 2]``: where the tile's x, y origin lies in the
      scene (metres from its lowest corner).

    Args:
        root (str): root directory of the dataset.
        tiles (int): tiles per side. (default: :obj:`4`)
        cell_size (float): side of the checkerboard cells, in metres.
            (default: :obj:`5.0`)
        source (str, optional): path of ``b9_training.ply``. (default:
            ``$HSA_DATA/cgal/data/points_3/b9_training.ply``, ``$HSA_DATA``
            defaulting to ``data/``)
        transform (callable, optional): applied on every access.
        pre_transform (callable, optional): applied once before saving.
        force_reload (bool): reprocess. (default: :obj:`False`)
    """

    classes = ('ground', 'vegetation', 'roof')

    def __init__(self, root: str, tiles: int = 4, cell_size: float = 5.0,
                 source: Optional[str] = None,
                 transform: Optional[Callable] = None,
                 pre_transform: Optional[Callable] = None,
                 force_reload: bool = False) -> None:
        if tiles < 1:
            raise ValueError(f'tiles must be >= 1, got {tiles}')
        if not cell_size > 0:
            raise ValueError(f'cell_size must be positive, got {cell_size}')
        self.tiles = tiles
        self.cell_size = float(cell_size)
        self.source = source or osp.join(
            os.environ.get('HSA_DATA', 'data'), 'cgal', 'data', 'points_3',
            'b9_training.ply')
        super().__init__(root, transform, pre_transform,
                         force_reload=force_reload)
        self.load(self.processed_paths[0])

    @property
    def raw_file_names(self) -> List[str]:
        return ['b9_training.ply']

    @property
    def processed_file_names(self) -> List[str]:
        return [f'tiles{self.tiles}_cell{self.cell_size:g}_v2.pt']

    def download(self) -> None:
        if not osp.exists(self.source):
            raise FileNotFoundError(
                f"'{self.source}' not found. Fetch CGAL's data with "
                f"datasets/fetch_meshes.sh (Debian package libcgal-demo), or "
                f"pass source=...")
        os.makedirs(self.raw_dir, exist_ok=True)
        shutil.copy(self.source, self.raw_dir)

    def process(self) -> None:
        columns = read_ply_vertices(self.raw_paths[0])
        for name in ('x', 'y', 'z', 'label'):
            if name not in columns:
                raise ValueError(f"'{self.raw_paths[0]}' has no vertex "
                                 f"property '{name}'")
        xyz = np.stack([columns['x'], columns['y'], columns['z']], axis=1)
        label = columns['label'].astype(np.int64)
        if label.min() < -1 or label.max() >= len(self.classes):
            raise ValueError(f'Labels must lie in [-1, {len(self.classes)}), '
                             f'got [{label.min()}, {label.max()}]')
        low = xyz.min(axis=0)
        # Relative coordinates first: absolute ones (~6e5 m) lose precision
        # in float32.
        xyz = xyz - low
        extent = xyz.max(axis=0)

        cell = np.floor(xyz[:, :2] / self.cell_size).astype(np.int64)
        is_train_cell = (cell.sum(axis=1) % 2) == 0
        labelled = label >= 0

        tile_size = extent[:2] / self.tiles
        tile = np.minimum((xyz[:, :2] / tile_size).astype(np.int64),
                          self.tiles - 1)
        tile_id = tile[:, 0] * self.tiles + tile[:, 1]

        data_list = []
        for t in range(self.tiles * self.tiles):
            rows = np.flatnonzero(tile_id == t)
            if rows.size == 0:
                continue
            centre = (tile[rows[0]] + 0.5) * tile_size
            pos = xyz[rows].copy()
            pos[:, :2] -= centre
            data = Data(pos=torch.from_numpy(pos).float(),
                        y=torch.from_numpy(label[rows]),
                        train_mask=torch.from_numpy(labelled[rows] &
                                                    is_train_cell[rows]),
                        test_mask=torch.from_numpy(labelled[rows] &
                                                   ~is_train_cell[rows]),
                        source_id=torch.from_numpy(rows),
                        tile_centre=torch.from_numpy(centre).float().view(1, 2))
            if self.pre_transform is not None:
                data = self.pre_transform(data)
            data_list.append(data)
        self.save(data_list, self.processed_paths[0])

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}({len(self)} tiles)'


_PLY_TYPES = {
    'char': 'i1', 'int8': 'i1', 'uchar': 'u1', 'uint8': 'u1',
    'short': 'i2', 'int16': 'i2', 'ushort': 'u2', 'uint16': 'u2',
    'int': 'i4', 'int32': 'i4', 'uint': 'u4', 'uint32': 'u4',
    'float': 'f4', 'float32': 'f4', 'double': 'f8', 'float64': 'f8',
}


def read_ply_vertices(path: str) -> Dict[str, np.ndarray]:
    r"""The vertex properties of a PLY file (ascii or binary), one array per
    property name. Only the ``vertex`` element is read, and it must come
    first (as in point-set files); list properties are not supported there.

    Args:
        path (str): path of the ``.ply`` file.

    Raises:
        ValueError: for a file that is not PLY, or a layout this reader does
            not handle.
    """
    with open(path, 'rb') as handle:
        raw = handle.read()
    marker = raw.find(b'end_header')
    if not raw.startswith(b'ply') or marker < 0:
        raise ValueError(f"'{path}' is not a PLY file")
    body_start = raw.index(b'\n', marker) + 1
    header = raw[:marker].decode('ascii', errors='replace').splitlines()
    fmt, count, fields, element = None, None, [], None
    for line in header:
        words = line.split()
        if not words:
            continue
        if words[0] == 'format':
            fmt = words[1]
        elif words[0] == 'element':
            element = words[1]
            if element == 'vertex':
                count = int(words[2])
            elif count is None:
                raise ValueError(f"'{path}': the vertex element must come "
                                 f"first")
        elif words[0] == 'property' and element == 'vertex':
            if words[1] == 'list':
                raise ValueError(f"'{path}': list properties on vertices are "
                                 f"not supported")
            if words[1] not in _PLY_TYPES:
                raise ValueError(f"'{path}': unknown PLY type {words[1]!r}")
            fields.append((words[2], _PLY_TYPES[words[1]]))
    if count is None or not fields:
        raise ValueError(f"'{path}' has no vertex element")
    if fmt == 'ascii':
        text = raw[body_start:].decode('ascii').split('\n')[:count]
        table = np.loadtxt(text, ndmin=2)
        return {name: table[:, i].astype(kind)
                for i, (name, kind) in enumerate(fields)}
    if fmt not in ('binary_little_endian', 'binary_big_endian'):
        raise ValueError(f"'{path}': unknown PLY format {fmt!r}")
    order = '<' if fmt == 'binary_little_endian' else '>'
    dtype = np.dtype([(name, order + kind) for name, kind in fields])
    if len(raw) - body_start < count * dtype.itemsize:
        raise ValueError(f"'{path}' is truncated: {count} vertices announced")
    table = np.frombuffer(raw, dtype=dtype, count=count, offset=body_start)
    return {name: np.ascontiguousarray(table[name]).astype(
        table[name].dtype.newbyteorder('='))
        for name, _ in fields}
