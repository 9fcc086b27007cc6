r"""Dependency-free readers for ``.off`` and ``.obj`` meshes (optionally
gzip-compressed), returning PyG-style ``Data(pos=[V, 3], face=[3, F])``."""
from __future__ import annotations

import gzip
import os
import warnings
from typing import List, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import Data

__all__ = ['read_mesh', 'read_off', 'read_obj']

PathLike = Union[str, os.PathLike]


def _read_text(path: PathLike) -> str:
    path = os.fspath(path)
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8', errors='replace') as handle:
        return handle.read()


def _fan(polygons: List[List[int]], path: str,
         drop_degenerate: bool = False) -> torch.Tensor:
    r"""Triangulates polygons as fans around their first corner."""
    triangles = []
    dropped = 0
    for number, corners in enumerate(polygons):
        if len(corners) < 3:
            if drop_degenerate:
                dropped += 1
                continue
            raise ValueError(f'{path}: face {number} has {len(corners)} '
                             f'corners; a face needs at least 3 (pass '
                             f'drop_degenerate=True to drop such faces)')
        first = corners[0]
        triangles.extend((first, corners[i], corners[i + 1])
                         for i in range(1, len(corners) - 1))
    if dropped:
        warnings.warn(f'{path}: dropped {dropped} faces with fewer than 3 '
                      f'corners', stacklevel=3)
    if not triangles:
        return torch.empty(3, 0, dtype=torch.long)
    return torch.tensor(triangles, dtype=torch.long).t().contiguous()


def _finish(pos: np.ndarray, face: torch.Tensor, path: str,
            dtype: torch.dtype) -> Data:
    pos_t = torch.from_numpy(np.ascontiguousarray(pos)).to(dtype)
    if face.numel():
        low, high = int(face.min()), int(face.max())
        if low < 0 or high >= pos_t.size(0):
            bad = low if low < 0 else high
            raise ValueError(f'{path}: a face refers to vertex {bad}, but the '
                             f'file has {pos_t.size(0)} vertices')
    if not bool(torch.isfinite(pos_t).all()):
        raise ValueError(f'{path}: vertex coordinates contain NaN or inf')
    return Data(pos=pos_t, face=face)


def read_off(path: PathLike, dtype: torch.dtype = torch.float32,
             drop_degenerate: bool = False) -> Data:
    r"""Reads an Object File Format mesh (``OFF``, ``COFF``, ``NOFF``, ...:
    extra per-vertex columns such as colours or normals are ignored; ``#``
    comments allowed). Polygons are fan-triangulated.

    Args:
        path (str): a ``.off`` or ``.off.gz`` file.
        dtype (torch.dtype): dtype of ``pos``. (default: :obj:`torch.float32`)
        drop_degenerate (bool): drop faces with fewer than 3 corners (line
            segments some exporters write) with a warning, instead of
            raising. (default: :obj:`False`)

    Returns:
        :class:`torch_geometric.data.Data` with ``pos`` ``[V, 3]`` (float32)
        and ``face`` ``[3, F]`` (long).

    Raises:
        ValueError: on a malformed file, with the reason.
    """
    path = os.fspath(path)
    tokens_by_line = []
    for line in _read_text(path).splitlines():
        line = line.split('#', 1)[0].strip()
        if line:
            tokens_by_line.append(line.split())
    if not tokens_by_line or not tokens_by_line[0][0].endswith('OFF'):
        raise ValueError(f'{path}: not an OFF file (no OFF header)')
    header = tokens_by_line[0][1:]
    rest = tokens_by_line[1:]
    if not header:
        if not rest:
            raise ValueError(f'{path}: missing the vertex/face counts')
        header, rest = rest[0], rest[1:]
    try:
        num_vertices, num_faces = int(header[0]), int(header[1])
    except (IndexError, ValueError):
        raise ValueError(f'{path}: bad counts line {" ".join(header)!r}')
    if len(rest) < num_vertices + num_faces:
        raise ValueError(f'{path}: expected {num_vertices} vertices and '
                         f'{num_faces} faces, found {len(rest)} data lines')
    try:
        pos = np.array([row[:3] for row in rest[:num_vertices]],
                       dtype=np.float64)
    except ValueError as error:
        raise ValueError(f'{path}: bad vertex line ({error})')
    if pos.shape != (num_vertices, 3) and num_vertices > 0:
        raise ValueError(f'{path}: vertex lines need 3 coordinates')
    pos = pos.reshape(num_vertices, 3)
    polygons = []
    for number, row in enumerate(rest[num_vertices:num_vertices + num_faces]):
        count = int(row[0])
        if len(row) < count + 1:
            raise ValueError(f'{path}: face {number} announces {count} '
                             f'corners but lists {len(row) - 1}')
        polygons.append([int(v) for v in row[1:count + 1]])
    return _finish(pos, _fan(polygons, path, drop_degenerate), path, dtype)


def _obj_index(token: str, num_vertices: int) -> int:
    value = int(token.split('/', 1)[0])
    # OBJ ids are 1-based; negative ids count back from the last vertex.
    return value - 1 if value > 0 else num_vertices + value


def read_obj(path: PathLike, dtype: torch.dtype = torch.float32,
             drop_degenerate: bool = False) -> Data:
    r"""Reads the geometry of a Wavefront ``.obj`` file: ``v`` lines and
    ``f`` lines (``i``, ``i/t``, ``i/t/n`` or ``i//n`` corners, negative ids
    allowed). Texture coordinates, normals, groups and materials are ignored;
    polygons are fan-triangulated.

    Args:
        path (str): a ``.obj`` or ``.obj.gz`` file.
        dtype (torch.dtype): dtype of ``pos``. (default: :obj:`torch.float32`)
        drop_degenerate (bool): drop faces with fewer than 3 corners (line
            segments some exporters write) with a warning, instead of
            raising. (default: :obj:`False`)

    Returns:
        :class:`torch_geometric.data.Data` with ``pos`` ``[V, 3]`` and
        ``face`` ``[3, F]``.
    """
    path = os.fspath(path)
    vertices: List[Tuple[float, float, float]] = []
    polygons: List[List[int]] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.startswith('v '):
            parts = line.split()
            if len(parts) < 4:
                raise ValueError(f'{path}:{number}: a vertex needs 3 '
                                 f'coordinates')
            vertices.append((float(parts[1]), float(parts[2]), float(parts[3])))
        elif line.startswith('f '):
            try:
                polygons.append([_obj_index(token, len(vertices))
                                 for token in line.split()[1:]])
            except ValueError:
                raise ValueError(f'{path}:{number}: bad face line {line!r}')
    pos = np.array(vertices, dtype=np.float64).reshape(-1, 3)
    return _finish(pos, _fan(polygons, path, drop_degenerate), path, dtype)


def read_mesh(path: PathLike, dtype: torch.dtype = torch.float32,
              drop_degenerate: bool = False) -> Data:
    r"""Reads an ``.off`` or ``.obj`` mesh (also ``.off.gz`` / ``.obj.gz``)
    without extra dependencies.

    Args:
        path (str): the mesh file; the format comes from the extension.
        dtype (torch.dtype): dtype of ``pos``. (default: :obj:`torch.float32`)
        drop_degenerate (bool): drop faces with fewer than 3 corners (line
            segments some exporters write) with a warning, instead of
            raising. (default: :obj:`False`)

    Returns:
        :class:`torch_geometric.data.Data` with ``pos`` ``[V, 3]`` and
        ``face`` ``[3, F]``, ready for :func:`~hsa_graph.from_mesh`.

    Example::

        >>> mesh = read_mesh('data/cgal/data/meshes/elephant.off')
        >>> h = from_mesh(mesh.pos, mesh.face)
    """
    name = os.fspath(path).lower()
    if name.endswith('.gz'):
        name = name[:-3]
    if name.endswith('.off'):
        return read_off(path, dtype, drop_degenerate)
    if name.endswith('.obj'):
        return read_obj(path, dtype, drop_degenerate)
    raise ValueError(f'{path}: unsupported mesh format; read_mesh handles '
                     f'.off and .obj (install trimesh for others)')
