r"""Point clouds to hierarchies: an adaptive octree (Morton order) or a
median-split kd-tree, in pure PyTorch.

Leaves are the points (leaf ``i`` is point ``i``); internal nodes are cells.
Both builders sort the points once per tree level with tensor operations, so
the Python loops run over levels (at most ~21 for the octree), never over
points.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import Tensor

from ..hierarchy import Hierarchy
from ._common import (NestedRuns, assemble, check_coordinates, check_features,
                      positive_int, relative_positions, split_wide_families)

__all__ = ['from_point_cloud', 'morton_code']

_METHODS = ('octree', 'kdtree')


def morton_code(grid: Tensor, bits: int) -> Tensor:
    r"""Interleaves the bits of non-negative integer coordinates into one
    ``int64`` Morton (Z-order) code per row.

    Args:
        grid (Tensor): ``[n, D]`` integer coordinates in ``[0, 2**bits)``.
        bits (int): bits per axis; ``bits * D`` must be at most 63.

    Shapes:
        - **input:** ``[n, D]``
        - **output:** ``[n]``, the most significant bits from the coarsest
          level, axis 0 first.
    """
    dims = grid.size(1)
    if bits * dims > 63:
        raise ValueError(f'{bits} bits x {dims} axes do not fit in 63 bits')
    grid = grid.long()
    code = torch.zeros(grid.size(0), dtype=torch.long)
    for bit in range(bits):
        for axis in range(dims):
            shift = bit * dims + (dims - 1 - axis)
            code |= ((grid[:, axis] >> bit) & 1) << shift
    return code


def octree_parent(grid: Tensor, bits: int, leaf_size: int) -> Tensor:
    r"""Parent vector of the adaptive ``2**D``-tree over integer coordinates:
    a cell is split while it holds more than :obj:`leaf_size` points, cells
    with one child collapse, and cells still too full at the finest level
    (points closer than one grid step) are cut into balanced groups in Morton
    order."""
    dims = grid.size(1)
    code = morton_code(grid, bits)
    sorted_code, order = torch.sort(code, stable=True)
    runs = NestedRuns(order)
    start = torch.zeros(code.numel(), dtype=torch.bool)
    start[0] = True
    count = runs.add_level(start)
    change = torch.zeros_like(start)
    for level in range(1, bits + 1):
        splittable = count > leaf_size
        if not bool(splittable.any()):
            break
        prefix = sorted_code >> (dims * (bits - level))
        change[1:] = prefix[1:] != prefix[:-1]
        start = start | (change & splittable)
        count = runs.add_level(start)
    parent = runs.parent()
    return split_wide_families(parent, code.numel(),
                               leaf_bound=max(leaf_size, 2**dims),
                               internal_bound=2**dims,
                               child_key=runs.order_key())


def kdtree_parent(pos: Tensor, leaf_size: int, branching: int) -> Tensor:
    r"""Parent vector of the kd-tree: every cell with more than
    :obj:`leaf_size` points is cut along its widest axis into
    :obj:`branching` parts of equal size (the median for ``branching=2``)."""
    num_points, dims = pos.shape
    # Splitting only ever reorders points inside the current runs, so the run
    # boundaries of every level stay valid in the final order: sort first,
    # build the tree from the recorded boundaries afterwards.
    order = torch.arange(num_points)
    points = pos
    start = torch.zeros(num_points, dtype=torch.bool)
    start[0] = True
    levels = [start]
    count = torch.full((num_points, ), num_points)
    change = torch.zeros_like(start)
    positions = torch.arange(num_points)
    while True:
        splittable = count > leaf_size
        if not bool(splittable.any()):
            break
        run_id = torch.cumsum(start.long(), 0) - 1
        run_start = start.nonzero().flatten()
        num_runs = run_start.numel()
        index = run_id[:, None].expand(-1, dims)
        low = points.new_full((num_runs, dims), float('inf')).scatter_reduce_(
            0, index, points, reduce='amin')
        high = points.new_full((num_runs, dims), -float('inf')).scatter_reduce_(
            0, index, points, reduce='amax')
        axis = (high - low).argmax(dim=1)
        value = points.gather(1, axis[run_id][:, None]).squeeze(1)
        first = run_start[run_id]
        perm = _sort_within_runs(value, run_id, first, run_start,
                                 count[run_start])
        order, points = order[perm], points[perm]
        piece = (positions - first) * branching // count
        change[1:] = piece[1:] != piece[:-1]
        start = start | (change & splittable)
        levels.append(start)
        run_id = torch.cumsum(start.long(), 0) - 1
        count = torch.bincount(run_id)[run_id]
    runs = NestedRuns(order)
    for start in levels:
        runs.add_level(start)
    return runs.parent()


def _sort_within_runs(value: Tensor, run_id: Tensor, first: Tensor,
                      run_start: Tensor, run_size: Tensor) -> Tensor:
    r"""Permutation that sorts :obj:`value` inside every run of positions.

    Runs of a kd-tree level have near-equal sizes, so the values are laid out
    as one padded row per run and sorted along rows: ``n log(n / runs)`` work
    instead of a global ``n log n`` sort on a composite key.
    """
    num_runs = run_start.numel()
    width = int(run_size.max())
    if num_runs * width > 2 * value.numel() + 1024:  # ragged: one global sort
        lowest, highest = value.min(), value.max()
        span = float(highest - lowest) or 1.0
        key = run_id.double() + (value - lowest).double() / span * (1 - 1e-9)
        return torch.sort(key, stable=True).indices
    rank = torch.arange(value.numel()) - first
    rows = value.new_full((num_runs, width), float('inf'))
    rows[run_id, rank] = value
    column = torch.sort(rows, dim=1, stable=True).indices
    valid = torch.arange(width)[None, :] < run_size[:, None]
    return (run_start[:, None] + column)[valid]


def from_point_cloud(pos: Tensor, x: Optional[Tensor] = None,
                     method: str = 'octree', leaf_size: int = 16,
                     branching: int = 2) -> Hierarchy:
    r"""Converts a point cloud into a :class:`~hsa_graph.Hierarchy` of
    spatial cells, in pure PyTorch.

    * ``method='octree'``: points are sorted by Morton code on a
      ``2**min(63 // D, 31)`` grid over their bounding cube (21 bits per axis in 3-D);
      a cell with more than :obj:`leaf_size` points splits into its ``2**D``
      sub-cells. Cells with a single child collapse into it.
    * ``method='kdtree'``: a cell with more than :obj:`leaf_size` points is cut
      along its widest axis into :obj:`branching` parts of equal size (median
      splits for ``branching=2``), so the tree is balanced whatever the
      density.

    Leaves are the points: leaf ``i`` is point ``i`` and ``source_id[i] = i``
    (``-1`` on cells). Every family has at most ``max(leaf_size, b)`` members
    with ``b = 2**D`` (octree) or :obj:`branching` (kd-tree); a family holding
    cells has at most ``b``. Coincident points are kept: the octree groups
    points closer than its grid step in Morton order, and the kd-tree splits
    ties by rank.

    Every node's ``pos`` is its position inside its parent's cell: the
    centroid of its points minus the centre of the parent's bounding box,
    divided by the box's largest half-extent, so it lies in ``[-1, 1]^D`` and
    siblings share one frame.

    Args:
        pos (Tensor): ``[n, D]`` point coordinates (``D >= 1``, finite).
        x (Tensor, optional): ``[n, F]`` point features; internal rows are
            zeros. (default: :obj:`None`)
        method (str): ``'octree'`` or ``'kdtree'``. (default: ``'octree'``)
        leaf_size (int): the most points a cell may hold without being split.
            (default: :obj:`16`)
        branching (int): parts per kd-tree split (ignored by the octree).
            (default: :obj:`2`)

    Returns:
        A validated :class:`~hsa_graph.Hierarchy` with ``edge_index``,
        ``pos`` (``[N, D]``, relative), ``centroid`` (``[N, D]``, absolute
        mean of the points below), ``source_id`` (``[N]``) and ``x`` when
        given.

    Raises:
        ValueError: for an empty cloud, NaN/inf coordinates, a feature matrix
            with the wrong number of rows, or a bad option.

    Shapes:
        - **input:** ``pos [n, D]``, ``x [n, F]``
        - **output:** a hierarchy with ``N >= n + 1`` nodes (``n`` leaves).

    Example::

        >>> h = from_point_cloud(torch.rand(1000, 3), leaf_size=8)
        >>> h.num_leaves
        1000
    """
    pos = check_coordinates(pos)
    x = check_features(x, pos.size(0))
    leaf_size = positive_int(leaf_size, 'leaf_size')
    branching = positive_int(branching, 'branching', minimum=2)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}")
    num_points, dims = pos.shape
    # Structure work in float64: float32 coordinates near 3e38 overflow
    # their own extents (a bounding box of inf would put every point in one
    # cell and normalise every position to 0).
    coords = pos.double()
    if method == 'octree':
        bits = min(63 // dims, 31)
        if bits < 1:
            raise ValueError(f'the octree supports at most 63 dimensions, got '
                             f'{dims}; use method="kdtree"')
        grid = quantize(coords, bits)
        parent = octree_parent(grid, bits, leaf_size)
    else:
        parent = kdtree_parent(coords, leaf_size, branching)
    h = assemble(parent, num_points, x=x)
    h.pos, h.centroid = relative_positions(h, pos, num_points)
    return h


def quantize(pos: Tensor, bits: int) -> Tensor:
    r"""Integer grid coordinates of :obj:`pos` in ``[0, 2**bits)`` over the
    bounding cube (one scale for every axis)."""
    pos = pos.double()
    low = pos.amin(dim=0)
    side = float((pos.amax(dim=0) - low).max())
    if not math.isfinite(side):
        raise ValueError('the point cloud is too large to quantise: its '
                         'extent overflows float64; rescale it')
    scale = (2**bits) / side if side > 0 else 0.0
    grid = ((pos - low) * scale).floor().long()
    return grid.clamp_(0, 2**bits - 1)
