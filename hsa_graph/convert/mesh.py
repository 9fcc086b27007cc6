r"""Surface meshes to hierarchies that follow the surface, not just space.

The leaves are the vertices (or the faces); the tree comes from clustering the
mesh's own adjacency graph (vertices joined by edges, or faces joined by a
shared edge), so a cluster is a connected surface patch and the two sides of a
thin wall, which are close in space but far along the surface, do not share a
small cluster.
"""
from __future__ import annotations

from typing import Optional

import scipy.sparse as sp
import torch
from torch import Tensor

from ..hierarchy import Hierarchy
from ._common import (assemble, check_coordinates, check_features,
                      positive_int, relative_positions)
from .graph import _ENGINES, _METHODS, cluster_parent

__all__ = ['from_mesh', 'mesh_edges', 'face_adjacency']


def _check_faces(face: Tensor, num_vertices: int) -> Tensor:
    face = torch.as_tensor(face).detach().cpu()
    if face.dim() != 2 or face.size(0) not in (3, 4):
        raise ValueError(f"'face' must have shape [3, F] (PyG convention: one "
                         f'column per face; [4, F] for quads), got '
                         f'{list(face.shape)}; transpose an [F, 3] array '
                         f'with .t()')
    if face.is_floating_point() or face.dtype == torch.bool:
        raise ValueError(f"'face' must hold integer vertex ids, got "
                         f'{face.dtype}')
    face = face.long()
    if face.numel():
        bad = (face < 0) | (face >= num_vertices)
        if bool(bad.any()):
            column = int(bad.any(dim=0).nonzero()[0])
            raise ValueError(
                f'face {column} = {face[:, column].tolist()} refers to a '
                f'missing vertex: the mesh has {num_vertices} vertices '
                f'(valid ids 0..{num_vertices - 1}); {int(bad.any(dim=0).sum())} '
                f'faces are affected')
    return face


def mesh_edges(face: Tensor) -> Tensor:
    r"""``[2, E]`` undirected vertex edges of a mesh: each face's boundary,
    every edge once (smaller id first)."""
    src = face.flatten()
    dst = face.roll(-1, dims=0).flatten()
    edge = torch.stack([torch.minimum(src, dst), torch.maximum(src, dst)])
    edge = edge[:, edge[0] != edge[1]]
    return torch.unique(edge, dim=1)


def face_adjacency(face: Tensor) -> Tensor:
    r"""``[2, E]`` pairs of faces that share an edge. Around an edge with more
    than two faces (non-manifold), the faces are chained in id order so that
    they stay connected."""
    corners, num_faces = face.shape
    src = face.flatten()
    dst = face.roll(-1, dims=0).flatten()
    owner = torch.arange(num_faces).repeat(corners)
    keep = src != dst
    low = torch.minimum(src, dst)[keep]
    high = torch.maximum(src, dst)[keep]
    owner = owner[keep]
    num_vertices = int(face.max()) + 1 if face.numel() else 0
    edge_key = low * num_vertices + high
    order = torch.argsort(edge_key * num_faces + owner)
    edge_key, owner = edge_key[order], owner[order]
    same = (edge_key[1:] == edge_key[:-1]) & (owner[1:] != owner[:-1])
    return torch.stack([owner[:-1][same], owner[1:][same]])


def from_mesh(pos: Tensor, face: Tensor, x: Optional[Tensor] = None,
              leaves: str = 'vertex', branching: int = 8,
              leaf_size: Optional[int] = None, method: str = 'louvain',
              seed: int = 0, progress: bool = False,
              engine: str = 'auto') -> Hierarchy:
    r"""Converts a surface mesh into a :class:`~hsa_graph.Hierarchy` whose
    clusters are connected surface patches.

    The mesh's adjacency graph is clustered with
    :func:`~hsa_graph.hierarchy_from_graph`'s machinery (Louvain by default):
    clusters follow the surface, so the two sides of a thin wall land in
    different small clusters even though they are close in space (an octree
    of the vertices would mix them).

    * ``leaves='vertex'``: leaf ``i`` is vertex ``i``; the graph joins
      vertices that share a face edge. ``face`` is kept on the hierarchy
      (vertex ids are node ids, so PyG batching shifts it correctly).
    * ``leaves='face'``: leaf ``f`` is face ``f`` (column ``f`` of
      :obj:`face`); the graph joins faces that share an edge and leaf
      coordinates are face centroids.

    Vertices used by no face are kept as isolated leaves (grouped under the
    root in index order), so the leaf count always equals the input count.
    Degenerate faces (a repeated vertex) contribute their remaining edges.

    Every node's ``pos`` is its position inside its parent's bounding box, in
    ``[-1, 1]^3`` (see :func:`~hsa_graph.from_point_cloud`); ``centroid``
    holds absolute positions and ``source_id`` maps leaves back to vertex or
    face ids (``-1`` for clusters).

    Args:
        pos (Tensor): ``[V, 3]`` vertex coordinates (finite).
        face (Tensor): ``[3, F]`` vertex ids per face (PyG convention; ``[4,
            F]`` for quads). An ``[F, 3]`` array raises: transpose it.
        x (Tensor, optional): ``[V, C]`` vertex (or ``[F, C]`` face)
            features. (default: :obj:`None`)
        leaves (str): ``'vertex'`` or ``'face'``. (default: ``'vertex'``)
        branching (int): most children of a node holding clusters.
            (default: :obj:`8`)
        leaf_size (int, optional): most leaves in a family of leaves
            (default: :obj:`branching`).
        method (str): ``'louvain'`` or ``'spectral'`` (see
            :func:`~hsa_graph.hierarchy_from_graph`). (default: ``'louvain'``)
        seed (int): random seed. (default: :obj:`0`)
        progress (bool): show a progress bar. (default: :obj:`False`)
        engine (str): Louvain implementation, ``'auto'``, ``'igraph'`` or
            ``'networkx'`` (see :func:`~hsa_graph.hierarchy_from_graph`).
            (default: ``'auto'``)

    Raises:
        ValueError: for an empty mesh, NaN/inf coordinates, a face that
            refers to a missing vertex, a wrongly shaped face tensor or a bad
            option.

    Shapes:
        - **input:** ``pos [V, 3]``, ``face [3, F]``
        - **output:** a hierarchy with ``V`` (or ``F``) leaves.

    Example::

        >>> from hsa_graph import read_mesh
        >>> mesh = read_mesh('bunny.off')  # doctest: +SKIP
        >>> h = from_mesh(mesh.pos, mesh.face)  # doctest: +SKIP
    """
    pos = check_coordinates(pos)
    face = _check_faces(face, pos.size(0))
    branching = positive_int(branching, 'branching', minimum=2)
    leaf_size = branching if leaf_size is None else positive_int(
        leaf_size, 'leaf_size', minimum=2)
    if method not in _METHODS:
        raise ValueError(f'method must be one of {_METHODS}, got {method!r}')
    if leaves == 'vertex':
        coords = pos
        edge = mesh_edges(face)
    elif leaves == 'face':
        if face.size(1) == 0:
            raise ValueError("the mesh has no faces, so leaves='face' gives "
                             'an empty hierarchy')
        coords = pos[face].mean(dim=0)
        edge = face_adjacency(face)
    else:
        raise ValueError(f"leaves must be 'vertex' or 'face', got {leaves!r}")
    num_leaves = coords.size(0)
    x = check_features(x, num_leaves)
    values = torch.ones(2 * edge.size(1), dtype=torch.float64).numpy()
    rows = torch.cat([edge[0], edge[1]]).numpy()
    cols = torch.cat([edge[1], edge[0]]).numpy()
    adjacency = sp.coo_matrix((values, (rows, cols)),
                              shape=(num_leaves, num_leaves)).tocsr()
    adjacency.sum_duplicates()
    adjacency.data[:] = 1.0
    if engine not in _ENGINES:
        raise ValueError(f'engine must be one of {_ENGINES}, got {engine!r}')
    parent = cluster_parent(adjacency, branching, leaf_size, method, seed=seed,
                            progress=progress, engine=engine)
    extra = {'face': face} if leaves == 'vertex' else {}
    h = assemble(parent, num_leaves, x=x, **extra)
    h.pos, h.centroid = relative_positions(h, coords, num_leaves)
    return h
