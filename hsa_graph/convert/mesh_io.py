r"""Dependency-free readers for ``.off``, ``.obj`` and ``.ply`` meshes
(optionally gzip-compressed), returning PyG-style
``Data(pos=[V, 3], face=[3, F])``.

A malformed file raises a :class:`ValueError` that names the file and, where
there is one, the line (``path:line: ...``) or the PLY element and record:
truncated bodies, counts larger than the body, negative counts, non-numeric
coordinates, non-integer face indices, unknown PLY types, text files that
hold no vertex, and broken gzip streams.
"""
from __future__ import annotations

import gzip
import os
import warnings
import zlib
from typing import List, Optional, Tuple, Union

import numpy as np
import torch
from torch_geometric.data import Data

__all__ = ['read_mesh', 'read_off', 'read_obj', 'read_ply']

PathLike = Union[str, os.PathLike]

# Larger than any real index (2**62): parsing stays in int64 and never
# overflows torch or numpy.
_INDEX_LIMIT = 2**62


def _read_bytes(path: PathLike) -> bytes:
    path = os.fspath(path)
    if not path.endswith('.gz'):
        with open(path, 'rb') as handle:
            return handle.read()
    try:
        with gzip.open(path, 'rb') as handle:
            return handle.read()
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise ValueError(f'{path}: not a valid gzip file ({error})') from None


def _read_text(path: PathLike) -> str:
    return _read_bytes(path).decode('utf-8', errors='replace')


def _check_dtype(dtype: torch.dtype) -> None:
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f'dtype must be a floating torch.dtype, got {dtype!r}')


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
    if face.numel():
        low, high = int(face.min()), int(face.max())
        if low < 0 or high >= pos.shape[0]:
            bad = low if low < 0 else high
            raise ValueError(f'{path}: a face refers to vertex {bad}, but the '
                             f'file has {pos.shape[0]} vertices')
    if not bool(np.isfinite(pos).all()):
        raise ValueError(f'{path}: vertex coordinates contain NaN or inf')
    pos_t = torch.from_numpy(np.ascontiguousarray(pos)).to(dtype)
    if not bool(torch.isfinite(pos_t).all()):
        raise ValueError(f'{path}: vertex coordinates exceed the range of '
                         f'{dtype}; read with dtype=torch.float64')
    return Data(pos=pos_t, face=face)


def _int(token: str, where: str, what: str) -> int:
    try:
        value = int(token)
    except ValueError:
        raise ValueError(f'{where}: {what} must be an integer, got '
                         f'{token!r}') from None
    if abs(value) >= _INDEX_LIMIT:
        raise ValueError(f'{where}: {what} {value} is out of range')
    return value


def _floats(tokens: List[str], where: str) -> List[float]:
    try:
        return [float(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise ValueError(f'{where}: bad coordinate {bad!r} (not a number)'
                         ) from None


def _is_float(token) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


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
        ValueError: on a malformed file, with the file, the line and the
            reason.
    """
    path = os.fspath(path)
    _check_dtype(dtype)
    lines: List[Tuple[int, List[str]]] = []   # (line number, tokens)
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        line = line.split('#', 1)[0].strip()
        if line:
            lines.append((number, line.split()))
    if not lines or not lines[0][1][0].endswith('OFF'):
        raise ValueError(f'{path}: not an OFF file (no OFF header)')
    header_line, header = lines[0][0], lines[0][1][1:]
    rest = lines[1:]
    if not header:
        if not rest:
            raise ValueError(f'{path}: missing the vertex/face counts')
        (header_line, header), rest = rest[0], rest[1:]
    where = f'{path}:{header_line}'
    if len(header) < 2:
        raise ValueError(f'{where}: bad counts line {" ".join(header)!r} '
                         f'(expected: vertices faces [edges])')
    num_vertices = _int(header[0], where, 'the vertex count')
    num_faces = _int(header[1], where, 'the face count')
    if num_vertices < 0 or num_faces < 0:
        raise ValueError(f'{where}: negative count in '
                         f'{" ".join(header)!r}')
    if len(rest) < num_vertices + num_faces:
        raise ValueError(f'{path}: expected {num_vertices} vertices and '
                         f'{num_faces} faces, found {len(rest)} data lines')
    coords = []
    for number, row in rest[:num_vertices]:
        if len(row) < 3:
            raise ValueError(f'{path}:{number}: a vertex line needs 3 '
                             f'coordinates, got {len(row)}')
        coords.append(_floats(row[:3], f'{path}:{number}'))
    pos = np.array(coords, dtype=np.float64).reshape(num_vertices, 3)
    polygons = []
    for number, row in rest[num_vertices:num_vertices + num_faces]:
        where = f'{path}:{number}'
        count = _int(row[0], where, 'the corner count')
        if count < 0 or len(row) < count + 1:
            raise ValueError(f'{where}: the face announces {count} corners '
                             f'but lists {len(row) - 1}')
        polygons.append([_int(v, where, 'a face index')
                         for v in row[1:count + 1]])
    return _finish(pos, _fan(polygons, path, drop_degenerate), path, dtype)


def _obj_index(token: str, num_vertices: int, where: str) -> int:
    value = _int(token.split('/', 1)[0], where, 'a face index')
    if value == 0:
        raise ValueError(f'{where}: face index 0 (OBJ indices start at 1; '
                         f'negative ones count back from the last vertex)')
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

    Raises:
        ValueError: on a malformed line (with the file and line number), or a
            file without any ``v`` line (not an OBJ file, or an empty one).
    """
    path = os.fspath(path)
    _check_dtype(dtype)
    vertices: List[List[float]] = []
    polygons: List[List[int]] = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if line.startswith('v '):
            parts = line.split()
            if len(parts) < 4:
                raise ValueError(f'{path}:{number}: a vertex needs 3 '
                                 f'coordinates')
            vertices.append(_floats(parts[1:4], f'{path}:{number}'))
        elif line.startswith('f '):
            polygons.append([_obj_index(token, len(vertices),
                                        f'{path}:{number}')
                             for token in line.split()[1:]])
    if not vertices:
        raise ValueError(f'{path}: no vertex ("v x y z" line) found; not a '
                         f'Wavefront OBJ mesh, or an empty one')
    pos = np.array(vertices, dtype=np.float64).reshape(-1, 3)
    return _finish(pos, _fan(polygons, path, drop_degenerate), path, dtype)


_PLY_TYPES = {'char': 'i1', 'int8': 'i1', 'uchar': 'u1', 'uint8': 'u1',
              'short': 'i2', 'int16': 'i2', 'ushort': 'u2', 'uint16': 'u2',
              'int': 'i4', 'int32': 'i4', 'uint': 'u4', 'uint32': 'u4',
              'float': 'f4', 'float32': 'f4', 'double': 'f8', 'float64': 'f8'}
_PLY_FORMATS = ('ascii', 'binary_little_endian', 'binary_big_endian')
_FACE_LISTS = ('vertex_indices', 'vertex_index')

# One PLY property: (name, kind, count_type, item_type); kind is a type name
# of _PLY_TYPES or 'list'.
_Property = Tuple[str, str, Optional[str], Optional[str]]


def _ply_type(name: str, where: str) -> str:
    if name not in _PLY_TYPES:
        raise ValueError(f'{where}: unknown PLY property type {name!r} '
                         f'(known: {", ".join(sorted(_PLY_TYPES))})')
    return name


def _ply_header(raw: bytes, path: str):
    end = raw.find(b'end_header')
    if not raw.startswith(b'ply') or end < 0:
        raise ValueError(f'{path}: not a PLY file (no ply ... end_header)')
    newline = raw.find(b'\n', end)
    body_start = len(raw) if newline < 0 else newline + 1
    fmt = None
    elements: List[Tuple[str, int, List[_Property]]] = []
    lines = raw[:end].decode('ascii', 'replace').splitlines()
    for number, line in enumerate(lines[1:], start=2):
        where = f'{path}:{number}'
        words = line.split()
        if not words or words[0] in ('comment', 'obj_info'):
            continue
        if words[0] == 'format':
            if len(words) < 2 or words[1] not in _PLY_FORMATS:
                raise ValueError(f'{where}: unsupported PLY format line '
                                 f'{line.strip()!r} (expected one of '
                                 f'{_PLY_FORMATS})')
            fmt = words[1]
        elif words[0] == 'element':
            if len(words) != 3:
                raise ValueError(f'{where}: bad element line {line.strip()!r}'
                                 f' (expected: element <name> <count>)')
            count = _int(words[2], where, f'the count of element '
                         f'{words[1]!r}')
            if count < 0:
                raise ValueError(f'{where}: element {words[1]!r} has a '
                                 f'negative count {count}')
            elements.append((words[1], count, []))
        elif words[0] == 'property':
            if not elements:
                raise ValueError(f'{where}: property before any element')
            if words[-1] in [prop[0] for prop in elements[-1][2]]:
                raise ValueError(f'{where}: element {elements[-1][0]!r} has '
                                 f'two properties named {words[-1]!r}')
            if len(words) >= 2 and words[1] == 'list':
                if len(words) != 5:
                    raise ValueError(
                        f'{where}: bad list property {line.strip()!r} '
                        f'(expected: property list <count type> <item type> '
                        f'<name>)')
                count_type = _ply_type(words[2], where)
                if _PLY_TYPES[count_type][0] == 'f':
                    raise ValueError(f'{where}: a list count must have an '
                                     f'integer type, got {count_type!r}')
                elements[-1][2].append(
                    (words[4], 'list', count_type, _ply_type(words[3], where)))
            else:
                if len(words) != 3:
                    raise ValueError(f'{where}: bad property line '
                                     f'{line.strip()!r} (expected: property '
                                     f'<type> <name>)')
                elements[-1][2].append(
                    (words[2], _ply_type(words[1], where), None, None))
    if fmt is None:
        raise ValueError(f'{path}: the PLY header has no format line')
    return fmt, elements, body_start


class _AsciiBody:
    r"""The whitespace-separated tokens of an ASCII PLY body, with the file
    line of any token (found only for an error message)."""

    def __init__(self, raw: bytes, offset: int, path: str):
        self.raw, self.offset, self.path = raw, offset, path
        self.tokens = raw[offset:].split()

    def where(self, index: int) -> str:
        line = self.raw[:self.offset].count(b'\n') + 1
        for text in self.raw[self.offset:].split(b'\n'):
            count = len(text.split())
            if index < count:
                return f'{self.path}:{line}'
            index -= count
            line += 1
        return f'{self.path}: at the end of the file'

    def block(self, start: int, stop: int, integer: bool, what: str
              ) -> np.ndarray:
        r"""``tokens[start:stop]`` as int64 or float64 numbers, or a
        :class:`ValueError` naming the line of the first bad token."""
        chunk = self.tokens[start:stop]
        try:
            values = np.array(chunk, dtype=np.int64 if integer else
                              np.float64)
            if not integer or not values.size or int(
                    np.abs(values).max()) < _INDEX_LIMIT:
                return values
        except (ValueError, OverflowError):
            pass
        self.fail(start, stop, integer, what)

    def values(self, start: int, stop: int, integer: bool, what: str
               ) -> list:
        r"""Like :meth:`block`, as a Python list (faster for short runs)."""
        try:
            if integer:
                values = [int(t) for t in self.tokens[start:stop]]
                if all(-_INDEX_LIMIT < v < _INDEX_LIMIT for v in values):
                    return values
            else:
                return [float(t) for t in self.tokens[start:stop]]
        except ValueError:
            pass
        self.fail(start, stop, integer, what)

    def fail(self, start: int, stop: int, integer: bool, what: str):
        for index in range(start, stop):
            token = self.tokens[index].decode('ascii', 'replace')
            if integer:
                _int(token, self.where(index), what)
            elif not _is_float(token):
                raise ValueError(f'{self.where(index)}: {what} must be a '
                                 f'number, got {token!r}')
        raise ValueError(f'{self.path}: bad value in {what}')  # unreachable


def _ply_ascii_element(body: _AsciiBody, cursor: int, name: str, count: int,
                       properties: List[_Property]) -> Tuple[dict, int]:
    tokens, path = body.tokens, body.path
    width = len(properties)
    left = len(tokens) - cursor
    if count * width > left:
        raise ValueError(
            f'{path}: element {name!r} announces {count} records of at least '
            f'{width} values, but the body holds only {left} more values '
            f'(truncated file or wrong count)')
    if not any(kind == 'list' for _, kind, _, _ in properties):
        block = body.block(cursor, cursor + count * width, False,
                           f'a value of element {name!r}')
        block = block.reshape(count, width)
        return ({prop[0]: block[:, i] for i, prop in enumerate(properties)},
                cursor + count * width)
    if len(properties) == 1 and count:
        # fast path: one list property of constant length (triangles)
        prop_name, _, _, item_type = properties[0]
        integer = _PLY_TYPES[item_type][0] != 'f'
        try:
            size = int(tokens[cursor])
        except ValueError:
            size = -1
        end = cursor + count * (size + 1)
        if size >= 0 and end <= len(tokens):
            try:
                block = np.array(tokens[cursor:end],
                                 dtype=np.int64 if integer else np.float64
                                 ).reshape(count, size + 1)
            except (ValueError, OverflowError):
                block = None
            if block is not None and bool((block[:, 0] == size).all()) and \
                    (not integer or not block.size or
                     int(np.abs(block).max()) < _INDEX_LIMIT):
                return {prop_name: block[:, 1:]}, end
    # General path: one record at a time (also reports the fast path's
    # errors with their line).
    columns = {prop[0]: [] for prop in properties}
    for record in range(count):
        for prop_name, kind, _, item_type in properties:
            if cursor >= len(tokens):
                raise ValueError(
                    f'{path}: the file ends inside record {record} of element '
                    f'{name!r} (it announces {count} records)')
            if kind == 'list':
                where = body.where(cursor) if not _is_int(tokens[cursor]) \
                    else path
                size = _int(tokens[cursor].decode('ascii', 'replace'), where,
                            f'the length of list {prop_name!r}')
                if size < 0 or cursor + 1 + size > len(tokens):
                    raise ValueError(
                        f'{body.where(cursor)}: list {prop_name!r} of '
                        f'element {name!r} announces {size} values, but the '
                        f'file has {len(tokens) - cursor - 1} left')
                integer = _PLY_TYPES[item_type][0] != 'f'
                columns[prop_name].append(body.values(
                    cursor + 1, cursor + 1 + size, integer,
                    f'a value of list {prop_name!r} of element {name!r}'))
                cursor += 1 + size
            else:
                columns[prop_name].append(body.values(
                    cursor, cursor + 1, False,
                    f'property {prop_name!r} of element {name!r}')[0])
                cursor += 1
    return columns, cursor


def _is_int(token) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def _ply_binary_element(raw: bytes, offset: int, path: str, order: str,
                        name: str, count: int, properties: List[_Property]
                        ) -> Tuple[dict, int]:
    left = len(raw) - offset
    if not properties:
        return {}, offset
    if not any(kind == 'list' for _, kind, _, _ in properties):
        record = np.dtype([(prop[0], order + _PLY_TYPES[prop[1]])
                           for prop in properties])
        need = count * record.itemsize
        if need > left:
            raise ValueError(
                f'{path}: element {name!r} announces {count} records of '
                f'{record.itemsize} bytes ({need} bytes), but the file has '
                f'only {left} bytes left (truncated file or wrong count)')
        block = np.frombuffer(raw, record, count, offset)
        return ({prop[0]: block[prop[0]] for prop in properties},
                offset + need)
    smallest = sum(np.dtype(_PLY_TYPES[prop[2] if kind == 'list' else kind]
                            ).itemsize for prop in properties
                   for kind in [prop[1]])
    if count * smallest > left:
        raise ValueError(
            f'{path}: element {name!r} announces {count} records of at least '
            f'{smallest} bytes, but the file has only {left} bytes left '
            f'(truncated file or wrong count)')

    def take(dtype: np.dtype, n: int, record: int, what: str) -> np.ndarray:
        if offset + n * dtype.itemsize > len(raw):
            raise ValueError(
                f'{path}: the file ends inside record {record} of element '
                f'{name!r} ({what}; it announces {count} records)')
        return np.frombuffer(raw, dtype, n, offset)

    columns = {prop[0]: [] for prop in properties}
    for record in range(count):
        for prop_name, kind, count_type, item_type in properties:
            if kind == 'list':
                size_type = np.dtype(order + _PLY_TYPES[count_type])
                size = int(take(size_type, 1, record, prop_name)[0])
                offset += size_type.itemsize
                if size < 0:
                    raise ValueError(
                        f'{path}: record {record} of element {name!r}: list '
                        f'{prop_name!r} has a negative length {size}')
                item = np.dtype(order + _PLY_TYPES[item_type])
                columns[prop_name].append(
                    take(item, size, record, prop_name).tolist())
                offset += size * item.itemsize
            else:
                item = np.dtype(order + _PLY_TYPES[kind])
                columns[prop_name].append(take(item, 1, record,
                                               prop_name)[0])
                offset += item.itemsize
    return columns, offset


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

    Raises:
        ValueError: on a malformed header (with its line: unknown format or
            property type, negative or non-integer count), or a body that
            does not match it (truncated, counts larger than the body, values
            that are not numbers, non-integer face indices), naming the file
            and the line or element.
    """
    path = os.fspath(path)
    _check_dtype(dtype)
    raw = _read_bytes(path)
    fmt, elements, offset = _ply_header(raw, path)
    order = '<' if fmt == 'binary_little_endian' else '>'
    body = _AsciiBody(raw, offset, path) if fmt == 'ascii' else None
    cursor = 0
    pos, polygons = None, []
    for name, count, properties in elements:
        if body is not None:
            columns, cursor = _ply_ascii_element(body, cursor, name, count,
                                                 properties)
        else:
            columns, offset = _ply_binary_element(raw, offset, path, order,
                                                  name, count, properties)
        kinds = {prop[0]: prop for prop in properties}
        if name == 'vertex':
            missing = [axis for axis in 'xyz' if axis not in columns]
            if missing:
                raise ValueError(f'{path}: vertex element lacks {missing}')
            lists = [axis for axis in 'xyz' if kinds[axis][1] == 'list']
            if lists:
                raise ValueError(f'{path}: vertex coordinates {lists} are '
                                 f'lists; they must be numbers')
            pos = np.stack([np.asarray(columns[a], dtype=np.float64)
                            for a in 'xyz'], axis=1).reshape(-1, 3)
        elif name == 'face':
            key = next((k for k in _FACE_LISTS if k in columns and
                        kinds[k][1] == 'list'), None)
            if key is None:
                raise ValueError(f'{path}: face element has no vertex list '
                                 f'(property list <count type> <int type> '
                                 f'vertex_indices)')
            if _PLY_TYPES[kinds[key][3]][0] == 'f':
                raise ValueError(f'{path}: face vertex indices have the '
                                 f'floating type {kinds[key][3]!r}; they '
                                 f'must be integers')
            polygons = columns[key]
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
    _check_dtype(dtype)
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
