r"""Dependency-free readers for ``.off``, ``.obj`` and ``.ply`` meshes
(optionally gzip-compressed), returning PyG-style
``Data(pos=[V, 3], face=[3, F])``."""
from __future__ import annotations

import gzip
import os
import warnings
from typing import List, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import Data

__all__ = ['read_mesh', 'read_off', 'read_obj', 'read_ply']

PathLike = Union[str, os.PathLike]


def _read_bytes(path: PathLike) -> bytes:
    path = os.fspath(path)
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as handle:
        return handle.read()


def _read_text(path: PathLike) -> str:
    path = os.fspath(path)
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rt', encoding='utf-8', errors='replace') as handle:
        return handle.read()


def _fan(polygons: Union[List[List[int]], np.ndarray], path: str,
         drop_degenerate: bool = False) -> torch.Tensor:
    r"""Triangulates polygons as fans around their first corner; an
    ``[F, k]`` array (polygons of one size) is handled without a loop."""
    if isinstance(polygons, np.ndarray):
        if polygons.shape[1] < 3:
            return _fan(polygons.tolist(), path, drop_degenerate)
        fans = [np.stack([polygons[:, 0], polygons[:, i], polygons[:, i + 1]])
                for i in range(1, polygons.shape[1] - 1)]
        # interleave so that each polygon's triangles stay together
        face = np.stack(fans, axis=2).reshape(3, -1)
        return torch.from_numpy(np.ascontiguousarray(face)).long()
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

_PLY_TYPES = {'char': 'i1', 'int8': 'i1', 'uchar': 'u1', 'uint8': 'u1',
              'short': 'i2', 'int16': 'i2', 'ushort': 'u2', 'uint16': 'u2',
              'int': 'i4', 'int32': 'i4', 'uint': 'u4', 'uint32': 'u4',
              'float': 'f4', 'float32': 'f4', 'double': 'f8', 'float64': 'f8'}


def _ply_header(raw: bytes, path: str):
    end = raw.find(b'end_header')
    if not raw.startswith(b'ply') or end < 0:
        raise ValueError(f'{path}: not a PLY file (no ply ... end_header)')
    body_start = raw.index(b'\n', end) + 1
    fmt, elements = None, []
    for line in raw[:end].decode('ascii', 'replace').splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ('comment', 'obj_info'):
            continue
        if words[0] == 'format':
            fmt = words[1]
        elif words[0] == 'element':
            elements.append((words[1], int(words[2]), []))
        elif words[0] == 'property' and elements:
            if words[1] == 'list':
                elements[-1][2].append((words[4], 'list', words[2], words[3]))
            else:
                elements[-1][2].append((words[2], words[1], None, None))
    if fmt not in ('ascii', 'binary_little_endian', 'binary_big_endian'):
        raise ValueError(f'{path}: unsupported PLY format {fmt!r}')
    return fmt, elements, body_start


def _uniform_lists(tokens: list, cursor: int, count: int) -> bool:
    r"""Whether ``count`` ASCII list records from ``cursor`` all have the
    length of the first one."""
    size = int(tokens[cursor])
    end = cursor + count * (size + 1)
    if end > len(tokens):
        return False
    heads = np.array(tokens[cursor:end:size + 1], dtype=np.int64)
    return bool((heads == size).all())


def read_ply(path: PathLike, dtype: torch.dtype = torch.float32,
             drop_degenerate: bool = False) -> Data:
    r"""Reads the geometry of a ``.ply`` file (ASCII or binary): the vertex
    ``x``, ``y``, ``z`` properties and the ``face`` element's vertex lists
    (fan-triangulated); other properties are ignored. A file without faces
    (a point set) gives ``face`` of shape ``[3, 0]``.

    Args:
        path (str): a ``.ply`` or ``.ply.gz`` file.
        dtype (torch.dtype): dtype of ``pos``. (default: :obj:`torch.float32`)
        drop_degenerate (bool): drop faces with fewer than 3 corners with a
            warning instead of raising. (default: :obj:`False`)

    Returns:
        :class:`torch_geometric.data.Data` with ``pos`` ``[V, 3]`` and
        ``face`` ``[3, F]``.
    """
    path = os.fspath(path)
    raw = _read_bytes(path)
    fmt, elements, offset = _ply_header(raw, path)
    order = '<' if fmt == 'binary_little_endian' else '>'
    pos, polygons = None, []
    tokens = raw[offset:].split() if fmt == 'ascii' else None
    cursor = 0
    for name, count, properties in elements:
        has_list = any(kind == 'list' for _, kind, _, _ in properties)
        if fmt == 'ascii':
            if not has_list:
                width = len(properties)
                block = np.array(tokens[cursor:cursor + count * width],
                                 dtype=np.float64).reshape(count, width)
                cursor += count * width
                columns = {prop[0]: block[:, i]
                           for i, prop in enumerate(properties)}
            elif len(properties) == 1 and count and _uniform_lists(
                    tokens, cursor, count):
                # fast path: one list property of constant length (triangles)
                size = int(tokens[cursor])
                block = np.array(tokens[cursor:cursor + count * (size + 1)],
                                 dtype=np.int64).reshape(count, size + 1)
                cursor += count * (size + 1)
                columns = {properties[0][0]: block[:, 1:]}
            else:
                columns, rows = {}, []
                for _ in range(count):
                    row = []
                    for prop_name, kind, _, _ in properties:
                        if kind == 'list':
                            size = int(tokens[cursor])
                            row.append([int(t) for t in
                                        tokens[cursor + 1:cursor + 1 + size]])
                            cursor += 1 + size
                        else:
                            row.append(float(tokens[cursor]))
                            cursor += 1
                    rows.append(row)
                names = [prop[0] for prop in properties]
                columns = {n: [r[i] for r in rows] for i, n in enumerate(names)}
        elif not has_list:
            record = np.dtype([(prop[0], order + _PLY_TYPES[prop[1]])
                               for prop in properties])
            block = np.frombuffer(raw, record, count, offset)
            offset += count * record.itemsize
            columns = {prop[0]: block[prop[0]] for prop in properties}
        else:
            columns = {prop[0]: [] for prop in properties}
            for _ in range(count):
                for prop_name, kind, count_type, item_type in properties:
                    if kind == 'list':
                        size_type = np.dtype(order + _PLY_TYPES[count_type])
                        size = int(np.frombuffer(raw, size_type, 1, offset)[0])
                        offset += size_type.itemsize
                        item = np.dtype(order + _PLY_TYPES[item_type])
                        columns[prop_name].append(np.frombuffer(
                            raw, item, size, offset).tolist())
                        offset += size * item.itemsize
                    else:
                        item = np.dtype(order + _PLY_TYPES[kind])
                        columns[prop_name].append(
                            np.frombuffer(raw, item, 1, offset)[0])
                        offset += item.itemsize
        if name == 'vertex':
            missing = [axis for axis in 'xyz' if axis not in columns]
            if missing:
                raise ValueError(f'{path}: vertex element lacks {missing}')
            pos = np.stack([np.asarray(columns[a], dtype=np.float64)
                            for a in 'xyz'], axis=1)
        elif name == 'face':
            key = next((k for k in ('vertex_indices', 'vertex_index')
                        if k in columns), None)
            if key is None:
                raise ValueError(f'{path}: face element has no vertex list')
            polygons = columns[key]
            if not isinstance(polygons, np.ndarray):
                polygons = [list(map(int, face)) for face in polygons]
    if pos is None:
        raise ValueError(f'{path}: no vertex element')
    return _finish(pos, _fan(polygons, path, drop_degenerate), path, dtype)


def read_mesh(path: PathLike, dtype: torch.dtype = torch.float32,
              drop_degenerate: bool = False) -> Data:
    r"""Reads an ``.off``, ``.obj`` or ``.ply`` mesh (also gzip-compressed,
    e.g. ``.ply.gz``) without extra dependencies; other formats (``.stl``,
    ``.glb``, ...) go through trimesh when it is installed (the ``mesh``
    extra).

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

        >>> from hsa_graph import from_mesh
        >>> mesh = read_mesh('data/cgal/data/meshes/elephant.off')  # doctest: +SKIP
        >>> h = from_mesh(mesh.pos, mesh.face)  # doctest: +SKIP
    """
    name = os.fspath(path).lower()
    if name.endswith('.gz'):
        name = name[:-3]
    if name.endswith('.off'):
        return read_off(path, dtype, drop_degenerate)
    if name.endswith('.obj'):
        return read_obj(path, dtype, drop_degenerate)
    if name.endswith('.ply'):
        return read_ply(path, dtype, drop_degenerate)
    try:
        import trimesh
    except ImportError:
        raise ValueError(f'{path}: unsupported mesh format; read_mesh handles '
                         f'.off, .obj and .ply itself, and other formats '
                         f"through trimesh (pip install 'hsa-graph[mesh]')"
                         ) from None
    mesh = trimesh.load(os.fspath(path), force='mesh', process=False)
    face = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long)
    return _finish(np.asarray(mesh.vertices, dtype=np.float64),
                   face.reshape(-1, 3).t().contiguous(), os.fspath(path), dtype)
