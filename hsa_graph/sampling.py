r"""Pure-torch geometry helpers for point clouds: seeded mesh-surface sampling
and k-nearest-neighbour graphs.

PyG's own :obj:`knn_graph` / :obj:`fps` need pyg-lib or torch-cluster, which
are not always installable; these run on plain torch, on any device.
"""
from __future__ import annotations

import zlib
from typing import Optional, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import Data
from torch_geometric.transforms import BaseTransform

__all__ = ['sample_surface', 'normalize_unit_sphere', 'knn_graph',
           'stable_seed', 'SampleSurface']


def stable_seed(*parts: Union[int, str, bytes, Tensor]) -> int:
    r"""A seed derived deterministically from its arguments (CRC-32 of their
    bytes), stable across processes and Python versions, unlike
    :func:`hash`. Tensors contribute their raw bytes, so two meshes with the
    same vertices get the same seed whatever order files were listed in.

    Args:
        *parts (int, str, bytes or Tensor): what the seed should depend on.
    """
    crc = 0
    for part in parts:
        if isinstance(part, Tensor):
            data = part.detach().cpu().contiguous().numpy().tobytes()
        elif isinstance(part, bytes):
            data = part
        else:
            data = str(part).encode('utf-8')
        crc = zlib.crc32(data, crc)
    return crc


def _check_mesh(pos: Tensor, face: Tensor) -> Tensor:
    if pos.dim() != 2 or pos.size(1) != 3:
        raise ValueError(f"'pos' must have shape [N, 3], got "
                         f'{list(pos.shape)}')
    if pos.size(0) == 0:
        raise ValueError("The mesh has no vertices ('pos' is empty)")
    if not bool(torch.isfinite(pos).all()):
        raise ValueError("'pos' contains NaN or inf coordinates")
    if face.dim() != 2 or face.size(0) != 3:
        raise ValueError(f"'face' must have shape [3, F] (PyG convention, "
                         f'triangles only), got {list(face.shape)}')
    if face.size(1) == 0:
        raise ValueError('The mesh has no faces; a surface needs at least '
                         'one triangle')
    if face.is_floating_point():
        raise ValueError(f"'face' must hold integer vertex ids, got "
                         f'{face.dtype}')
    face = face.long()
    low, high = int(face.min()), int(face.max())
    if low < 0 or high >= pos.size(0):
        raise ValueError(f"'face' refers to vertex ids in [{low}, {high}] "
                         f'but the mesh has {pos.size(0)} vertices')
    return face


def sample_surface(pos: Tensor, face: Tensor, num_points: int, *,
                   seed: Optional[int] = None,
                   generator: Optional[torch.Generator] = None,
                   return_face: bool = False,
                   ) -> Union[Tensor, Tuple[Tensor, Tensor]]:
    r"""Samples points uniformly on the surface of a triangle mesh: a triangle
    is drawn with probability proportional to its area, then a point
    uniformly inside it (square-root barycentric trick).

    Unlike :class:`torch_geometric.transforms.SamplePoints`, the draw is
    reproducible: pass :obj:`seed` (or your own :obj:`generator`) and the same
    mesh always gives the same points.

    Args:
        pos (Tensor): vertex coordinates.
        face (Tensor): triangles as vertex ids (PyG's ``face`` layout).
        num_points (int): how many points to draw.
        seed (int, optional): seed of a private generator; ignored when
            :obj:`generator` is given. (default: :obj:`None`, torch's global
            generator)
        generator (torch.Generator, optional): generator to draw from.
        return_face (bool): also return the triangle each point lies on.
            (default: :obj:`False`)

    Returns:
        The sampled points, and with :obj:`return_face` the id of the
        triangle each point lies on.

    Raises:
        ValueError: for an empty mesh, non-finite coordinates, faces pointing
            to missing vertices, or a mesh whose total area is zero.

    Shapes:
        - **input:** pos :math:`(N, 3)`, face :math:`(3, F)`
        - **output:** points :math:`(P, 3)` [, face id :math:`(P,)`]
    """
    if num_points <= 0:
        raise ValueError(f'num_points must be positive, got {num_points}')
    face = _check_mesh(pos, face)
    if generator is None and seed is not None:
        generator = torch.Generator(device='cpu').manual_seed(int(seed))
    pos64 = pos.double()  # areas of tiny triangles underflow in float32
    a, b, c = pos64[face[0]], pos64[face[1]], pos64[face[2]]
    area = torch.linalg.cross(b - a, c - a).norm(dim=1)
    total = float(area.sum())
    if not total > 0:
        raise ValueError('The mesh has zero surface area (all triangles are '
                         'degenerate); nothing to sample')
    # Draw on the CPU with the (CPU) generator so results match across
    # devices, then move.
    chosen = torch.multinomial(area.cpu(), num_points, replacement=True,
                               generator=generator)
    u, v = torch.rand(2, num_points, 1, dtype=torch.float64,
                      generator=generator)
    chosen = chosen.to(pos.device)
    u, v = u.to(pos.device), v.to(pos.device)
    root_u = u.sqrt()
    points = ((1 - root_u) * a[chosen] + root_u * (1 - v) * b[chosen] +
              root_u * v * c[chosen]).to(pos.dtype)
    if return_face:
        return points, chosen
    return points


def normalize_unit_sphere(pos: Tensor) -> Tensor:
    r"""Centres a point set on its bounding-box centre and scales it into the
    unit ball (the farthest point lands on the sphere).

    Args:
        pos (Tensor): points.

    Shapes:
        - **input:** :math:`(N, D)`
        - **output:** :math:`(N, D)`
    """
    if pos.dim() != 2 or pos.size(0) == 0:
        raise ValueError(f"'pos' must be a non-empty [N, D] tensor, got "
                         f'{list(pos.shape)}')
    centre = (pos.amin(0) + pos.amax(0)) / 2
    out = pos - centre
    radius = out.norm(dim=1).max()
    if not bool(radius > 0):
        return out
    return out / radius


def knn_graph(pos: Tensor, k: int, batch: Optional[Tensor] = None,
              loop: bool = False, chunk_size: Optional[int] = None) -> Tensor:
    r"""The k-nearest-neighbour graph of a (batched) point set, in pure torch.

    Same output convention as :func:`torch_geometric.nn.knn_graph` with
    ``flow='source_to_target'``: row 0 holds the neighbours, row 1 the
    centres, so message passing aggregates the :obj:`k` neighbours into each
    point. Points of different graphs in :obj:`batch` are never connected.
    Distances are computed in row chunks so that memory stays bounded
    (about :obj:`chunk_size` x N floats at a time).

    Args:
        pos (Tensor): point coordinates.
        k (int): neighbours per point. Graphs with at most :obj:`k` points
            connect every point to all others.
        batch (Tensor, optional): graph id of every point, sorted.
        loop (bool): include each point as its own neighbour.
            (default: :obj:`False`)
        chunk_size (int, optional): rows per distance block.

    Shapes:
        - **input:** pos :math:`(N, D)`, batch :math:`(N,)`
        - **output:** edge_index :math:`(2, E)` with :math:`E \le N k`
    """
    if pos.dim() != 2 or pos.size(0) == 0:
        raise ValueError(f"'pos' must be a non-empty [N, D] tensor, got "
                         f'{list(pos.shape)}')
    if k <= 0:
        raise ValueError(f'k must be positive, got {k}')
    num_points = pos.size(0)
    if batch is None:
        batch = torch.zeros(num_points, dtype=torch.long, device=pos.device)
    elif batch.numel() != num_points:
        raise ValueError(f"'batch' has {batch.numel()} entries for "
                         f'{num_points} points')
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("'batch' must be sorted (as PyG batches are)")
    # One block of distances per graph (never across graphs), in row chunks.
    counts = torch.unique_consecutive(batch, return_counts=True)[1].tolist()
    centres, neighbours = [], []
    offset = 0
    for count in counts:
        rows_per_chunk = chunk_size or max(1, (1 << 24) // count)
        graph_pos = pos[offset:offset + count]
        take = min(k, count if loop else count - 1)
        for start in range(0, count, rows_per_chunk):
            if take <= 0:
                break
            rows = torch.arange(start, min(start + rows_per_chunk, count),
                                device=pos.device)
            dist = torch.cdist(graph_pos[rows], graph_pos)  # (R, n)
            if not loop:
                dist[torch.arange(rows.numel(), device=pos.device), rows] = \
                    float('inf')
            nearest = dist.topk(take, dim=1, largest=False).indices
            centres.append((rows + offset).unsqueeze(1).expand_as(nearest)
                           .reshape(-1))
            neighbours.append((nearest + offset).reshape(-1))
        offset += count
    if not centres:
        return torch.empty(2, 0, dtype=torch.long, device=pos.device)
    return torch.stack([torch.cat(neighbours), torch.cat(centres)], dim=0)


class SampleSurface(BaseTransform):
    r"""Replaces a mesh (``pos``, ``face``) by points sampled on its surface
    with :func:`sample_surface`, then (optionally) scales them into the unit
    ball. A seeded, order-independent version of
    :class:`torch_geometric.transforms.SamplePoints`: the seed of each mesh is
    derived from :obj:`seed` and the mesh's own vertices, so a dataset gives
    the same points however its files were listed.

    Args:
        num_points (int): points per mesh.
        seed (int): base seed. (default: :obj:`0`)
        normalize (bool): centre and scale into the unit ball.
            (default: :obj:`True`)
    """

    def __init__(self, num_points: int, seed: int = 0,
                 normalize: bool = True) -> None:
        if num_points <= 0:
            raise ValueError(f'num_points must be positive, got {num_points}')
        self.num_points = num_points
        self.seed = seed
        self.normalize = normalize

    def forward(self, data: Data) -> Data:
        if getattr(data, 'face', None) is None:
            raise ValueError("SampleSurface needs a mesh: 'face' is missing")
        points = sample_surface(data.pos, data.face, self.num_points,
                                seed=stable_seed(self.seed, data.pos))
        if self.normalize:
            points = normalize_unit_sphere(points)
        data.pos = points
        del data.face
        return data

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}({self.num_points}, '
                f'seed={self.seed})')
