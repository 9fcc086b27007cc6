r"""Building blocks shared by the converters.

Every converter numbers its nodes the same way: the ``n`` input elements are
the leaves ``0 .. n-1`` (so leaf ``i`` *is* input element ``i``), and the
internal nodes follow, the root last but not necessarily at ``N - 1``. The
pieces below are vectorised over elements: Python loops run over tree levels
only.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import torch
from torch import Tensor

from ..hierarchy import Hierarchy


def check_coordinates(pos: Any, name: str = 'pos',
                      dims: Optional[int] = None) -> Tensor:
    r"""Returns :obj:`pos` as a ``[n, D]`` floating CPU tensor, or raises a
    :class:`ValueError` for empty input, a wrong shape, or NaN/inf values.
    (Converters do structure work on the CPU; move the resulting hierarchy,
    or a batch of them, with ``.to(device)``.)"""
    try:
        pos = torch.as_tensor(pos).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"'{name}' must be a tensor or array of numbers, got "
                        f'{type(pos).__name__} ({error})') from None
    if pos.is_complex():
        raise TypeError(f"'{name}' must be real coordinates, got {pos.dtype}")
    if pos.dim() != 2:
        raise ValueError(f"'{name}' must have shape [num_points, dims], got "
                         f'{list(pos.shape)}')
    if pos.size(0) == 0:
        raise ValueError(f"'{name}' is empty: a hierarchy needs at least one "
                         f'element')
    if pos.size(1) == 0 or (dims is not None and pos.size(1) != dims):
        want = f'{dims}' if dims is not None else 'at least 1'
        raise ValueError(f"'{name}' must have {want} coordinate columns, got "
                         f'{pos.size(1)}')
    if not pos.is_floating_point():
        pos = pos.to(torch.get_default_dtype())
    finite = torch.isfinite(pos).all(dim=1)
    if not bool(finite.all()):
        bad = (~finite).nonzero().flatten()
        raise ValueError(f"'{name}' has NaN or inf coordinates in "
                         f'{bad.numel()} rows (first: row {int(bad[0])}); '
                         f'drop or repair them before converting')
    return pos


def check_features(x: Optional[Tensor], num_elements: int,
                   name: str = 'x') -> Optional[Tensor]:
    r"""Checks that :obj:`x` has one row per input element."""
    if x is None:
        return None
    try:
        x = torch.as_tensor(x).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"'{name}' must be a tensor or array, got "
                        f'{type(x).__name__} ({error})') from None
    if x.dim() == 0 or x.size(0) != num_elements:
        rows = 'a scalar' if x.dim() == 0 else f'{x.size(0)} rows'
        raise ValueError(f"'{name}' has {rows} but the input has "
                         f'{num_elements} elements; give one row each')
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"'{name}' contains NaN or inf")
    return x


def stack_node_attribute(graph: Any, nodes: list, name: str
                         ) -> Optional[Tensor]:
    r"""Stacks a networkx node attribute into one tensor (``None`` when no
    node has it), or raises a :class:`ValueError` naming the attribute and
    the node when it is set on some nodes only, is not numeric, or has
    different shapes on different nodes."""
    values = [graph.nodes[node].get(name) for node in nodes]
    present = sum(value is not None for value in values)
    if present == 0:
        return None
    if present < len(values):
        missing = nodes[[value is None for value in values].index(True)]
        raise ValueError(f"node attribute '{name}' is set on {present} of "
                         f'{len(values)} nodes (missing on node {missing!r}); '
                         f'set it on every node or on none')
    tensors = []
    for node, value in zip(nodes, values):
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):
            tensor = None
        if tensor is None or not (tensor.is_floating_point() or
                                  tensor.dtype in (torch.bool, torch.uint8,
                                                   torch.int8, torch.int16,
                                                   torch.int32, torch.int64)):
            raise ValueError(f"node attribute '{name}' on node {node!r} is "
                             f'not a real number or array: {value!r:.80}')
        if tensors and tensor.shape != tensors[0].shape:
            raise ValueError(
                f"node attribute '{name}' has shape {list(tensors[0].shape)} "
                f'on node {nodes[0]!r} but {list(tensor.shape)} on node '
                f'{node!r}; give every node the same shape')
        tensors.append(tensor)
    if len({t.dtype for t in tensors}) > 1:
        dtype = torch.get_default_dtype() if any(
            t.is_floating_point() for t in tensors) else torch.long
        tensors = [t.to(dtype) for t in tensors]
    return torch.stack(tensors)


class NestedRuns:
    r"""Turns a sequence of ever finer partitions of a sorted element list into
    a tree.

    The elements sit in a fixed order (``order[p]`` is the element at sorted
    position ``p``). Level ``L`` partitions the positions into contiguous
    *runs*, given by a boolean ``start`` vector that marks the first position
    of every run; level ``L + 1`` must refine level ``L``. A run becomes a
    tree node only where it is a real split: it has at least two elements and
    fewer than the run containing it one level up (so chains of one-child
    cells collapse and one-element runs hang their element directly on the
    nearest kept ancestor). Level 0 must be a single run: the root.
    """

    def __init__(self, order: Tensor):
        self.order = order
        self.num_elements = order.numel()
        self.next_id = self.num_elements
        self.cell_parents = []        # per level: parents of the new cells
        self.cell_first = []          # per level: first position of each
        self.deepest = None           # [n] deepest kept node per position
        self.count_pos = None         # [n] size of each position's run
        self.start = None

    def add_level(self, start: Tensor) -> Tensor:
        r"""Adds a level; returns ``[n]`` the size of each position's run."""
        run_id = torch.cumsum(start.long(), 0) - 1
        num_runs = int(run_id[-1]) + 1
        count = torch.bincount(run_id, minlength=num_runs)
        count_pos = count[run_id]
        run_start = start.nonzero().flatten()
        if self.deepest is None:
            if num_runs != 1:
                raise RuntimeError('level 0 must be a single run')
            self.deepest = torch.full((self.num_elements, ), self.next_id,
                                      dtype=torch.long)
            self.cell_parents.append(torch.tensor([-1]))
            self.cell_first.append(torch.tensor([0]))
            self.next_id += 1
        else:
            keep_run = ((count < self.count_pos[run_start]) & (count >= 2))
            kept = keep_run.nonzero().flatten()
            node_of_run = torch.full((num_runs, ), -1, dtype=torch.long)
            node_of_run[kept] = self.next_id + torch.arange(kept.numel())
            self.cell_parents.append(self.deepest[run_start[kept]])
            self.cell_first.append(run_start[kept])
            self.next_id += kept.numel()
            keep_pos = keep_run[run_id]
            self.deepest = torch.where(keep_pos, node_of_run[run_id],
                                       self.deepest)
        self.count_pos = count_pos
        self.start = start
        return count_pos

    def order_key(self) -> Tensor:
        r"""``[N]`` sorted position of each element, and of the first element
        of each kept run (a key that keeps neighbours near)."""
        position = torch.empty(self.num_elements, dtype=torch.long)
        position[self.order] = torch.arange(self.num_elements)
        return torch.cat([position] + self.cell_first)

    def parent(self) -> Tensor:
        r"""``[N]`` parent vector: elements first, then the kept runs."""
        leaf_parent = torch.empty(self.num_elements, dtype=torch.long)
        leaf_parent[self.order] = self.deepest
        return torch.cat([leaf_parent] + self.cell_parents)


def split_wide_families(parent: Tensor, num_leaves: int, leaf_bound: int,
                        internal_bound: int, child_key: Tensor) -> Tensor:
    r"""Splits every family wider than its bound into a balanced subtree.

    A family whose members are all leaves may have up to :obj:`leaf_bound`
    members; any other family up to :obj:`internal_bound`. A family of ``m >
    b`` members is cut into ``ceil(m / b)`` contiguous groups of near-equal
    size in :obj:`child_key` order (which the caller chooses so that
    neighbours are near: a Morton code, a sequence index, a graph ordering),
    repeated until every family fits. Groups of one member are not wrapped.

    Returns:
        The new parent vector; new nodes are appended after the old ones.
    """
    if leaf_bound < 2 or internal_bound < 2:
        raise ValueError('family bounds must be at least 2')
    child_key = child_key.double()
    while True:
        num_nodes = parent.numel()
        has_parent = parent >= 0
        child_count = torch.bincount(parent[has_parent], minlength=num_nodes)
        is_internal_child = has_parent.clone()
        is_internal_child[:num_leaves] = False
        internal_children = torch.bincount(parent[is_internal_child],
                                           minlength=num_nodes)
        bound = torch.where(internal_children == 0,
                            torch.tensor(leaf_bound), torch.tensor(internal_bound))
        too_wide = child_count > bound
        if not bool(too_wide.any()):
            return parent
        members = (has_parent & too_wide[parent.clamp(min=0)]).nonzero().flatten()
        by_key = members[torch.sort(child_key[members], stable=True).indices]
        members = by_key[torch.sort(parent[by_key], stable=True).indices]
        family = parent[members]
        family_start = torch.ones_like(family, dtype=torch.bool)
        family_start[1:] = family[1:] != family[:-1]
        first = torch.cummax(torch.where(family_start, torch.arange(
            family.numel()), torch.zeros_like(family)), 0).values
        rank = torch.arange(family.numel()) - first
        size = child_count[family]
        num_groups = (size + bound[family] - 1) // bound[family]
        group = rank * num_groups // size
        new_group = family_start.clone()
        new_group[1:] |= group[1:] != group[:-1]
        group_id = torch.cumsum(new_group.long(), 0) - 1
        group_size = torch.bincount(group_id)
        wrapped = group_size >= 2
        node_of_group = torch.full_like(group_size, -1)
        node_of_group[wrapped] = num_nodes + torch.arange(int(wrapped.sum()))
        group_first = new_group.nonzero().flatten()
        new_parents = family[group_first[wrapped]]
        member_group = group_id
        moved = wrapped[member_group]
        parent = parent.clone()
        parent[members[moved]] = node_of_group[member_group[moved]]
        parent = torch.cat([parent, new_parents])
        group_key = torch.full((new_parents.numel(), ), math.inf,
                               dtype=torch.float64)
        wrapped_rank = torch.cumsum(wrapped.long(), 0) - 1
        group_key.scatter_reduce_(0, wrapped_rank[member_group[moved]],
                                  child_key[members[moved]], reduce='amin')
        child_key = torch.cat([child_key, group_key])


def collapse_only_children(parent: Tensor, num_leaves: int) -> Tensor:
    r"""Removes internal nodes that have exactly one child, hanging the child
    on the nearest remaining ancestor. A root whose only child is a leaf is
    kept (the one-element tree). Returns the compacted parent vector; leaves
    keep ids ``0 .. num_leaves - 1``."""
    num_nodes = parent.numel()
    has_parent = parent >= 0
    child_count = torch.bincount(parent[has_parent], minlength=num_nodes)
    remove = child_count == 1
    remove[:num_leaves] = False
    if num_leaves == 1:
        # Keep the lowest ancestor of the only leaf: the tree root -> leaf.
        keep_first = int(parent[0])
        remove[keep_first] = False
    if not bool(remove.any()):
        return parent
    jump = parent.clone()
    while True:
        hop = (jump >= 0) & remove[jump.clamp(min=0)]
        if not bool(hop.any()):
            break
        # pointer doubling: hop over whole runs of removed ancestors
        jump = torch.where(hop, jump[jump.clamp(min=0)], jump)
    keep = ~remove
    new_id = torch.full((num_nodes, ), -1, dtype=torch.long)
    new_id[keep] = torch.arange(int(keep.sum()))
    new_parent = torch.where(jump >= 0, new_id[jump.clamp(min=0)], jump)
    return new_parent[keep]


def nodes_by_depth(depth: Tensor) -> list:
    r"""``[nodes at depth 0, nodes at depth 1, ...]`` (ids ascending within a
    depth), from one stable sort of the ``[N]`` depth vector."""
    num_levels = int(depth.max()) + 1 if depth.numel() else 0
    by_depth = torch.sort(depth, stable=True).indices
    sizes = torch.bincount(depth, minlength=num_levels).tolist()
    return list(torch.split(by_depth, sizes))


def bottom_up_boxes(h: Hierarchy, coords: Tensor, num_leaves: int):
    r"""Centroid (mean of the leaf coordinates below) and bounding box of
    every node, one scatter per level.

    Returns:
        ``(centroid, low, high)``, each ``[N, D]``.
    """
    layout = h.layout
    num_nodes, dims = h.num_nodes, coords.size(1)
    dtype = coords.dtype
    total = torch.zeros(num_nodes, dims, dtype=dtype)
    count = torch.zeros(num_nodes, dtype=dtype)
    low = torch.full((num_nodes, dims), math.inf, dtype=dtype)
    high = torch.full((num_nodes, dims), -math.inf, dtype=dtype)
    total[:num_leaves] = coords
    count[:num_leaves] = 1
    low[:num_leaves] = coords
    high[:num_leaves] = coords
    parent = layout.parent
    for nodes in nodes_by_depth(layout.depth)[:0:-1]:
        up = parent[nodes]
        total.index_add_(0, up, total[nodes])
        count.index_add_(0, up, count[nodes])
        low.scatter_reduce_(0, up[:, None].expand(-1, dims), low[nodes],
                            reduce='amin')
        high.scatter_reduce_(0, up[:, None].expand(-1, dims), high[nodes],
                             reduce='amax')
    return total / count[:, None], low, high


def relative_positions(h: Hierarchy, coords: Tensor, num_leaves: int):
    r"""Each node's position inside its parent's cell.

    A node's cell is the bounding box of the leaves below it. A node ``A``
    with parent ``P`` gets ``(centroid(A) - centre(P)) / half_size(P)``, where
    ``half_size`` is the largest half-extent of ``P``'s box (one scale for all
    axes keeps shapes undistorted), so every coordinate lies in ``[-1, 1]`` and
    siblings share one frame. Roots get zeros.

    The arithmetic runs in float64 whatever the input dtype (float32
    coordinates near ``3e38`` would overflow their own sums and extents), and
    the results come back in the input's dtype.

    Returns:
        ``(pos, centroid)``, both ``[N, D]``.
    """
    dtype = coords.dtype
    centroid, low, high = bottom_up_boxes(h, coords.double(), num_leaves)
    centre = low / 2 + high / 2
    half = (high / 2 - low / 2).amax(dim=1)
    if not (bool(torch.isfinite(centroid).all()) and
            bool(torch.isfinite(half).all())):
        raise ValueError('the coordinates are too large to normalise: their '
                         'sums or extents overflow float64; rescale them')
    half = torch.where(half > 0, half, torch.ones_like(half))
    parent = h.parent
    has_parent = parent >= 0
    up = parent.clamp(min=0)
    pos = (centroid - centre[up]) / half[up, None]
    pos = torch.where(has_parent[:, None], pos, torch.zeros_like(pos))
    return pos.clamp(-1, 1).to(dtype), centroid.to(dtype)


def assemble(parent: Tensor, num_leaves: int, x: Optional[Tensor] = None,
             **attrs: Any) -> Hierarchy:
    r"""Builds and validates the :class:`Hierarchy`: ``x`` gets zero rows for
    internal nodes, ``source_id`` is ``i`` for leaf ``i`` and ``-1`` for
    internal nodes."""
    num_nodes = parent.numel()
    if x is not None:
        pad = x.new_zeros((num_nodes - num_leaves, ) + tuple(x.shape[1:]))
        x = torch.cat([x, pad], dim=0)
    source_id = torch.full((num_nodes, ), -1, dtype=torch.long)
    source_id[:num_leaves] = torch.arange(num_leaves)
    return Hierarchy.from_parent(parent, x=x, source_id=source_id,
                                 validate=True, **attrs)


def positive_int(value: Any, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"'{name}' must be an integer >= {minimum}, got "
                         f'{value!r}')
    return value

